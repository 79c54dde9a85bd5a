"""``tally replay`` rebuilds past days exactly, while the live pipeline runs."""

from __future__ import annotations

import subprocess
from collections import Counter
from datetime import timedelta

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from stack.stack import tally_command
from tests.support.load import Load, assert_exact
from tests.support.past_days import DAYS, TODAY, by_day, corrupt, hourly_by_day, publish_past_days
from tests.support.servers import Services, daily_stats, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def run_replay(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    # The live worker keeps ten days open; for the replay, days before yesterday have closed.
    env = services.env(TALLY_WORKER_WINDOW_DAYS="2", COLUMNS="120")
    return subprocess.run(
        [tally_command(), "replay", "--from", str(DAYS[0]), "--to", str(DAYS[-1]), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


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
