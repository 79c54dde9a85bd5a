"""Kafka messages into positioned records of LabelEvents; undecodable ones are dropped, counted and logged.

A record is either version of the wire format (schema.event.decode_record):
a v1 record is one event without an idempotency key, a v2 record the events
of one request that fall in this partition, with the request's key if it had
one. Every event of a record sits at the record's offset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol, TypeVar

from schema.event import LabelEvent, UndecodableEvent, decode_record

log = logging.getLogger(__name__)


class Positioned(NamedTuple):
    """An event and where its record sits in the topic."""

    partition: int
    offset: int
    event: LabelEvent


class PositionedRecord(NamedTuple):
    """A record's events and idempotency key, and where it sits in the topic: what exactly-once counting keys on."""

    partition: int
    offset: int
    key: str | None
    events: tuple[LabelEvent, ...]
    time_ms: int = -1
    """The Kafka record's timestamp, else its latest event's time: what moves its partition's dedupe clock."""


class Message(NamedTuple):
    partition: int
    offset: int
    value: bytes
    timestamp: int = -1
    """The Kafka record's timestamp (epoch ms), -1 if not known."""


class Fetched(Protocol):
    """Where a message sits and what it holds: a ``Message``, or a Kafka client's record as it is."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


M = TypeVar("M", bound=Fetched)


def decode_messages(messages: Iterable[M], dropped: list[M] | None = None) -> Iterator[PositionedRecord]:
    """Decode each message; put the undecodable ones (a record without a value too) in ``dropped`` (if given)."""
    for message in messages:
        try:
            key, events = decode_record(message.value or b"")
        except UndecodableEvent as exc:
            log.warning("dropped undecodable record at %d/%d: %s", message.partition, message.offset, exc)
            if dropped is not None:
                dropped.append(message)
        else:
            stamped = message.timestamp
            if stamped is None or stamped < 0:
                stamped = max(event.ts_ms for event in events)
            yield PositionedRecord(message.partition, message.offset, key, events, stamped)


def events_of(records: Iterable[PositionedRecord]) -> int:
    """How many events ``records`` hold."""
    return sum(len(record.events) for record in records)
