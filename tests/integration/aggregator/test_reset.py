"""``tally reset``: recount everything from the topic, the workers' state included."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from datetime import UTC, datetime

import pytest

from schema.settings import clickhouse_client
from stack.stack import tally_command
from tests.support.load import Load, assert_exact
from tests.support.past_days import corrupt, publish_past_days
from tests.support.servers import Services, daily_stats, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def run_reset(services: Services) -> subprocess.CompletedProcess[str]:
    env = services.env(TALLY_WORKER_WINDOW_DAYS="2", COLUMNS="120")
    return subprocess.run(
        [tally_command(), "reset", "--yes"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_reset_recounts_every_day_from_the_topic(services: Services) -> None:
    # Today's events, and past days counted by a worker that still had them open.
    services.start_worker(TALLY_WORKER_WINDOW_DAYS="10")
    load = Load(services, seed=21)
    asyncio.run(load.publish(load.batch(300)))
    load.publisher.close()
    truth = publish_past_days(services)
    every_day: Counter[tuple[str, str, str]] = Counter(load.sent)
    for (_, label, category, dom_id), n in truth.items():
        every_day[(label, category, dom_id)] += n
    eventually(lambda: daily_stats(services.clickhouse) == every_day)

    running = run_reset(services)
    assert running.returncode == 2
    assert "stop them first" in running.stdout

    services.stop_all()
    corrupt(services)  # past days damaged
    with clickhouse_client(services.clickhouse) as client:  # and today's
        client.execute(
            "INSERT INTO daily_counts (day, label, category, dom_id, counter, version, written_at) VALUES",
            [(datetime.now(UTC).date(), "label1", "c0", "d0", 10**6, 10**15, datetime.now(UTC))],
        )
    result = run_reset(services)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebuilt" in result.stdout

    services.start_worker(TALLY_WORKER_WINDOW_DAYS="2")
    assert_exact(services, every_day)
