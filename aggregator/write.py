"""Rollup rows into ClickHouse, through one narrow interface (an in-memory one for tests: tests/support/writers.py).

Rows carry absolute counts and a version, so ``write`` may be called any
number of times with the same or older rows: ``daily_stats`` and
``hourly_stats`` always show the row with the highest version.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol

from schema.settings import ClickHouseSettings, clickhouse_client


class RollupRow(NamedTuple):
    day: date
    hour: datetime | None
    """UTC start of the hour for an hourly row; None for a daily row."""
    label: str
    category: str
    dom_id: str
    counter: int
    version: int
    written_at: datetime


class RollupWriter(Protocol):
    def write(self, rows: Sequence[RollupRow]) -> None:
        """Store ``rows``; raise if they are not all stored (they will be written again)."""


INSERT_DAILY = "INSERT INTO daily_counts (day, label, category, dom_id, counter, version, written_at) VALUES"
INSERT_HOURLY = "INSERT INTO hourly_counts (day, hour, label, category, dom_id, counter, version, written_at) VALUES"


class ClickHouseWriter:
    """One INSERT per table per flush. Blocking: call it from a thread."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self._settings = settings
        self._client: Any = None

    def write(self, rows: Sequence[RollupRow]) -> None:
        daily = [
            (r.day, r.label, r.category, r.dom_id, r.counter, r.version, r.written_at) for r in rows if r.hour is None
        ]
        hourly = [r for r in rows if r.hour is not None]
        if self._client is None:
            self._client = clickhouse_client(self._settings)
        try:
            if daily:
                self._client.execute(INSERT_DAILY, daily)
            if hourly:
                self._client.execute(INSERT_HOURLY, hourly)
        except Exception:
            self._client.disconnect()
            self._client = None
            raise

    def close(self) -> None:
        """Disconnect from ClickHouse; a later ``write`` connects again."""
        if self._client is not None:
            self._client.disconnect()
            self._client = None
