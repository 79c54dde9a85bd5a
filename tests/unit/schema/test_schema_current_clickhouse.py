"""The DDL and the read queries run on current ClickHouse too (chdb embeds it).

The same statements run on Debian's 18.16 in tests/integration.
"""

from datetime import date

import chdb  # type: ignore[import-untyped]
from chdb import session as chs

from aggregator.write import INSERT_DAILY, INSERT_HOURLY
from query.heatmap import STATS_BY_DOM_IDS


def test_chdb_is_a_current_clickhouse() -> None:
    major = int(chdb.engine_version.split(".")[0])
    assert major >= 24


def test_view_shows_highest_version_before_any_merge(current_clickhouse: chs.Session) -> None:
    columns = INSERT_DAILY.split("(", 1)[1].split(")", 1)[0]
    current_clickhouse.query(
        f"INSERT INTO daily_counts ({columns}) VALUES "
        "('2026-11-25','signup','forms','btn1',5,20,now()),"
        "('2026-11-25','signup','forms','btn1',3,10,now()),"
        "('2026-11-25','signup','','btn1',2,4,now())"
    )
    # clickhouse-driver fills %(name)s client-side; do the same here with literals.
    query = STATS_BY_DOM_IDS.replace("%(day)s", f"'{date(2026, 11, 25)}'").replace("%(dom_ids)s", "('btn1')")
    assert str(current_clickhouse.query(query, "CSV")).strip() == '"btn1",7,"signup"'


def test_hourly_view_too(current_clickhouse: chs.Session) -> None:
    columns = INSERT_HOURLY.split("(", 1)[1].split(")", 1)[0]
    current_clickhouse.query(
        f"INSERT INTO hourly_counts ({columns}) VALUES "
        "('2026-11-25','2026-11-25 09:00:00','signup','forms','btn1',4,20,now()),"
        "('2026-11-25','2026-11-25 09:00:00','signup','forms','btn1',2,10,now())"
    )
    result = current_clickhouse.query(
        "SELECT toString(hour), label, counter FROM hourly_stats WHERE day = '2026-11-25'", "CSV"
    )
    assert str(result).strip() == '"2026-11-25 09:00:00","signup",4'
