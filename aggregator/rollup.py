"""The counters that changed since the last flush, as absolute rows.

``mark`` is called after every counted batch; ``keep_flushing`` writes what
changed as soon as something did, at most once every ``flush_interval_s``
from the start of the previous write (not on a timer that sleeps the
interval after each write: that leaves counts waiting up to one interval,
plus the write, plus however long a batch being counted holds the event
loop, for the next tick; docs/performance.md); ``flush`` once more at
shutdown. The pending set is keyed by counter, so it is bounded by the
number of live counters however long ClickHouse is away, and a failed write
leaves it in place to be written again (newer values replacing older ones).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo

from aggregator.count import Tally
from aggregator.metrics import WorkerMetrics
from aggregator.write import RollupRow, RollupWriter
from schema.keys import CounterKey

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
"""The longest wait between two tries of a failed write: one connection attempt per worker every 5 s costs a
ClickHouse that is down nothing, and its counts show at most 5 s after it is back."""


class Rollup:
    def __init__(
        self,
        writer: RollupWriter,
        tz: tzinfo,
        metrics: WorkerMetrics | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self._writer = writer
        self._tz = tz
        self._metrics = metrics or WorkerMetrics()
        self._pending: dict[str, Tally] = {}
        self._lock = asyncio.Lock()
        self._max_backoff_s = max_backoff_s
        self._failures = 0
        self._next_try = 0.0
        self._last_started = float("-inf")
        self._marked = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def failing(self) -> bool:
        """Whether the last write failed (ClickHouse away): readiness shows it."""
        return self._failures > 0

    def mark(self, changed: Mapping[str, Tally]) -> None:
        self._pending.update(changed)
        self._metrics.pending_rows.set(len(self._pending))
        if self._pending:
            self._marked.set()

    def next_flush_at(self, interval_s: float) -> float:
        """When (monotonic) the next write may start: ``interval_s`` after the last one started, or after a back-off."""
        return max(self._last_started + interval_s, self._next_try)

    async def keep_flushing(self, interval_s: float) -> None:
        """Write each change as soon as it is marked, at most once every ``interval_s``; runs until cancelled."""
        while True:
            await self._marked.wait()
            wait = self.next_flush_at(interval_s) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._marked.clear()
            await self.flush()
            if self._pending:  # a failed write, or counts marked meanwhile
                self._marked.set()

    async def flush(self, *, force: bool = False) -> int:
        """Write every pending counter; return how many. Backs off after failures."""
        async with self._lock:
            if not self._pending or (not force and time.monotonic() < self._next_try):
                return 0
            batch, self._pending = self._pending, {}
            self._last_started = time.monotonic()
            now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
            rows = [self._row(key, tally, now) for key, tally in batch.items()]
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._writer.write, rows)
            except Exception as exc:
                # Put them back, unless a newer value came in meanwhile.
                self._pending = {**batch, **self._pending}
                self._failures += 1
                delay = min(self._max_backoff_s, 0.5 * 2**self._failures)
                self._next_try = time.monotonic() + delay
                self._metrics.write_failures.inc()
                log.warning("roll-up write of %d rows failed (%s); retrying in %.1fs", len(rows), exc, delay)
                return 0
            finally:
                self._metrics.pending_rows.set(len(self._pending))
            self._metrics.flushed(len(rows), time.perf_counter() - started)
            if self._failures:
                log.info("roll-up writes succeed again after %d failures", self._failures)
            self._failures = 0
            return len(rows)

    def _row(self, key: str, tally: Tally, now: datetime) -> RollupRow:
        day, hour, label, category, dom_id = CounterKey.parse(key, self._tz)
        return RollupRow(day, hour, label, category, dom_id, tally.counter, tally.offset, now)
