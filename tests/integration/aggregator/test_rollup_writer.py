"""One suite for every RollupWriter: ClickHouse's (on the real server) and the in-memory one the unit tests use.

What a reader sees after any sequence of writes: per counter, the row of the
highest version, daily and hourly apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest

from aggregator.write import ClickHouseWriter, RollupRow, RollupWriter
from schema.settings import ClickHouseSettings, clickhouse_client
from tests.support.writers import MemoryWriter

DAY = date(2026, 11, 25)
HOUR = datetime(2026, 11, 25, 9, tzinfo=UTC)
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC).replace(tzinfo=None)

Daily = dict[tuple[date, str, str, str], int]
Hourly = dict[tuple[datetime, str, str, str], int]


@dataclass
class Store:
    writer: RollupWriter
    daily: Callable[[], Daily]
    """What readers see per (day, label, category, dom_id)."""
    hourly: Callable[[], Hourly]
    """What readers see per (hour, label, category, dom_id)."""


def memory_store() -> Store:
    writer = MemoryWriter()
    return Store(writer, writer.daily, writer.hourly)


def clickhouse_store(settings: ClickHouseSettings) -> Iterator[Store]:
    def daily() -> Daily:
        with clickhouse_client(settings) as client:
            rows = client.execute("SELECT day, label, category, dom_id, counter FROM daily_stats")
        return {(day, label, category, dom_id): counter for day, label, category, dom_id, counter in rows}

    def hourly() -> Hourly:
        with clickhouse_client(settings) as client:
            rows = client.execute("SELECT hour, label, category, dom_id, counter FROM hourly_stats")
        return {
            (hour.replace(tzinfo=UTC), label, category, dom_id): counter
            for hour, label, category, dom_id, counter in rows
        }

    writer = ClickHouseWriter(settings)
    yield Store(writer, daily, hourly)
    writer.close()


@pytest.fixture(params=["memory", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield memory_store()
    else:
        yield from clickhouse_store(request.getfixturevalue("clickhouse"))


def row(counter: int, version: int, label: str = "signup", hour: datetime | None = None) -> RollupRow:
    return RollupRow(DAY, hour, label, "forms", "btn1", counter, version, NOW)


def test_writes_are_idempotent_and_never_go_back(store: Store) -> None:
    store.writer.write([row(3, 10)])
    store.writer.write([row(5, 20)])
    store.writer.write([row(5, 20)])  # the same row again: a retry after a timeout
    store.writer.write([row(3, 10)])  # an older row arriving late: a stale rewrite
    assert store.daily() == {(DAY, "signup", "forms", "btn1"): 5}


def test_each_counter_keeps_its_own_highest_version(store: Store) -> None:
    store.writer.write([row(1, 1), row(7, 70, "home")])
    store.writer.write([row(2, 2)])
    assert store.daily() == {(DAY, "signup", "forms", "btn1"): 2, (DAY, "home", "forms", "btn1"): 7}


def test_hourly_rows_are_read_apart_from_daily_ones(store: Store) -> None:
    store.writer.write([row(4, 40), row(4, 40, hour=HOUR), row(1, 1, hour=HOUR)])
    assert store.hourly() == {(HOUR, "signup", "forms", "btn1"): 4}
    assert store.daily() == {(DAY, "signup", "forms", "btn1"): 4}


def test_nothing_written_reads_as_nothing(store: Store) -> None:
    store.writer.write([])
    assert store.daily() == {} and store.hourly() == {}
