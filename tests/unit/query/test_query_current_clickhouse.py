"""The read API's SQL on current ClickHouse (chdb embeds it), parameters filled as the driver fills them.

The same queries run on Debian's 18.16 in tests/integration/query/test_query_api.py.
"""

from datetime import UTC, date, datetime
from typing import Any

import pytest
from chdb import session as chs  # type: ignore[import-untyped]
from clickhouse_driver.util.escape import escape_params

from aggregator.write import INSERT_DAILY, INSERT_HOURLY
from query import counts
from query.params import CountsRequest

DAY = date(2026, 11, 25)


@pytest.fixture(scope="module")
def db(current_clickhouse: chs.Session) -> chs.Session:
    """The schema on current ClickHouse, holding a few counters of two days."""
    s = current_clickhouse
    daily = INSERT_DAILY.split("(", 1)[1].split(")", 1)[0]
    hourly = INSERT_HOURLY.split("(", 1)[1].split(")", 1)[0]
    s.query(
        f"INSERT INTO daily_counts ({daily}) VALUES "
        "('2026-11-24','signup','forms','btn1',4,7,'2026-11-24 23:00:00'),"
        "('2026-11-25','signup','forms','btn1',5,20,'2026-11-25 10:00:05'),"
        "('2026-11-25','signup','forms','btn1',3,10,'2026-11-25 10:00:01'),"  # older version: not counted
        "('2026-11-25','SignIn','','',2,4,'2026-11-25 09:00:00'),"
        "('2026-11-25','home','nav','menu',9,4,'2026-11-25 09:30:00')"
    )
    s.query(
        f"INSERT INTO hourly_counts ({hourly}) VALUES "
        "('2026-11-25','2026-11-25 09:00:00','signup','forms','btn1',1,11,'2026-11-25 09:10:00'),"
        "('2026-11-25','2026-11-25 10:00:00','signup','forms','btn1',4,20,'2026-11-25 10:00:05'),"
        "('2026-11-25','2026-11-25 10:00:00','signup','forms','btn1',2,12,'2026-11-25 10:00:01')"
    )
    return s


def run(db: chs.Session, query: tuple[str, dict[str, Any]]) -> list[list[str]]:
    sql, params = query
    filled = sql % escape_params(params, None)  # what clickhouse-driver sends
    result = str(db.query(filled, "TSV")).strip()
    return [line.split("\t") for line in result.splitlines()]


def request(**fields: Any) -> CountsRequest:
    return CountsRequest(start=date(2026, 11, 24), end=DAY, **fields)


def test_grouped_by_day_and_label_takes_the_highest_version(db: chs.Session) -> None:
    rows = run(db, counts.grouped_sql(request(group_by=("day", "label"))))
    assert [r[:3] for r in rows] == [
        ["2026-11-24", "signup", "4"],
        ["2026-11-25", "SignIn", "2"],
        ["2026-11-25", "home", "9"],
        ["2026-11-25", "signup", "5"],
    ]
    assert rows[3][3] == "2026-11-25 10:00:05"  # freshness: the latest written_at of the counter


def test_filters_search_and_order_by_counter(db: chs.Session) -> None:
    wanted = request(group_by=("label",), search="SIGN", order="counter", categories=("forms", ""))
    assert [r[:2] for r in run(db, counts.grouped_sql(wanted))] == [["signup", "9"], ["SignIn", "2"]]
    wanted = request(group_by=("dom_id",), labels=("home", "signup"), dom_ids=("menu",))
    assert [r[:2] for r in run(db, counts.grouped_sql(wanted))] == [["menu", "9"]]


def test_hours_from_the_hourly_view(db: chs.Session) -> None:
    rows = run(db, counts.grouped_sql(request(group_by=("hour", "label"))))
    hours = [datetime.fromtimestamp(int(r[0]), UTC) for r in rows]
    assert hours == [datetime(2026, 11, 25, 9, tzinfo=UTC), datetime(2026, 11, 25, 10, tzinfo=UTC)]
    assert [r[2] for r in rows] == ["1", "4"]


def test_total_and_limit(db: chs.Session) -> None:
    assert run(db, counts.total_sql(request()))[0][0::2] == ["20", "4"]
    assert run(db, counts.total_sql(request(labels=("nothing",))))[0][0::2] == ["0", "0"]
    assert len(run(db, counts.grouped_sql(request(group_by=("label",), limit=1)))) == 2  # limit + 1
