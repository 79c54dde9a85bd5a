"""Rollup rows into ClickHouse. One narrow interface, two implementations.

Rows carry absolute counts and a version, so ``write`` may be called any
number of times with the same or older rows: ``daily_stats`` always shows
the row with the highest version.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol

from schema.settings import ClickHouseSettings, clickhouse_client


class RollupRow(NamedTuple):
    day: date
    label: str
    category: str
    dom_id: str
    counter: int
    version: int
    written_at: datetime


class RollupWriter(Protocol):
    def write(self, rows: Sequence[RollupRow]) -> None:
        """Store ``rows``; raise if they are not all stored (they will be written again)."""


INSERT = "INSERT INTO daily_counts (day, label, category, dom_id, counter, version, written_at) VALUES"


class ClickHouseWriter:
    """Writes with one INSERT per flush. Blocking: call it from a thread."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self._settings = settings
        self._client: Any = None

    def write(self, rows: Sequence[RollupRow]) -> None:
        if not rows:
            return
        if self._client is None:
            self._client = clickhouse_client(self._settings)
        try:
            self._client.execute(INSERT, list(rows))
        except Exception:
            self._client.disconnect()
            self._client = None
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()


class MemoryWriter:
    """Keeps what ClickHouse would show: the highest version per key."""

    def __init__(self) -> None:
        self.rows: dict[tuple[date, str, str, str], RollupRow] = {}
        self.writes = 0

    def write(self, rows: Sequence[RollupRow]) -> None:
        self.writes += 1
        for row in rows:
            key = (row.day, row.label, row.category, row.dom_id)
            held = self.rows.get(key)
            if held is None or row.version >= held.version:
                self.rows[key] = row

    def counts(self) -> dict[tuple[date, str, str, str], int]:
        return {key: row.counter for key, row in self.rows.items()}
