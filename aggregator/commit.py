"""The commit policy of the events topic, in one place: confirm the changelog, then ack, never commit past the counts.

1. A batch is counted into the table; its changelog records (the counters and
   the partition's ``through``) go to Kafka.
2. ``confirm_before_ack``: nothing of the batch is acknowledged until Kafka
   holds every one of those records. Faust's own flush before a commit gives
   up after 0.1 s without progress and cannot see records still being handed
   to the producer, so it cannot be relied on: offsets committed without
   their changelog lose events when the worker dies.
3. ``Commits.acknowledge``: each partition is acknowledged up to its
   ``through``, the last offset its table holds, and that becomes the
   furthest a commit of the partition may go in this generation.
4. ``Commits.cap``: every commit Faust makes of an events partition is cut
   down to that. Faust's stream acknowledges events it skips during a
   rebalance (flow stopped, or fetched in an older generation), and a commit
   after that would cover events nobody counted.

A new generation (a rebalance) forgets every partition's position: each
starts again from its committed offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sized
from typing import Protocol

from faust.types import TP


class Changelog(Protocol):
    async def confirmed(self) -> None:
        """Return once Kafka holds every changelog record sent so far."""


class Acknowledger(Protocol):
    def acknowledge_through(self, tp: TP, offset: int, records: int) -> None: ...


async def confirm_before_ack(changelog: Changelog) -> None:
    """Wait for ``changelog``, even when the waiting task is cancelled meanwhile.

    A shutdown cancels the consumer's task; the counts are in the table by
    then, and a successor must find them in the changelog before anything
    after them is committed, so a cancellation must not cut the wait short.
    """
    waiting = asyncio.ensure_future(changelog.confirmed())
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        await waiting
        raise


class Commits:
    """How far each events partition may be committed: what its table counted and Kafka confirmed."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.confirmed_next: dict[int, int] = {}
        """Per events partition, this generation: the offset after the last event counted and confirmed."""

    async def acknowledge(
        self,
        changelog: Changelog,
        consumer: Acknowledger,
        counted: Mapping[TP, int],
        records: Mapping[TP, Sized],
    ) -> None:
        """Once ``changelog`` is confirmed, acknowledge each partition of ``counted`` up to its last counted offset."""
        await confirm_before_ack(changelog)
        for tp, through in counted.items():
            self.confirmed_next[tp.partition] = through + 1
            consumer.acknowledge_through(tp, through, len(records.get(tp, ())))

    def next_offset(self, partition: int) -> int | None:
        """The offset after the last one counted and confirmed in ``partition`` this generation, if any."""
        return self.confirmed_next.get(partition)

    def cap(self, tp: TP, offset: int | None) -> int | None:
        """The offset to commit for ``tp``, acknowledged up to ``offset``."""
        return commit_cap(offset, tp, self.topic, self.confirmed_next)

    def new_generation(self) -> None:
        self.confirmed_next.clear()


def commit_cap(offset: int | None, tp: TP, counted_topic: str, confirmed_next: Mapping[int, int]) -> int | None:
    """The offset to commit for ``tp``: as acknowledged, but not past the counts Kafka confirmed.

    Other topics than ``counted_topic`` (the changelog) commit as Faust says.
    """
    if offset is None or tp.topic != counted_topic:
        return offset
    confirmed = confirmed_next.get(tp.partition)
    if confirmed is None:
        return None  # nothing counted here in this generation
    return min(offset, confirmed)
