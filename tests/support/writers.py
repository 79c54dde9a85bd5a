"""A RollupWriter in memory, for tests.

tests/integration/aggregator/test_rollup_writer.py runs one suite on it and on ClickHouse.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from aggregator.write import RollupRow


class MemoryWriter:
    """Keeps what ClickHouse's views would show: the highest version per key."""

    def __init__(self) -> None:
        self.rows: dict[tuple[date, datetime | None, str, str, str], RollupRow] = {}
        self.writes = 0

    def write(self, rows: Sequence[RollupRow]) -> None:
        self.writes += 1
        for row in rows:
            key = (row.day, row.hour, row.label, row.category, row.dom_id)
            held = self.rows.get(key)
            if held is None or row.version >= held.version:
                self.rows[key] = row

    def daily(self) -> dict[tuple[date, str, str, str], int]:
        return {(r.day, r.label, r.category, r.dom_id): r.counter for r in self.rows.values() if r.hour is None}

    def hourly(self) -> dict[tuple[datetime, str, str, str], int]:
        return {(r.hour, r.label, r.category, r.dom_id): r.counter for r in self.rows.values() if r.hour is not None}
