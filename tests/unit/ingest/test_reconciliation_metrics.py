"""The reconciliation figures: accepted at ingest by day, counted by the workers by day (docs/reliability.md)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from prometheus_client.parser import text_string_to_metric_families

from aggregator.count import Tally
from aggregator.metrics import WorkerMetrics, day_totals
from ingest.metrics import DAYS_KEPT, IngestMetrics
from schema.event import LabelEvent
from tests.support.browser import BROWSER
from tests.support.fakes import DEFAULTS, FakePublisher, running
from tests.support.metrics import scrape


def by_day(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels)["day"]: value
        for (name, labels), value in metrics.items()
        if name == "tally_ingest_events_accepted_by_day_total"
    }


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_ingest_counts_accepted_events_by_the_day_they_count_on() -> None:
    settings = dataclasses.replace(DEFAULTS, day_tz=ZoneInfo("Europe/Paris"))
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    an_hour_ago = now_ms - 3_600_000
    batch = {"events": [{"label": "a", "ts": an_hour_ago}, {"label": "b"}, {"label": "bad label"}]}
    with running(FakePublisher(), settings) as client:
        assert client.get("/track/", params={"labels": "x|y"}, headers=BROWSER).status_code == 202
        assert client.get("/track/", params={"labels": "z"}, headers={"user-agent": "Googlebot/2.1"}).status_code == 202
        assert client.post("/track/", json=batch, headers=BROWSER).status_code == 202
        metrics = scrape(client)
    paris = ZoneInfo("Europe/Paris")
    expected: dict[str, float] = {}
    for ts in (now_ms, now_ms, an_hour_ago, now_ms):  # x, y, a, b; neither the bot's event nor the bad one
        day = datetime.fromtimestamp(ts / 1000, paris).date().isoformat()
        expected[day] = expected.get(day, 0) + 1
    assert by_day(metrics) == expected
    assert metrics[("tally_ingest_events_accepted_total", ())] == 4


def test_ingest_day_of_an_event_follows_the_zone_and_old_days_are_dropped() -> None:
    metrics = IngestMetrics(routes=["/track/"], day_tz=ZoneInfo("Europe/Paris"))
    events = [
        LabelEvent("a", "", "", ms("2026-11-24T23:30:00+00:00")),
        LabelEvent("a", "", "", ms("2026-11-24T22:59:59+00:00")),
        LabelEvent("a", "", "", ms("2026-11-24T23:00:00+00:00")),
    ]
    metrics.published(events, 0.01)
    for day in range(1, DAYS_KEPT + 3):
        metrics.published([LabelEvent("a", "", "", ms(f"2026-10-{day:02d}T12:00:00+00:00"))], 0.01)
    families = text_string_to_metric_families(metrics.exposition().decode())
    samples = {
        s.labels["day"]: s.value
        for f in families
        for s in f.samples
        if s.name == "tally_ingest_events_accepted_by_day_total"
    }
    assert len(samples) == DAYS_KEPT
    assert samples == {"2026-11-25": 2, "2026-11-24": 1} | {f"2026-10-{day:02d}": 1 for day in range(5, DAYS_KEPT + 3)}


def test_workers_day_totals_come_from_the_daily_counters_of_owned_partitions() -> None:
    table = [
        ("d2026-11-25:a::", Tally(5, 10, 0)),
        ("d2026-11-25:b:c:d", Tally(3, 11, 1)),
        ("d2026-11-24:a::", Tally(7, 4, 0)),
        ("h1795611600:a::", Tally(5, 10, 0)),  # hourly: the same events again, left out
        ("d2026-11-25:z::", Tally(100, 9, 2)),  # a standby copy of partition 2, owned by another worker
    ]
    assert day_totals(table, {0, 1}, date(2026, 11, 23)) == {"2026-11-25": 8, "2026-11-24": 7}
    assert day_totals(table, {0, 1}, date(2026, 11, 25)) == {"2026-11-25": 8}  # the 24th closed: left out
    assert day_totals(table, set(), date(2026, 11, 23)) == {}


def test_workers_day_gauge_forgets_days_that_left_the_table() -> None:
    metrics = WorkerMetrics()
    metrics.sample_days(lambda: {"2026-11-24": 7, "2026-11-25": 8})
    metrics._days_at = 0.0  # as if DAY_TOTALS_EVERY_S had passed
    metrics.sample_days(lambda: {"2026-11-25": 9})
    text = metrics.exposition().decode()
    assert 'tally_worker_day_events{day="2026-11-25"} 9.0' in text
    assert "2026-11-24" not in text
