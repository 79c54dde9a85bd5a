"""The schema on the real ClickHouse (Debian's 18.16 here): migrations, and views that are right after merges.

The writer's own rules (idempotent, never going back) are tests/integration/aggregator/test_rollup_writer.py's.
"""

from datetime import UTC, date, datetime

import pytest

from aggregator.write import ClickHouseWriter, RollupRow
from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from tests.support.servers import daily_stats

pytestmark = pytest.mark.clickhouse

DAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC).replace(tzinfo=None)


def row(counter: int, version: int, label: str = "signup") -> RollupRow:
    return RollupRow(DAY, None, label, "forms", "btn1", counter, version, NOW)


def test_migrations_are_recorded_and_idempotent(clickhouse: ClickHouseSettings) -> None:
    with clickhouse_client(clickhouse) as client:
        assert migrations.migrate(client) == []
        recorded = client.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.name) for m in migrations.available()]


def test_view_is_right_after_a_merge_too(clickhouse: ClickHouseSettings) -> None:
    writer = ClickHouseWriter(clickhouse)
    writer.write([row(1, 1), row(7, 70, "home")])
    writer.write([row(2, 2)])
    writer.close()
    with clickhouse_client(clickhouse) as client:
        client.execute("OPTIMIZE TABLE daily_counts FINAL")
    assert daily_stats(clickhouse) == {("signup", "forms", "btn1"): 2, ("home", "forms", "btn1"): 7}
