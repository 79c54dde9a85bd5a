"""Every Grafana panel's query, run as Grafana would send it, on ClickHouse 18.16 with counts from the real pipeline.

Known events go through `tally ingest` (JSON beacons with their own
timestamps), Kafka and `tally worker` into ClickHouse. Each ClickHouse query
of deploy/grafana/dashboards/*.json is then expanded for a fixed time range
and variables (stack/dashboards.py: the plugin's macros, Grafana's
variables) and run; its rows must be what counting the events by hand gives
(tests/support/dashboard_cases.py). The Prometheus panels' expressions must name
series and labels that the running services' /metrics really expose.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from stack import dashboards
from stack.kafka import delete_topics, ensure_topic
from stack.ports import free_port
from stack.stack import Stack
from tests.support.dashboard_cases import (
    EXPECTED,
    FRESHNESS,
    VARIABLE_CASES,
    Case,
    Event,
    fixed_range,
    known_events,
    normalized,
)
from tests.support.promql import PROMETHEUS_OWN, PROMETHEUS_QUERIES, TARGET_LABELS, query_selectors
from tests.support.servers import PARTITIONS, Services, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

CLICKHOUSE_QUERIES = [q for q in dashboards.all_queries() if q.datasource == dashboards.CLICKHOUSE_PLUGIN]


@dataclass
class Counted:
    settings: ClickHouseSettings
    events: list[Event]
    sent_at: datetime
    metrics: dict[str, set[str]]
    """Every series name the services expose, with its label names."""


@pytest.fixture(scope="module")
def counted(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Counted]:
    """The known events, sent through ingest and counted by a worker, once for the module."""
    topic = f"test.events.{uuid.uuid4().hex[:12]}"
    ensure_topic(stack.settings.kafka.bootstrap, topic, PARTITIONS)
    base = stack.settings.clickhouse
    settings = ClickHouseSettings(base.host, base.port, f"test_{uuid.uuid4().hex[:12]}", base.user, base.password)
    migrations.apply(settings)
    services = Services(
        stack, topic, settings, tmp_path_factory.mktemp("dashboards"), free_port(), f"test-app-{uuid.uuid4().hex[:8]}"
    )
    try:
        services.start_ingest(TALLY_MAX_CLIENT_TS_PAST_S="172800")  # two days back: the range's first hours
        services.start_worker()
        sent_at = datetime.now(UTC)
        events = known_events(sent_at)
        body = {"events": [{"label": e.label, "category": e.category, "dom_id": e.dom_id,
                            "ts": int(e.at.timestamp() * 1000)} for e in events]}  # fmt: skip
        answer = post_json(f"{services.ingest_url}/track/", body)
        assert answer == {"accepted": len(events)}, answer
        with clickhouse_client(settings) as client:
            eventually(
                lambda: (
                    client.execute("SELECT sum(counter) FROM daily_stats")[0][0] == len(events)
                    and client.execute("SELECT sum(counter) FROM hourly_stats")[0][0] == len(events)
                ),
                timeout_s=60,
            )
        # The worker's lag appears once its timer has seen each partition's end and committed offset, which
        # may be after the counts are written (a write follows the counting at once).
        worker_url = f"http://127.0.0.1:{services.worker_ports['1']}/metrics"
        eventually(lambda: "tally_worker_consumer_lag" in scrape(worker_url), timeout_s=30)
        metrics = scrape(f"{services.ingest_url}/metrics")
        for name, labels in scrape(worker_url).items():
            metrics.setdefault(name, set()).update(labels)
        yield Counted(settings, events, sent_at, metrics)
    finally:
        services.stop_all()
        delete_topics(stack.settings.kafka.bootstrap, topic)
        delete_topics(stack.settings.kafka.bootstrap, services.app_id)
        with clickhouse_client(settings, database="default") as admin:
            admin.execute(f"DROP DATABASE IF EXISTS `{settings.database}`")


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def scrape(url: str) -> dict[str, set[str]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s", line)
        if match and not line.startswith("#"):
            labels = set(re.findall(r"(\w+)=\"", match[2] or ""))
            series.setdefault(match[1], set()).update(labels)
    return series


def run(settings: ClickHouseSettings, sql: str) -> list[tuple[Any, ...]]:
    with clickhouse_client(settings) as client:  # the app's settings: predicate pushdown into the views
        rows: list[tuple[Any, ...]] = client.execute(sql)
        return rows


# -- ClickHouse panels ----------------------------------------------------------------------------


@pytest.mark.parametrize("query", CLICKHOUSE_QUERIES, ids=lambda q: q.key)
def test_panel_answers_the_counts_of_the_events_sent(query: dashboards.Query, counted: Counted) -> None:
    time_range = fixed_range(counted.sent_at)
    if FRESHNESS in query.panel.lower():
        sql = dashboards.expand(query.text, time_range)
        before = datetime.now(UTC)
        [(seconds,)] = run(counted.settings, sql)
        # The worker wrote after the events were sent, and the answer cannot be from the future.
        assert 0 <= seconds <= (datetime.now(UTC) - counted.sent_at).total_seconds() + 1, (seconds, before)
        return
    assert query.key in EXPECTED, f"{query.key}: add what it must answer to tests/support/dashboard_cases.py"
    for name, variables in VARIABLE_CASES.items():
        case = Case(counted.events, time_range, variables)
        rows = run(counted.settings, dashboards.expand(query.text, time_range, variables))
        assert normalized(rows) == normalized(EXPECTED[query.key](case)), f"variables {name!r}"


def test_the_known_events_exercise_every_filter(counted: Counted) -> None:
    """The range and variables leave some events out, so a filter that did nothing would fail the panels."""
    case = Case(counted.events, fixed_range(counted.sent_at))
    assert len(case.hours()) < len(case.days()) <= len(counted.events)
    picked = Case(counted.events, case.time_range, VARIABLE_CASES["picked"])
    assert 0 < len(picked.category(picked.days())) < len(picked.days())
    assert 0 < len(picked.doms(picked.days())) < len(picked.page(picked.days())) < len(picked.days())


# -- Prometheus panels ----------------------------------------------------------------------------


@pytest.mark.parametrize("query", PROMETHEUS_QUERIES, ids=lambda q: q.key)
def test_prometheus_panel_or_alert_reads_series_the_services_expose(query: dashboards.Query, counted: Counted) -> None:
    time_range = fixed_range(counted.sent_at)
    found = query_selectors(query, time_range)
    assert found, query.text
    for selector in found:
        name, labels = selector.name, selector.labels
        if name in PROMETHEUS_OWN:
            assert labels <= TARGET_LABELS, (name, labels)
            continue
        assert name in counted.metrics, f"{query.key}: no service exposes {name}"
        label_names = counted.metrics[name] | TARGET_LABELS
        assert labels <= label_names, f"{query.key}: {name} has no label {sorted(labels - label_names)}"
