"""The counters that changed since the last flush, as absolute daily rows.

``mark`` is called after every counted batch; ``flush`` on a timer and at
shutdown. The pending set is keyed by counter, so it is bounded by the
number of live counters however long ClickHouse is away, and a failed write
leaves it in place to be written again (newer values replacing older ones).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from aggregator.count import CounterKey, Tally
from aggregator.write import RollupRow, RollupWriter

log = logging.getLogger(__name__)


class Rollup:
    def __init__(self, writer: RollupWriter, max_backoff_s: float = 30.0) -> None:
        self._writer = writer
        self._pending: dict[str, Tally] = {}
        self._lock = asyncio.Lock()
        self._max_backoff_s = max_backoff_s
        self._failures = 0
        self._next_try = 0.0
        self.last_written_at: datetime | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def mark(self, changed: Mapping[str, Tally]) -> None:
        self._pending.update(changed)

    async def flush(self, *, force: bool = False) -> int:
        """Write every pending counter; return how many. Backs off after failures."""
        async with self._lock:
            if not self._pending or (not force and time.monotonic() < self._next_try):
                return 0
            batch, self._pending = self._pending, {}
            now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
            rows = [_row(key, tally, now) for key, tally in batch.items()]
            try:
                await asyncio.to_thread(self._writer.write, rows)
            except Exception as exc:
                # Put them back, unless a newer value came in meanwhile.
                self._pending = {**batch, **self._pending}
                self._failures += 1
                delay = min(self._max_backoff_s, 0.5 * 2**self._failures)
                self._next_try = time.monotonic() + delay
                log.warning("rollup write of %d rows failed (%s); retrying in %.1fs", len(rows), exc, delay)
                return 0
            self._failures = 0
            self.last_written_at = now
            return len(rows)


def _row(key: str, tally: Tally, now: datetime) -> RollupRow:
    day, label, category, dom_id = CounterKey.parse(key)
    return RollupRow(day, label, category, dom_id, tally.counter, tally.offset, now)
