"""The read side against real ClickHouse (Debian's 18.16): counts written by the real pipeline,
and multi-day ranges written straight into the roll-up tables.
"""

import csv
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from aggregator.write import ClickHouseWriter, RollupRow
from ingest.app import create_app
from ingest.settings import IngestSettings
from query.settings import QuerySettings
from schema.settings import ClickHouseSettings
from tests.support.servers import Services, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

TOKEN = "integration-read-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def call(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def read(services: Services, path: str) -> Any:
    status, _, body = call(f"{services.ingest_url}{path}", services.read_token)
    assert status == 200, body
    return json.loads(body)


def by(rows: list[dict[str, Any]], *keys: str) -> dict[Any, int]:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r["counter"] for r in rows}


# -- counts written by the real pipeline ---------------------------------------------


def test_counts_from_beacons_through_kafka_and_the_worker(services: Services) -> None:
    services.start_ingest(TALLY_API_PUBLIC_GET_STATS="false")
    services.start_worker()
    sent_at = datetime.now(UTC).replace(microsecond=0)
    beacons = [
        "signup:forms:btn1|home",
        "signup:forms:btn1",
        "signup:forms:btn2|checkout:shop:buy",
        "home|signup:forms:btn1",
    ]
    for labels in beacons:
        status, _, body = call(f"{services.ingest_url}/track/?labels={labels}")  # no token: /track/ stays open
        assert status == 202, body

    total = eventually(lambda: read(services, "/api/v1/counts")["total"] == 7 or None, timeout_s=60)
    assert total

    by_label = read(services, "/api/v1/counts?group_by=label")
    assert by(by_label["rows"], "label") == {"checkout": 1, "home": 2, "signup": 4}
    fresh = datetime.fromisoformat(by_label["fresh_as_of"].replace("Z", "+00:00"))
    assert sent_at - timedelta(seconds=2) <= fresh <= datetime.now(UTC) + timedelta(seconds=1)

    assert by(read(services, "/api/v1/categories")["rows"], "category") == {"": 2, "forms": 4, "shop": 1}
    assert by(
        read(services, "/api/v1/counts?group_by=label&group_by=dom_id&label=signup")["rows"], "label", "dom_id"
    ) == {
        ("signup", "btn1"): 3,
        ("signup", "btn2"): 1,
    }
    hours = read(services, "/api/v1/counts?group_by=hour&group_by=label")
    assert sum(r["counter"] for r in hours["rows"]) == 7  # the hourly counts add up to the day's
    assert {r["hour"][-7:] for r in hours["rows"]} == {":00:00Z"}

    top = read(services, "/api/v1/top?n=1")
    assert (top["rows"], top["total"], top["truncated"]) == ([{"label": "signup", "counter": 4}], 7, True)
    assert [r["label"] for r in read(services, "/api/v1/labels?q=IGN")["rows"]] == ["signup"]

    status, headers, body = call(f"{services.ingest_url}/api/v1/counts?group_by=label&format=csv", services.read_token)
    assert status == 200
    assert headers["x-tally-fresh-as-of"] == by_label["fresh_as_of"]
    assert list(csv.reader(io.StringIO(body.decode()))) == [
        ["label", "counter"],
        ["checkout", "1"],
        ["home", "2"],
        ["signup", "4"],
    ]

    # Protected by default: the seed's call and the API need the token.
    assert call(f"{services.ingest_url}/get_stats/?dom_ids=btn1|")[0] == 401
    assert call(f"{services.ingest_url}/api/v1/counts")[0] == 401
    assert call(f"{services.ingest_url}/api/v1/counts", "not-the-read-token")[0] == 401
    assert read(services, "/get_stats/?dom_ids=btn1|btn2|") == [["btn1", 3, "signup"], ["btn2", 1, "signup"]]


def test_get_stats_public_as_the_local_stack_runs_it(services: Services) -> None:
    services.start_ingest()  # like `tally up`: TALLY_API_PUBLIC_GET_STATS=true
    services.start_worker()
    assert call(f"{services.ingest_url}/track/?labels=signup:forms:btn1|home")[0] == 202
    eventually(
        lambda: json.loads(call(f"{services.ingest_url}/get_stats/?dom_ids=btn1|")[2]) == [["btn1", 1, "signup"]]
    )
    assert call(f"{services.ingest_url}/api/v1/counts")[0] == 401  # only /get_stats/ is public


# -- multi-day ranges, written straight into the roll-up tables --------------------------

TODAY = datetime.now(UTC).date()
WRITTEN = datetime.now(UTC).replace(tzinfo=None, microsecond=0)  # the worker writes naive UTC


def rows_for(days: int, labels: dict[tuple[str, str, str], int], version: int, written: datetime) -> list[RollupRow]:
    """``count + day_index`` for each counter on each of the last ``days`` days."""
    return [
        RollupRow(TODAY - timedelta(days=i), None, label, category, dom_id, count + i, version, written)
        for i in range(days)
        for (label, category, dom_id), count in labels.items()
    ]


COUNTERS = {
    ("signup", "forms", "btn1"): 10,
    ("signup", "", ""): 1,
    ("home", "nav", "menu"): 100,
    ("buy", "shop", "b"): 5,
}


@pytest.fixture
def loaded(clickhouse: ClickHouseSettings) -> ClickHouseSettings:
    writer = ClickHouseWriter(clickhouse)
    # Every counter twice, in separate inserts (unmerged parts): the higher version wins, written in either order.
    writer.write(rows_for(90, COUNTERS, version=20, written=WRITTEN))
    writer.write(rows_for(90, dict.fromkeys(COUNTERS, 999_999), version=10, written=WRITTEN - timedelta(hours=1)))
    day = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC)
    writer.write(
        [
            RollupRow(TODAY, day + timedelta(hours=h), "home", "nav", "menu", 100 // 4, 20, WRITTEN)
            for h in (8, 9, 10, 11)
        ]
    )
    writer.close()
    return clickhouse


def app(clickhouse: ClickHouseSettings, **query: Any) -> TestClient:
    """A query-only app (no Kafka producer) on ``clickhouse``, in this process."""
    settings = QuerySettings(**{"read_tokens": (TOKEN,), "max_days": 90, **query})
    return TestClient(create_app(IngestSettings(clickhouse=clickhouse, routes=frozenset({"query"}), query=settings)))


@pytest.fixture
def api(loaded: ClickHouseSettings) -> Iterator[TestClient]:
    with app(loaded) as client:
        yield client


def get(client: TestClient, path: str) -> Any:
    response = client.get(path, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_30_day_range_by_day_reads_one_number_per_counter(api: TestClient) -> None:
    start = TODAY - timedelta(days=29)
    body = get(api, f"/api/v1/counts?from={start}&to={TODAY}&label=signup&group_by=day")
    expected = {(TODAY - timedelta(days=i)).isoformat(): (10 + i) + (1 + i) for i in range(30)}
    assert by(body["rows"], "day") == expected  # the older versions (999999) never show
    assert [r["day"] for r in body["rows"]] == sorted(expected)
    assert body["total"] == sum(expected.values())
    assert body["fresh_as_of"] == WRITTEN.isoformat() + "Z"


def test_grouped_by_label_and_category_over_90_days(api: TestClient) -> None:
    start = TODAY - timedelta(days=89)
    body = get(api, f"/api/v1/counts?from={start}&to={TODAY}&group_by=label&group_by=category")
    days = sum(range(90))
    assert by(body["rows"], "label", "category") == {
        ("buy", "shop"): 5 * 90 + days,
        ("home", "nav"): 100 * 90 + days,
        ("signup", ""): 1 * 90 + days,
        ("signup", "forms"): 10 * 90 + days,
    }
    top = get(api, f"/api/v1/top?from={start}&to={TODAY}&n=2")
    assert [r["label"] for r in top["rows"]] == ["home", "signup"]
    assert top["total"] == body["total"]
    assert by(get(api, f"/api/v1/top?from={start}&to={TODAY}&by=dom_id&n=1")["rows"], "dom_id") == {
        "menu": 100 * 90 + days
    }
    assert [r["category"] for r in get(api, f"/api/v1/categories?from={start}")["rows"]] == ["", "forms", "nav", "shop"]
    assert [r["label"] for r in get(api, f"/api/v1/labels?from={start}&category=forms&category=shop")["rows"]] == [
        "buy",
        "signup",
    ]


def test_a_truncated_answer_keeps_the_whole_total(api: TestClient) -> None:
    start = TODAY - timedelta(days=89)
    whole = get(api, f"/api/v1/counts?from={start}&to={TODAY}")["total"]
    body = get(api, f"/api/v1/counts?from={start}&to={TODAY}&group_by=day&group_by=label&limit=50")
    assert (len(body["rows"]), body["truncated"], body["total"]) == (50, True, whole)


def test_hours_of_a_day(api: TestClient) -> None:
    body = get(api, f"/api/v1/counts?from={TODAY}&to={TODAY}&group_by=hour&label=home")
    assert [r["hour"][11:] for r in body["rows"]] == ["08:00:00Z", "09:00:00Z", "10:00:00Z", "11:00:00Z"]
    assert body["total"] == 100


def test_the_range_is_bounded(api: TestClient) -> None:
    assert api.get(f"/api/v1/counts?from={TODAY - timedelta(days=89)}", headers=AUTH).status_code == 200
    response = api.get(f"/api/v1/counts?from={TODAY - timedelta(days=90)}", headers=AUTH)
    assert response.status_code == 400
    assert (response.json()["field"], response.json()["rule"][:29]) == ("from", "a range of at most 90 days (f")


def test_hot_queries_are_answered_from_the_cache(loaded: ClickHouseSettings) -> None:
    with app(loaded, cache_ttl_s=600) as client:
        path = f"/api/v1/counts?from={TODAY}&to={TODAY}&label=buy"
        assert get(client, path)["total"] == 5
        newer = RollupRow(TODAY, None, "buy", "shop", "b", 6, 30, WRITTEN + timedelta(seconds=1))
        writer = ClickHouseWriter(loaded)
        writer.write([newer])
        writer.close()
        assert get(client, path)["total"] == 5  # the same query: the cached answer, with its freshness
        assert get(client, path + "&category=shop")["total"] == 6  # another query: ClickHouse's latest
    with app(loaded, cache_ttl_s=0) as client:
        assert get(client, path)["total"] == 6


def test_clickhouse_down_is_503_not_500(clickhouse: ClickHouseSettings) -> None:
    away = ClickHouseSettings(clickhouse.host, 1, clickhouse.database)  # nothing listens on port 1
    with app(away) as client:
        response = client.get("/api/v1/counts", headers=AUTH)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert client.get("/readyz").status_code == 503
