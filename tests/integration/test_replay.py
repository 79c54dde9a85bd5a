"""``tally replay`` rebuilds past days exactly, while the live pipeline runs."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from ingest.publish import KafkaPublisher, PublishSettings
from schema.event import LabelEvent
from schema.settings import clickhouse_client
from stack.stack import tally_command
from tests.integration.conftest import Services, daily_stats, eventually
from tests.integration.test_worker_exactness import Load, assert_exact

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (5, 4, 3)]
Truth = Counter[tuple[date, str, str, str]]


def publish_past_days(services: Services) -> Truth:
    truth: Truth = Counter()
    events = []
    for i, day in enumerate(DAYS):
        for n in range(30 + 10 * i):
            ts = int(datetime(day.year, day.month, day.day, n % 24, n % 60, tzinfo=UTC).timestamp() * 1000)
            event = LabelEvent(f"past{n % 4}", "c", f"d{n % 3}", ts)
            events.append(event)
            truth[(day, event.label, event.category, event.dom_id)] += 1
    publisher = KafkaPublisher(services.stack.settings.kafka.bootstrap, services.topic, PublishSettings())
    asyncio.run(publisher.publish(events))
    publisher.close()
    return truth


def by_day(services: Services) -> Truth:
    with clickhouse_client(services.clickhouse) as client:
        rows = client.execute("SELECT day, label, category, dom_id, counter FROM daily_stats WHERE day < today() - 2")
    return Counter({(day, label, category, dom_id): counter for day, label, category, dom_id, counter in rows})


def hourly_by_day(services: Services) -> Truth:
    with clickhouse_client(services.clickhouse) as client:
        rows = client.execute(
            "SELECT day, label, category, dom_id, sum(counter) FROM hourly_stats WHERE day < today() - 2 "
            "GROUP BY day, label, category, dom_id"
        )
    return Counter({(day, label, category, dom_id): counter for day, label, category, dom_id, counter in rows})


def run_replay(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    # The live worker keeps ten days open; for the replay, days before yesterday have closed.
    env = services.env(TALLY_WORKER_WINDOW_DAYS="2", COLUMNS="120")
    return subprocess.run(
        [tally_command(), "replay", "--from", str(DAYS[0]), "--to", str(DAYS[-1]), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def corrupt(services: Services) -> Truth:
    """What an operator finds: a lost row, an inflated row, an invented row."""
    with clickhouse_client(services.clickhouse) as client:
        client.execute(
            "ALTER TABLE daily_counts DELETE WHERE day = %(day)s AND label = 'past0'",
            {"day": DAYS[0]},
        )
        client.execute(
            "INSERT INTO daily_counts (day, label, category, dom_id, counter, version, written_at) VALUES",
            [
                (DAYS[1], "past1", "c", "d1", 999_999, 10**12, datetime(2026, 1, 1, tzinfo=UTC)),
                (DAYS[2], "invented", "", "", 7, 1, datetime(2026, 1, 1, tzinfo=UTC)),
            ],
        )

    def deleted() -> Truth:  # ALTER ... DELETE is a mutation: it lands in the background
        found = by_day(services)
        return found if not any(day == DAYS[0] and label == "past0" for day, label, _, _ in found) else Counter()

    return eventually(deleted)


def test_replay_rebuilds_corrupted_days_exactly_and_twice_the_same(services: Services) -> None:
    services.start_worker(TALLY_WORKER_WINDOW_DAYS="10")
    truth = publish_past_days(services)
    eventually(lambda: by_day(services) == truth)
    damaged = corrupt(services)
    assert damaged != truth

    dry = run_replay(services, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing written" in dry.stdout
    assert by_day(services) == damaged

    first = run_replay(services)
    assert first.returncode == 0, first.stdout + first.stderr
    assert by_day(services) == truth
    assert hourly_by_day(services) == truth

    second = run_replay(services)
    assert second.returncode == 0, second.stderr
    assert by_day(services) == truth
    assert hourly_by_day(services) == truth


def test_replay_while_live_traffic_flows_keeps_today_exact(services: Services) -> None:
    services.start_worker(TALLY_WORKER_WINDOW_DAYS="10")
    truth = publish_past_days(services)
    eventually(lambda: by_day(services) == truth)
    corrupt(services)
    with Load(services, seed=11).running() as load:
        result = run_replay(services)
    assert result.returncode == 0, result.stdout + result.stderr
    assert by_day(services) == truth
    every_day = Counter(load.sent)
    for (_, *counter), n in truth.items():
        every_day[tuple(counter)] += n  # type: ignore[index]
    assert_exact(services, every_day)


def test_open_days_and_days_past_retention_are_refused_before_anything_is_written(services: Services) -> None:
    services.start_worker(TALLY_WORKER_WINDOW_DAYS="10")
    truth = publish_past_days(services)
    eventually(lambda: by_day(services) == truth)
    damaged = corrupt(services)

    env = services.env(TALLY_WORKER_WINDOW_DAYS="2")
    today = subprocess.run(
        [tally_command(), "replay", "--from", str(TODAY - timedelta(days=1)), "--to", str(TODAY)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert today.returncode == 2
    assert "still open for live counting" in today.stdout

    # Retention removes the oldest events: here, every partition's first events.
    bootstrap = services.stack.settings.kafka.bootstrap
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    ends = consumer.end_offsets([TopicPartition(services.topic, p) for p in range(6)])
    consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.delete_records({tp: min(end, 5) for tp, end in ends.items() if end})
    admin.close()
    gone = run_replay(services)
    assert gone.returncode == 2
    assert "no longer holds all events" in gone.stdout
    assert "earliest complete day is" in gone.stdout
    assert by_day(services) == damaged
    assert daily_stats(services.clickhouse)  # the live counts are untouched
