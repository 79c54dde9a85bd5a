"""Kafka messages into positioned LabelEvents; undecodable ones are dropped, counted and logged."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol, TypeVar

from schema.event import LabelEvent, UndecodableEvent, decode

log = logging.getLogger(__name__)


class Positioned(NamedTuple):
    """An event and where it sits in the topic: what exactly-once counting keys on."""

    partition: int
    offset: int
    event: LabelEvent


class Message(NamedTuple):
    partition: int
    offset: int
    value: bytes


class Fetched(Protocol):
    """Where a message sits and what it holds: a ``Message``, or a Kafka client's record as it is."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


M = TypeVar("M", bound=Fetched)


def decode_messages(messages: Iterable[M], dropped: list[M] | None = None) -> Iterator[Positioned]:
    """Decode each message; put the undecodable ones (a record without a value too) in ``dropped`` (if given)."""
    for message in messages:
        try:
            yield Positioned(message.partition, message.offset, decode(message.value or b""))
        except UndecodableEvent as exc:
            log.warning("dropped undecodable event at %d/%d: %s", message.partition, message.offset, exc)
            if dropped is not None:
                dropped.append(message)
