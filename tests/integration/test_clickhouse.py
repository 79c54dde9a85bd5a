"""The schema and the roll-up writer on the real ClickHouse (Debian's 18.16 here)."""

from datetime import UTC, date, datetime

import pytest

from aggregator.write import ClickHouseWriter, RollupRow
from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from tests.support.servers import daily_stats

pytestmark = pytest.mark.clickhouse

DAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC).replace(tzinfo=None)


HOUR = datetime(2026, 11, 25, 9, tzinfo=UTC)


def row(counter: int, version: int, label: str = "signup", hour: datetime | None = None) -> RollupRow:
    return RollupRow(DAY, hour, label, "forms", "btn1", counter, version, NOW)


def test_migrations_are_recorded_and_idempotent(clickhouse: ClickHouseSettings) -> None:
    with clickhouse_client(clickhouse) as client:
        assert migrations.migrate(client) == []
        recorded = client.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.name) for m in migrations.available()]


def test_writes_are_idempotent_and_never_go_back(clickhouse: ClickHouseSettings) -> None:
    writer = ClickHouseWriter(clickhouse)
    writer.write([row(3, 10)])
    writer.write([row(5, 20)])
    writer.write([row(5, 20)])  # the same row again: a retry after a timeout
    writer.write([row(3, 10)])  # an older row arriving late: a stale rewrite
    assert daily_stats(clickhouse) == {("signup", "forms", "btn1"): 5}
    # The raw table holds every write; only the view is to be read.
    with clickhouse_client(clickhouse) as client:
        raw = client.execute("SELECT count() FROM daily_counts")
    assert raw[0][0] >= 2
    writer.close()


def test_view_is_right_after_a_merge_too(clickhouse: ClickHouseSettings) -> None:
    writer = ClickHouseWriter(clickhouse)
    writer.write([row(1, 1), row(7, 70, "home")])
    writer.write([row(2, 2)])
    writer.close()
    with clickhouse_client(clickhouse) as client:
        client.execute("OPTIMIZE TABLE daily_counts FINAL")
    assert daily_stats(clickhouse) == {("signup", "forms", "btn1"): 2, ("home", "forms", "btn1"): 7}


def test_hourly_rows_go_to_their_own_view(clickhouse: ClickHouseSettings) -> None:
    writer = ClickHouseWriter(clickhouse)
    writer.write([row(4, 40), row(4, 40, hour=HOUR), row(1, 1, hour=HOUR)])
    writer.close()
    with clickhouse_client(clickhouse) as client:
        hourly = client.execute("SELECT hour, label, counter FROM hourly_stats")
    assert hourly == [(HOUR, "signup", 4)]
    assert daily_stats(clickhouse) == {("signup", "forms", "btn1"): 4}
