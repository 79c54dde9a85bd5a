"""The dashboards' queries on current ClickHouse (chdb), and how they are expanded.

The same queries run on Debian's 18.16 with counts from the real pipeline in
tests/integration/deploy/test_dashboards.py; here the same events are written as
roll-ups, with stale versions and zeroed counters beside them that the views
must hide, and every panel must give the same answers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from chdb import session as chs  # type: ignore[import-untyped]

from stack import dashboards
from stack.dashboards import ALL, TimeRange, UnsupportedQuery, expand
from tests.support.dashboard_cases import (
    EXPECTED,
    FRESHNESS,
    VARIABLE_CASES,
    Case,
    fixed_range,
    known_events,
    normalized,
)

NOW = datetime.now(UTC)
EVENTS = known_events(NOW)
CLICKHOUSE_QUERIES = [q for q in dashboards.all_queries() if q.datasource == dashboards.CLICKHOUSE_PLUGIN]
PROVISIONING = dashboards.DASHBOARDS.parent / "provisioning"


def literal(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "\\'") + "'"


@pytest.fixture(scope="module")
def db(current_clickhouse: chs.Session) -> chs.Session:
    """The schema on current ClickHouse, holding EVENTS as roll-ups."""
    s = current_clickhouse
    written = NOW.replace(tzinfo=None, microsecond=0)
    daily = Counter((e.day, e.label, e.category, e.dom_id) for e in EVENTS)
    hourly = Counter((e.day, e.hour.replace(tzinfo=None), e.label, e.category, e.dom_id) for e in EVENTS)
    rows = []
    for (day, *key), n in daily.items():
        rows.append((day, *key, n, 100, written))
        rows.append((day, *key, n + 7, 50, written))  # an older write of the same counter: hidden by the view
    rows.append((NOW.date(), "ghost", "", "hp-ghost", 0, 100, written))  # zeroed by a replay: hidden too
    s.query("INSERT INTO daily_counts VALUES " + ",".join("(" + ",".join(map(literal, r)) + ")" for r in rows))
    hours = [(day, hour, *key, n, 100, written) for (day, hour, *key), n in hourly.items()]
    hours += [(day, hour, *key, n + 3, 40, written) for (day, hour, *key), n in hourly.items()]
    s.query("INSERT INTO hourly_counts VALUES " + ",".join("(" + ",".join(map(literal, r)) + ")" for r in hours))
    return s


def run(db: chs.Session, sql: str) -> list[list[Any]]:
    result = db.query(sql + "\nSETTINGS session_timezone = 'UTC', output_format_json_quote_64bit_integers = 0",
                      "JSONCompact")  # fmt: skip
    data: list[list[Any]] = json.loads(str(result))["data"]
    return data


@pytest.mark.parametrize("query", CLICKHOUSE_QUERIES, ids=lambda q: q.key)
def test_panel_answers_the_same_on_current_clickhouse(query: dashboards.Query, db: chs.Session) -> None:
    time_range = fixed_range(NOW)
    if FRESHNESS in query.panel.lower():
        [[seconds]] = run(db, expand(query.text, time_range))
        assert 0 <= seconds <= (datetime.now(UTC) - NOW).total_seconds() + 2
        return
    for name, variables in VARIABLE_CASES.items():
        rows = run(db, expand(query.text, time_range, variables))
        assert normalized(rows) == normalized(EXPECTED[query.key](Case(EVENTS, time_range, variables))), name


# -- what the panels may read ----------------------------------------------------------------


@pytest.mark.parametrize("query", CLICKHOUSE_QUERIES, ids=lambda q: q.key)
def test_panels_read_only_the_always_correct_views(query: dashboards.Query) -> None:
    tables = set(re.findall(r"\bFROM\s+(\w+)", query.text, re.IGNORECASE))
    assert tables and tables <= {"daily_stats", "hourly_stats"}, tables
    assert "FINAL" not in query.text.upper()


@pytest.mark.parametrize("query", CLICKHOUSE_QUERIES, ids=lambda q: q.key)
def test_panels_follow_the_dashboard_time_range(query: dashboards.Query) -> None:
    if FRESHNESS in query.panel.lower():
        return  # always about now, whatever the range
    assert "$__dateFilter(day)" in query.text or "$__timeFilter(hour)" in query.text


def test_every_panel_has_a_query_and_a_known_data_source() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "tally.yaml").read_text())["datasources"]
    uids = {source["uid"]: source["type"] for source in sources}
    for path in dashboards.dashboard_files():
        board = dashboards.load(path)
        for panel in dashboards.panels(board):
            assert panel.get("targets"), f"{path.name}: {panel['title']} has no query"
            for target in panel["targets"]:
                source = target.get("datasource") or panel["datasource"]
                assert uids.get(source["uid"]) == source["type"], f"{path.name}: {panel['title']}: {source}"
        ids = [panel["id"] for panel in dashboards.panels(board)]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
    assert set(EXPECTED) | {q.key for q in CLICKHOUSE_QUERIES if FRESHNESS in q.panel.lower()} == {
        q.key for q in CLICKHOUSE_QUERIES
    }


# -- the expansion itself --------------------------------------------------------------------

RANGE = TimeRange(datetime(2026, 11, 20, 6, 30, tzinfo=UTC), datetime(2026, 11, 25, 7, tzinfo=UTC), interval_s=120)


def test_macros_expand_as_the_plugin_does() -> None:
    start, end = f"toDateTime({int(RANGE.start.timestamp())})", f"toDateTime({int(RANGE.end.timestamp())})"
    assert start == "toDateTime(1795156200)"  # 2026-11-20 06:30 UTC, in epoch seconds as the plugin writes it
    assert expand("WHERE $__timeFilter(hour)", RANGE) == f"WHERE hour >= {start} AND hour <= {end}"
    assert expand("$__dateFilter(day)", RANGE) == "day >= toDate('2026-11-20') AND day <= toDate('2026-11-25')"
    assert expand("$__fromTime $__toTime $__interval_s", RANGE) == f"{start} {end} 120"
    assert expand("$__dateTimeFilter(day, hour)", RANGE) == (
        f"(day >= toDate('2026-11-20') AND day <= toDate('2026-11-25')) AND (hour >= {start} AND hour <= {end})"
    )


def test_variables_are_quoted_and_all_means_no_filter() -> None:
    sql = "WHERE $__conditionalAll(category IN (${category:singlequote}), $category) AND label = ${label:singlequote}"
    assert expand(sql, RANGE, {"category": [ALL], "label": "it's"}) == "WHERE 1=1 AND label = 'it\\'s'"
    assert expand(sql, RANGE, {"category": ["a", "b"], "label": "x"}) == "WHERE category IN ('a','b') AND label = 'x'"


@pytest.mark.parametrize(
    "sql",
    [
        "WHERE label = $label",  # a bare variable: its quoting would depend on Grafana's version
        "SELECT $__timeInterval(hour)",  # toStartOfInterval: not on ClickHouse 18.16
        "WHERE label = ${nobody:singlequote}",
        "WHERE label IN (${label:csv})",
    ],
)
def test_what_the_dashboards_may_not_use_is_refused(sql: str) -> None:
    with pytest.raises(UnsupportedQuery):
        expand(sql, RANGE, {"label": "x"})


def test_a_range_is_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        TimeRange(datetime(2026, 11, 25), datetime(2026, 11, 26))  # noqa: DTZ001 - the point of the test
    assert RANGE.end - RANGE.start > timedelta(days=4)
