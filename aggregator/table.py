"""The count table: a Faust table whose changelog records are confirmed by Kafka, and the CountTable on it.

Faust's stores (RocksDB picks its per-partition database) and its changelog
(the record's partition) both follow "the current event", so a partition's
counters are touched while one of that partition's own events is current
(``acting_for``, with an event made from one of its records: ``stand_in_for``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.events import Event
from faust.types import TP, EventT, TableT

from aggregator.count import Tally, as_tally
from aggregator.dedupe import Seen, as_seen
from aggregator.faust_internals import HookedApp, current_event
from schema.keys import is_counter, seen_key, seen_prefix, through_key

log = logging.getLogger(__name__)

CHANGELOG_WAIT_LOG_S = 10.0
EXIT_CHANGELOG_REFUSED = 75
"""Exit status of a worker whose changelog record Kafka refused (EX_TEMPFAIL): restart it."""


class ConfirmedTable(faust.Table[str, Any]):
    """A Faust table that keeps its changelog records' futures until Kafka confirms them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        future = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(future)
        return future

    async def confirmed(self) -> None:
        """Return once Kafka holds every changelog record sent so far (acks from all in-sync replicas).

        Waits as long as Kafka is away, saying so every few seconds. If Kafka
        refuses a record, the counts in memory are ahead of what a successor
        could restore, and nothing may be acknowledged after them. The
        process then ends at once with ``os._exit`` -- as a ``kill -9`` would,
        which recovery is built for -- rather than stopping gracefully: a
        graceful stop flushes and commits offsets, and those offsets would
        cover the refused counts. Its exit status (``EXIT_CHANGELOG_REFUSED``)
        asks the supervisor for a restart, which resumes from what Kafka holds.
        """
        pending, self._unconfirmed = self._unconfirmed, []
        waited = 0.0
        while pending:
            done, still = await asyncio.wait(pending, timeout=CHANGELOG_WAIT_LOG_S)
            for future in done:
                if future.exception() is not None:
                    log.critical(
                        "Kafka refused a changelog record of table %s (%r): ending the worker now so that no "
                        "offset past it is committed; a restart resumes from what Kafka holds",
                        self.name,
                        future.exception(),
                    )
                    os._exit(EXIT_CHANGELOG_REFUSED)
            pending = list(still)
            if pending:
                waited += CHANGELOG_WAIT_LOG_S
                log.warning("waited %.0f s for Kafka to confirm %d changelog records", waited, len(pending))


class FaustCountTable:
    """A CountTable on a Faust table (memory or RocksDB store, with a changelog topic)."""

    def __init__(self, table: TableT[str, Any]) -> None:
        self._table = table

    def get(self, key: str) -> Tally | None:
        return as_tally(self._table.get(key))

    def set(self, key: str, tally: Tally) -> None:
        self._table[key] = list(tally)

    def delete(self, key: str) -> None:
        del self._table[key]

    def items(self) -> list[tuple[str, Tally]]:
        return [
            (key, tally) for key, value in list(self._table.items()) if is_counter(key) and (tally := as_tally(value))
        ]

    def through(self, partition: int) -> int | None:
        """The last offset of events ``partition`` counted into this table (``aggregator.gaps``)."""
        return self.position(partition)[0]

    def position(self, partition: int) -> tuple[int | None, int]:
        """The partition's ``through`` and its dedupe clock there (-1 if not known), written together."""
        value = self._table.get(through_key(partition))
        if value is None:
            return None, -1
        if isinstance(value, int):  # written before the dedupe clock was
            return value, -1
        offset, clock = value
        return int(offset), int(clock)

    def set_through(self, partition: int, offset: int, clock: int = -1) -> None:
        """Record it, and the dedupe clock, after the counters: the changelog keeps their order within a partition."""
        self._table[through_key(partition)] = [offset, clock]

    def get_seen(self, partition: int, key: str) -> Seen | None:
        return as_seen(self._table.get(seen_key(partition, key)))

    def set_seen(self, partition: int, key: str, seen: Seen) -> None:
        self._table[seen_key(partition, key)] = list(seen)

    def delete_seen(self, partition: int, key: str) -> None:
        held = seen_key(partition, key)
        if held in self._table:
            del self._table[held]

    def seen_items(self, partition: int) -> list[tuple[str, Seen]]:
        prefix = seen_prefix(partition)
        return [
            (key[len(prefix) :], seen)
            for key, value in list(self._table.items())
            if key.startswith(prefix) and (seen := as_seen(value)) is not None
        ]


@contextmanager
def acting_for(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` Faust's current event while a partition's counters are touched.

    Counting a batch touches counters of several partitions, so each
    partition's counters are touched while one of that partition's own events
    is current: the store and the changelog partition follow it.
    """
    with current_event(event):
        yield


def stand_in_for(app: HookedApp, tp: TP, record: Any) -> EventT[Any]:
    """A Faust event for one of a partition's records (aiokafka's), to act for it (``acting_for``)."""
    return Event(app, None, None, None, app.hooked_consumer.message_of(tp, record))
