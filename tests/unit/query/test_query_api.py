"""The read API as a caller meets it, with a fake reader: auth, every parameter rule, answers, cache, route groups.

What the SQL does on real ClickHouse is tested in test_query_current_clickhouse.py
(current) and tests/integration/query/test_query_api.py (18.16).
"""

import asyncio
import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from starlette.testclient import TestClient

from ingest.app import create_app
from ingest.errors import IngestError
from ingest.settings import IngestSettings
from query import heatmap
from query.cache import QueryCache
from query.errors import InvalidParameter
from query.params import ENDPOINT_PARAMS, MAX_VALUES_PER_FILTER, _group_by
from query.settings import QuerySettings
from schema.settings import SettingError
from stack.stack import DEV_READ_TOKEN, Stack, StackSettings
from tests.support.fakes import FakePublisher

TOKEN = "a-long-enough-read-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WRITTEN = datetime.fromisoformat("2026-11-25T10:00:05")  # naive UTC, as the driver returns written_at


class SqlReader:
    """Answers like the views would, for rows grouped by label; records every query."""

    def __init__(self, rows: list[tuple[Any, ...]] | None = None) -> None:
        self.rows = rows if rows is not None else [("home", 9, WRITTEN), ("signup", 5, WRITTEN - timedelta(hours=1))]
        self.queries: list[tuple[str, dict[str, Any]]] = []

    async def execute(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        self.queries.append((query, params))
        if "count() AS counters" in query:
            return [(sum(r[-2] for r in self.rows), max((r[-1] for r in self.rows), default=WRITTEN), len(self.rows))]
        if "FROM daily_stats\nWHERE day = %(day)s" in query:  # /get_stats/
            return [(d, 3, "signup") for d in params["dom_ids"]]
        return self.rows[: params["limit"]]

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def app_with(reader: SqlReader, **query: Any) -> TestClient:
    settings = IngestSettings(query=QuerySettings(**{"read_tokens": (TOKEN,), **query}))
    return TestClient(create_app(settings, lambda _: FakePublisher(), lambda _: reader))


@pytest.fixture
def reader() -> SqlReader:
    return SqlReader()


@pytest.fixture
def client(reader: SqlReader) -> Iterator[TestClient]:
    with app_with(reader) as client:
        yield client


# -- protection -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/counts", "/api/v1/top", "/api/v1/labels", "/api/v1/categories"])
def test_api_needs_a_bearer_token(client: TestClient, reader: SqlReader, path: str) -> None:
    missing = client.get(path)
    assert missing.status_code == 401
    assert missing.json()["field"] == "authorization"
    assert missing.headers["www-authenticate"] == 'Bearer realm="tally", scope="read"'
    wrong = client.get(path, headers={"authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert client.get(path, headers={"authorization": f"Basic {TOKEN}"}).status_code == 401
    assert reader.queries == []
    assert client.get(path, headers=AUTH).status_code == 200
    assert client.get(path, headers={"authorization": f"bearer  {TOKEN} "}).status_code == 200


def test_any_configured_token_is_accepted_for_rotation(reader: SqlReader) -> None:
    with app_with(reader, read_tokens=("old-token-0123456789", "new-token-0123456789")) as client:
        for token in ("old-token-0123456789", "new-token-0123456789"):
            assert client.get("/api/v1/counts", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_without_a_configured_token_reads_are_closed(reader: SqlReader) -> None:
    with app_with(reader, read_tokens=()) as client:
        response = client.get("/api/v1/counts", headers=AUTH)
        assert response.status_code == 401
        assert "TALLY_API_READ_TOKENS" in response.json()["rule"]
        assert client.get("/get_stats/?dom_ids=a").status_code == 401


def test_get_stats_is_protected_by_default_and_public_when_set(reader: SqlReader) -> None:
    with app_with(reader) as client:
        assert client.get("/get_stats/?dom_ids=btn1|").status_code == 401
        assert client.get("/get_stats/?dom_ids=btn1|", headers=AUTH).json() == [["btn1", 3, "signup"]]
    with app_with(reader, public_get_stats=True) as client:
        assert client.get("/get_stats/?dom_ids=btn1|").json() == [["btn1", 3, "signup"]]
        assert client.get("/api/v1/counts").status_code == 401  # only /get_stats/ is public


def test_track_page_and_document_need_no_token(client: TestClient) -> None:
    assert client.get("/track/?labels=signup").status_code == 202
    page = client.get("/stats/")
    assert page.status_code == 200
    assert "Read token" in page.text
    assert client.get("/stats/stats.js").status_code == 200
    assert client.get("/api/v1/openapi.json").json()["openapi"].startswith("3.")


def test_read_token_settings() -> None:
    settings = IngestSettings.from_env({"TALLY_API_READ_TOKENS": "first-token-0123456, second-token-012345"})
    assert settings.query.read_tokens == ("first-token-0123456", "second-token-012345")
    assert settings.query.public_get_stats is False
    with pytest.raises(SettingError, match="TALLY_API_READ_TOKENS"):
        IngestSettings.from_env({"TALLY_API_READ_TOKENS": "short"})
    with pytest.raises(SettingError, match="TALLY_API_MAX_DAYS"):
        IngestSettings.from_env({"TALLY_API_MAX_DAYS": "0"})
    with pytest.raises(SettingError, match="TALLY_API_CACHE_TTL_S"):
        IngestSettings.from_env({"TALLY_API_CACHE_TTL_S": "-1"})


# -- parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "rule_part"),
    [
        ("from=2026/11/01", "from", "YYYY-MM-DD"),
        ("from=20261101", "from", "YYYY-MM-DD"),
        ("to=2026-02-30", "to", "YYYY-MM-DD"),
        ("from=1969-12-31&to=1970-01-02", "from", "between 1970-01-01 and 2105-12-31"),
        ("to=2200-01-01", "to", "between"),
        ("from=2026-11-25&to=2026-11-24", "from", "on or before to (2026-11-24)"),
        ("from=2024-01-01&to=2026-11-25", "from", "at most 366 days"),
        ("label=bad label", "label[0]", "only letters"),
        ("label=ok&label=", "label[1]", "is required"),
        ("category=a:b", "category[0]", "only letters"),
        ("dom_id=" + "x" * 129, "dom_id[0]", "at most 128 characters"),
        (
            "&".join(f"label=l{i}" for i in range(MAX_VALUES_PER_FILTER + 1)),
            "label",
            f"at most {MAX_VALUES_PER_FILTER}",
        ),
        ("q=", "q", "1 to 64 characters"),
        ("q=a b", "q", "only letters"),
        ("group_by=week", "group_by[0]", "one of day, hour, label, category, dom_id"),
        ("order=random", "order", "one of key, counter"),
        ("limit=0", "limit", "from 1 to 10000"),
        ("limit=10001", "limit", "from 1 to 10000"),
        ("limit=1e3", "limit", "whole number"),
        ("format=xml", "format", "one of json, csv"),
        ("from=2026-11-01&from=2026-11-02", "from", "given once"),
        ("dom_ids=a|b", "dom_ids", "unknown parameter"),
        ("select=1", "select", "unknown parameter"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(
    client: TestClient, reader: SqlReader, query: str, field: str, rule_part: str
) -> None:
    response = client.get(f"/api/v1/counts?{query}", headers=AUTH)
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["error"], body["field"]) == ("invalid", field)
    assert rule_part in body["rule"]
    assert reader.queries == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/top?n=0", "n"),
        ("/api/v1/top?by=day", "by"),
        ("/api/v1/top?group_by=label", "group_by"),
        ("/api/v1/labels?label=x", "label"),
        ("/api/v1/categories?q=x", "q"),
        ("/get_stats/?dom_ids=a&day=0001-01-01", "day"),
    ],
)
def test_each_endpoint_takes_its_own_parameters(client: TestClient, path: str, field: str) -> None:
    response = client.get(path, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_the_documented_parameters_are_the_accepted_ones(client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    for endpoint, names in ENDPOINT_PARAMS.items():
        documented = [p["name"] for p in doc["paths"][f"/api/v1/{endpoint}"]["get"]["parameters"]]
        assert documented == list(names)
    schemathesis.openapi.from_dict(doc)  # loads as a valid OpenAPI document


# -- SQL is parameterised -------------------------------------------------------------


def test_values_travel_as_parameters_never_in_the_sql(client: TestClient, reader: SqlReader) -> None:
    query = "label=needle_label&category=needle_cat&dom_id=needle.dom&q=needle_q&from=2026-11-01&to=2026-11-25"
    assert client.get(f"/api/v1/counts?{query}&group_by=label", headers=AUTH).status_code == 200
    sql, params = reader.queries[0]
    assert "needle" not in sql and "2026" not in sql
    assert params["labels"] == ("needle_label",)
    assert params["categorys"] == ("needle_cat",)
    assert params["dom_ids"] == ("needle.dom",)
    assert params["search"] == "needle_q"
    assert "FROM daily_stats" in sql and "_counts" not in sql


def test_hour_grouping_reads_the_hourly_view() -> None:
    reader = SqlReader(rows=[(1764061200, 4, WRITTEN)])  # hours come back as epoch seconds
    with app_with(reader) as client:
        body = client.get("/api/v1/counts?group_by=hour", headers=AUTH).json()
    assert "FROM hourly_stats" in reader.queries[0][0]
    assert body["rows"] == [{"hour": "2025-11-25T09:00:00Z", "counter": 4}]


# -- answers ---------------------------------------------------------------------------


def test_counts_say_how_fresh_they_are(client: TestClient) -> None:
    response = client.get("/api/v1/counts?group_by=label&from=2026-11-20&to=2026-11-25", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-tally-fresh-as-of"] == "2026-11-25T10:00:05Z"
    assert response.json() == {
        "from": "2026-11-20",
        "to": "2026-11-25",
        "group_by": ["label"],
        "rows": [{"label": "home", "counter": 9}, {"label": "signup", "counter": 5}],
        "total": 14,
        "truncated": False,
        "fresh_as_of": "2026-11-25T10:00:05Z",
    }


def test_a_truncated_answer_still_has_the_whole_total(client: TestClient, reader: SqlReader) -> None:
    body = client.get("/api/v1/top?n=1", headers=AUTH).json()
    assert body["rows"] == [{"label": "home", "counter": 9}]
    assert (body["total"], body["truncated"]) == (14, True)
    assert "ORDER BY counter DESC" in reader.queries[0][0]
    assert "count() AS counters" in reader.queries[1][0]


def test_nothing_matched_is_zero_and_not_fresh(reader: SqlReader) -> None:
    with app_with(SqlReader(rows=[])) as client:
        response = client.get("/api/v1/counts", headers=AUTH)
    assert response.json()["rows"] == [{"counter": 0}]
    assert response.json()["fresh_as_of"] is None
    assert "x-tally-fresh-as-of" not in response.headers


def test_csv_export_of_the_same_query(client: TestClient) -> None:
    response = client.get("/api/v1/labels?format=csv&from=2026-11-20&to=2026-11-25", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["x-tally-fresh-as-of"] == "2026-11-25T10:00:05Z"
    assert 'filename="tally-labels-2026-11-20-2026-11-25.csv"' in response.headers["content-disposition"]
    assert list(csv.reader(io.StringIO(response.text))) == [["label", "counter"], ["home", "9"], ["signup", "5"]]


# -- cache -------------------------------------------------------------------------------


def test_identical_queries_share_one_answer(client: TestClient, reader: SqlReader) -> None:
    for _ in range(5):
        assert client.get("/get_stats/?dom_ids=a|b|", headers=AUTH).status_code == 200
        assert client.get("/api/v1/counts?group_by=label", headers=AUTH).status_code == 200
    assert len(reader.queries) == 2
    client.get("/api/v1/counts?group_by=label&label=home", headers=AUTH)
    assert len(reader.queries) == 3


def test_cache_off(reader: SqlReader) -> None:
    with app_with(reader, cache_ttl_s=0) as client:
        for _ in range(3):
            client.get("/api/v1/counts", headers=AUTH)
    assert len(reader.queries) == 3


def test_cache_is_bounded_by_rows_and_entries_expire() -> None:
    async def scenario() -> None:
        now = [0.0]
        cache = QueryCache(ttl_s=1.0, max_rows=10, timer=lambda: now[0])  # a clock the test moves
        calls = 0

        async def rows(n: int) -> list[tuple[Any, ...]]:
            nonlocal calls
            calls += 1
            return [(i,) for i in range(n)]

        await cache.get("q", {"n": 3}, lambda: rows(3))
        await cache.get("q", {"n": 3}, lambda: rows(3))
        assert calls == 1
        await cache.get("q", {"n": 50}, lambda: rows(50))  # larger than the whole cache: not kept
        assert cache.rows <= 10
        for n in range(4, 9):  # more than fits: the oldest go
            await cache.get("q", {"n": n}, lambda n=n: rows(n))
        assert cache.rows <= 10
        now[0] = 2.0
        calls = 0
        await cache.get("q", {"n": 8}, lambda: rows(8))
        assert calls == 1  # expired

    asyncio.run(scenario())


def test_identical_queries_in_flight_wait_for_the_first() -> None:
    async def scenario() -> None:
        cache = QueryCache(ttl_s=5.0, max_rows=100)
        release = asyncio.Event()
        calls = 0

        async def slow() -> list[tuple[Any, ...]]:
            nonlocal calls
            calls += 1
            await release.wait()
            return [(1,)]

        waiting = [asyncio.create_task(cache.get("q", {"a": 1}, slow)) for _ in range(10)]
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(*waiting) == [[(1,)]] * 10
        assert calls == 1

    asyncio.run(scenario())


def test_a_failed_query_is_not_cached() -> None:
    async def scenario() -> None:
        cache = QueryCache(ttl_s=5.0, max_rows=100)

        async def failing() -> list[tuple[Any, ...]]:
            raise RuntimeError("ClickHouse away")

        with pytest.raises(RuntimeError):
            await cache.get("q", {}, failing)

        async def ok() -> list[tuple[Any, ...]]:
            return [(1,)]

        assert await cache.get("q", {}, ok) == [(1,)]

    asyncio.run(scenario())


# -- route groups ------------------------------------------------------------------------


def test_a_track_only_process_serves_no_reads_and_opens_no_reader() -> None:
    opened: list[str] = []
    settings = IngestSettings.from_env({"TALLY_INGEST_ROUTES": "track"})
    app = create_app(settings, lambda _: FakePublisher(), lambda _: opened.append("reader"))  # type: ignore[arg-type,func-returns-value]
    with TestClient(app) as client:
        assert client.get("/track/?labels=signup").status_code == 202
        assert client.get("/api/v1/counts", headers=AUTH).status_code == 404
        assert client.get("/get_stats/?dom_ids=a").status_code == 404
        assert client.get("/stats/").status_code == 404
        assert client.get("/readyz").json() == {"kafka": True}
    assert opened == []


def test_a_query_only_process_serves_no_beacons_and_opens_no_producer(reader: SqlReader) -> None:
    settings = IngestSettings.from_env({"TALLY_INGEST_ROUTES": "query", "TALLY_API_READ_TOKENS": TOKEN})

    def no_producer(_: IngestSettings) -> FakePublisher:
        raise AssertionError("a query-only process opened a Kafka producer")

    with TestClient(create_app(settings, no_producer, lambda _: reader)) as client:
        assert client.get("/track/?labels=signup").status_code == 404
        assert client.get("/api/v1/counts", headers=AUTH).status_code == 200
        assert client.get("/readyz").json() == {"clickhouse": True}


@pytest.mark.parametrize("value", ["", "track,admin", "reads"])
def test_route_groups_setting_is_checked(value: str) -> None:
    with pytest.raises(SettingError, match="TALLY_INGEST_ROUTES"):
        IngestSettings.from_env({"TALLY_INGEST_ROUTES": value})


def test_the_local_stack_keeps_get_stats_public_and_has_a_dev_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALLY_API_READ_TOKENS", raising=False)
    monkeypatch.delenv("TALLY_API_PUBLIC_GET_STATS", raising=False)
    settings = IngestSettings.from_env(Stack(StackSettings()).service_env())
    assert settings.query.public_get_stats is True
    assert settings.query.read_tokens == (DEV_READ_TOKEN,)


def test_group_by_repeated_past_the_list_limit_is_400() -> None:
    with pytest.raises(InvalidParameter) as caught:
        _group_by(["day"] * (MAX_VALUES_PER_FILTER + 1))
    assert caught.value.field == "group_by"


def test_get_stats_reads_today_unless_a_day_is_given() -> None:
    today = date(2026, 11, 25)
    assert heatmap.parse({"dom_ids": "a|b|"}, today) == {"day": today, "dom_ids": ("a", "b")}
    assert heatmap.parse({"dom_ids": "a", "day": "2026-11-01"}, today)["day"] == date(2026, 11, 1)


@pytest.mark.parametrize(
    ("query", "field"), [({}, "dom_ids"), ({"dom_ids": "a|b c"}, "dom_ids[1]"), ({"dom_ids": "a", "day": "x"}, "day")]
)
def test_get_stats_parameters_are_refused_as_read_parameters(query: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        heatmap.parse(query, date(2026, 11, 25))
    assert caught.value.field == field
    assert not isinstance(caught.value, IngestError)  # the read side's own error, not a beacon's


def test_the_openapi_document_describes_the_idempotency_key_of_every_beacon_route(client: TestClient) -> None:
    import re

    from schema.event import InvalidField, check_idempotency_key

    doc = client.get("/api/v1/openapi.json").json()
    for path, method in (("/track/", "get"), ("/track/", "post"), ("/track.gif", "get")):
        params = {(p["in"], p["name"]): p["schema"] for p in doc["paths"][path][method]["parameters"]}
        assert set(params) >= {("header", "Idempotency-Key"), ("query", "idempotency_key")}, path
        schema = params[("query", "idempotency_key")]
        for key in ("0b7e9f1c-5d0a-4c3e-9a57-2f6a1d8e4b21", "a", "k" * 64, "", "k" * 65, "a.b", "a b", "é"):
            allowed = bool(re.fullmatch(schema["pattern"].strip("^$"), key)) and len(key) <= schema["maxLength"]
            try:
                check_idempotency_key(key)
                accepted = True
            except InvalidField:
                accepted = False
            assert allowed == accepted, key


def test_a_process_serving_only_the_read_api_documents_no_beacon_route() -> None:
    from dataclasses import replace

    from tests.support.fakes import DEFAULTS, FakeReader, running

    with running(FakePublisher(), replace(DEFAULTS, routes=frozenset({"query"})), FakeReader()) as client:
        paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert "/get_stats/" in paths
    assert "/track/" not in paths and "/track.gif" not in paths
