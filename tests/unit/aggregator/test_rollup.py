"""Roll-ups: absolute rows, idempotent writes, nothing lost while the store is away."""

import asyncio
from collections.abc import Sequence
from datetime import UTC, date

from aggregator.count import Tally
from aggregator.rollup import Rollup
from aggregator.write import RollupRow
from tests.support.writers import MemoryWriter

KEY = "d2026-11-25:signup:forms:btn1"
WHERE = (date(2026, 11, 25), "signup", "forms", "btn1")


class FlakyWriter(MemoryWriter):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def write(self, rows: Sequence[RollupRow]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is away")
        super().write(rows)


def test_flush_writes_absolute_counts() -> None:
    writer = MemoryWriter()
    rollup = Rollup(writer, UTC)
    rollup.mark({KEY: Tally(3, 10, 0)})
    assert asyncio.run(rollup.flush()) == 1
    assert writer.daily() == {WHERE: 3}
    assert rollup.pending == 0


def test_older_rows_written_late_do_not_win() -> None:
    writer = MemoryWriter()
    rollup = Rollup(writer, UTC)
    rollup.mark({KEY: Tally(5, 20, 0)})
    asyncio.run(rollup.flush())
    rollup.mark({KEY: Tally(3, 10, 0)})  # a rewrite from a stale copy
    asyncio.run(rollup.flush())
    assert writer.daily() == {WHERE: 5}


def test_failed_write_is_retried_with_newer_values() -> None:
    writer = FlakyWriter(failures=1)
    rollup = Rollup(writer, UTC)
    rollup.mark({KEY: Tally(3, 10, 0)})
    assert asyncio.run(rollup.flush()) == 0
    assert rollup.pending == 1
    rollup.mark({KEY: Tally(4, 11, 0)})
    assert asyncio.run(rollup.flush(force=True)) == 1
    assert writer.daily() == {WHERE: 4}


def test_keep_flushing_writes_a_change_at_once_then_waits_out_the_interval() -> None:
    writer = MemoryWriter()
    rollup = Rollup(writer, UTC)

    async def scenario() -> tuple[dict[object, int], int, dict[object, int]]:
        flushing = asyncio.create_task(rollup.keep_flushing(interval_s=3600))
        rollup.mark({KEY: Tally(3, 10, 0)})
        for _ in range(500):  # the first change is written without waiting for an interval
            if not rollup.pending:
                break
            await asyncio.sleep(0.01)
        first = writer.daily()
        rollup.mark({KEY: Tally(4, 11, 0)})
        for _ in range(20):
            await asyncio.sleep(0)
        waiting = rollup.pending  # the next is held until an hour after the first write started
        flushing.cancel()
        await rollup.flush(force=True)
        return first, waiting, writer.daily()

    first, waiting, last = asyncio.run(scenario())
    assert first == {WHERE: 3}
    assert waiting == 1
    assert last == {WHERE: 4}
