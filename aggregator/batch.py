"""Counting one batch off the consumer, partition by partition: complete -> decode -> dedupe -> count -> rollup.

The consumer (aggregator.consume) hands over each events partition's records
in offset order. For each partition:

1. complete (aggregator.gaps)    holes in what was delivered are read again from Kafka
2. decode   (aggregator.decode)  bytes -> positioned records of LabelEvents; junk dropped, counted, logged
3. dedupe   (aggregator.dedupe)  records at or below ``through`` passed over; repeats of a keyed
                                 request within the window dropped
4. count    (aggregator.count)   daily and hourly counters, one table update per changed counter,
                                 exactly once; events for closed days refused as late
5. rollup   (aggregator.rollup)  changed counters remembered, to be written as absolute rows

then the idempotency keys the batch counted are written after its counters,
and the partition's ``through`` (the last offset its table counted) with its
dedupe clock after them. Counting is all or nothing for the batch: from the first
counter touched to the last ``through`` there is no await, so no rebalance
can come in between. Confirming the changelog and acknowledging the batch is
the commit policy's (aggregator.commit), once this returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from faust.types import TP, EventT

from aggregator.consume import CountingApp
from aggregator.count import BatchResult, CountTable, Windows, count_batch, expired, first_open_day
from aggregator.decode import Fetched, PositionedRecord, decode_messages
from aggregator.dedupe import Decided, Dedupe, events_in
from aggregator.gaps import GapReader, complete
from aggregator.metrics import Drop, WorkerMetrics
from aggregator.rollup import Rollup
from aggregator.settings import WorkerSettings
from aggregator.table import FaustCountTable, acting_for, stand_in_for

log = logging.getLogger(__name__)

EXPIRY_SWEEP_S = 600.0
"""How often, at most, each partition's counters of closed days are deleted from the table."""


def count_partition(
    counts: CountTable,
    dedupe: Dedupe,
    partition: int,
    records: Iterable[PositionedRecord],
    before: int,
    clock: int,
    windows: Windows,
    open_from: date,
) -> tuple[Decided, BatchResult]:
    """Dedupe and count one partition's records after ``before``; the keys counted are written after the counters.

    The caller then records the partition's ``through`` with ``Decided.clock`` (``FaustCountTable.set_through``).
    """
    decided = dedupe.decide(partition, records, before, clock)
    result = count_batch(counts, decided.kept, windows, open_from)
    dedupe.hold(partition, decided)  # after the counters: see aggregator.dedupe
    return decided, result


class Completed(NamedTuple):
    stand_in: EventT[Any]
    """One of the partition's events, Faust's current event while its counters are touched (``acting_for``)."""
    messages: Sequence[Fetched]
    through: int
    """The last offset the partition's table holds after the batch."""
    before: int
    """The last offset it held before: every record up to it was applied already."""
    clock: int
    """The partition's dedupe clock at ``before`` (aggregator.dedupe)."""


class BatchCounter:
    """The app's ``BatchHandler``: counts each batch the consumer hands over into the table."""

    def __init__(
        self,
        app: CountingApp,
        counts: FaustCountTable,
        dedupe: Dedupe,
        gaps: GapReader,
        rollup: Rollup,
        metrics: WorkerMetrics,
        settings: WorkerSettings,
    ) -> None:
        self.app = app
        self.counts = counts
        self.dedupe = dedupe
        self.gaps = gaps
        self.rollup = rollup
        self.metrics = metrics
        self.window_days = settings.window_days
        self.tz = settings.day_tz
        self.windows = Windows(settings.day_tz)
        self._swept_at: dict[int, float] = {}

    def first_open_day(self) -> date:
        return first_open_day(datetime.now(self.tz), self.window_days)

    async def __call__(self, gathered: Mapping[TP, Sequence[Any]], still_current: Callable[[], bool]) -> dict[TP, int]:
        """Count a batch; return each partition's ``through`` (its changelog records sent, not yet confirmed)."""
        completed = {
            tp: await self.complete(tp, stand_in_for(self.app, tp, records[-1]), records)
            for tp, records in gathered.items()
        }
        if not still_current():  # a rebalance came while reading holes: the partitions' next owners count it
            log.info("a rebalance came while a batch was completed: left to the partitions' next owners")
            return {}
        # No await from here to the last set_through: counting is all or nothing for the batch.
        for tp, done in completed.items():
            with acting_for(done.stand_in):
                clock = self.count(tp.partition, done)
                self.counts.set_through(tp.partition, done.through, clock)
        return {tp: done.through for tp, done in completed.items()}

    async def complete(self, tp: TP, stand_in: EventT[Any], records: Sequence[Fetched]) -> Completed:
        """The partition's records to count (holes read again from Kafka) and its ``through`` after them."""
        with acting_for(stand_in):
            through, clock = self.counts.position(tp.partition)
        if through is None:
            committed = self.app.hooked_consumer.committed_offset(tp)  # read at the assignment
            through = await self.gaps.start_of(tp.partition, committed) - 1
        messages, missed = await complete(self.gaps, tp.partition, through, records)
        self.metrics.events_reread.inc(missed)
        last = max(records[-1].offset, messages[-1].offset if messages else -1)
        return Completed(stand_in, messages, max(through, last), through, clock)

    def count(self, partition: int, done: Completed) -> int:
        """Decode, dedupe, count and mark for the rollup one partition's messages; return its dedupe clock after.

        Now and then, expire its closed days.
        """
        metrics = self.metrics
        dropped: list[Fetched] = []
        records = decode_messages(done.messages, dropped)
        decided, result = count_partition(
            self.counts, self.dedupe, partition, records, done.before, done.clock, self.windows, self.first_open_day()
        )
        self.rollup.mark(result.changed)
        metrics.events_counted.inc(result.counted)
        metrics.events_skipped.inc(result.skipped + events_in(decided.already))
        metrics.events_dropped.labels(Drop.UNDECODABLE.value).inc(len(dropped))
        for reason, repeats in ((Drop.DUPLICATE, decided.duplicates), (Drop.KEY_REUSED, decided.reused)):
            if repeats:
                metrics.repeats_dropped.labels(reason.value).inc(len(repeats))
                metrics.events_dropped.labels(reason.value).inc(events_in(repeats))
        if decided.reused:
            reused = decided.reused[0]
            log.warning(
                "dropped %d records in partition %d whose idempotency key was counted for other counters "
                "(a key reused by a client), first at offset %d with key %r",
                len(decided.reused),
                partition,
                reused.offset,
                reused.key,
            )
        metrics.repeats_past_window.inc(decided.past_window)
        if result.late:
            metrics.events_dropped.labels(Drop.LATE.value).inc(len(result.late))
            first = result.late[0]
            log.warning(
                "refused %d late events in partition %d (windows close after %d days; replay recovers them), "
                "first at offset %d for %s",
                len(result.late),
                partition,
                self.window_days,
                first.offset,
                first.event,
            )
        if time.monotonic() - self._swept_at.setdefault(partition, time.monotonic()) > EXPIRY_SWEEP_S:
            self.expire(partition)
        return decided.clock

    def expire(self, partition: int) -> None:
        """Delete the partition's counters of closed days from the table."""
        self._swept_at[partition] = time.monotonic()
        doomed = [
            key
            for key, tally in expired(self.counts.items(), self.first_open_day(), self.tz)
            if tally.partition == partition
        ]
        for key in doomed:
            self.counts.delete(key)
        if doomed:
            log.info("expired %d counters of closed days from partition %d", len(doomed), partition)
