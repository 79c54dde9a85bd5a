"""Exactly once from the client: keyed requests sent one to three times -- at once, seconds later, across a
kill -9 of the worker, a second worker joining and leaving, a broker restart -- count once each, daily and
hourly; a key reused for other counters is dropped and reported; ``tally replay`` rebuilds the same days.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schema.event import LabelEvent
from stack.kafka import KafkaServer, ensure_topic
from stack.ports import free_port
from stack.processes import Managed
from stack.stack import tally_command
from tests.support.keyed import KeyedLoad
from tests.support.load import assert_exact
from tests.support.past_days import DAYS, Truth, by_day, corrupt, hourly_by_day
from tests.support.servers import PARTITIONS, Services, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def metric(services: Services, worker: str, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{services.worker_ports[worker]}/metrics", timeout=5) as page:
        text = page.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_keyed_requests_count_once_through_kill_9_and_a_worker_joining_and_leaving(
    services: Services, store: str
) -> None:
    worker = services.start_worker("1", TALLY_WORKER_STORE=store)
    load = KeyedLoad(services.stack.settings.kafka.bootstrap, services.topic, seed=21)
    with load.running():
        time.sleep(3)
        worker.kill()  # repeats of requests sent before it come after
        time.sleep(1)
        services.start_worker("1", TALLY_WORKER_STORE=store)
        time.sleep(3)
        second = services.start_worker("2", TALLY_WORKER_STORE=store)  # a standby takes over half the partitions
        time.sleep(4)
        second.stop()
        time.sleep(3)
    assert len(load.requests) > 1000
    assert load.repeats() > 500
    assert_exact(services, load.truth())
    assert metric(services, "1", 'tally_worker_repeats_dropped_total{reason="duplicate"}') > 0


def test_keyed_requests_count_once_across_a_broker_restart(services: Services, tmp_path: Path) -> None:
    """A broker of the test's own, stopped and started again while requests and their repeats flow."""
    shared = services.stack.kafka
    home = tmp_path / "kafka"
    home.mkdir()
    (home / "libs").symlink_to(shared.libs)  # the stack's jars, fetched once
    kafka = KafkaServer(
        home,
        Managed("kafka", tmp_path / "run", tmp_path / "logs"),
        port=free_port(),
        controller_port=free_port(),
        heap="512m",
        release=shared.release,
    )
    kafka.start()
    try:
        ensure_topic(kafka.bootstrap, services.topic, PARTITIONS)
        services.start_worker(TALLY_KAFKA_BOOTSTRAP=kafka.bootstrap)
        load = KeyedLoad(kafka.bootstrap, services.topic, seed=22)
        with load.running():
            time.sleep(4)
            kafka.process.stop(timeout_s=60)
            time.sleep(3)
            kafka.start()
            time.sleep(6)
        assert load.failed_sends > 0  # the broker was away: sends failed and were sent again
        assert_exact(services, load.truth(), timeout_s=150)
    finally:
        kafka.process.stop(timeout_s=60)


def test_a_key_reused_for_other_counters_is_dropped_and_reported(services: Services) -> None:
    services.start_worker()
    load = KeyedLoad(services.stack.settings.kafka.bootstrap, services.topic, seed=23)
    truth: Counter[tuple[str, str, str]] = Counter()
    reused = keys = 0
    for _ in range(200):
        first = load.request(labels=3)
        load.send_all(first)
        keys += len(load.records(first))  # a key is held per partition its request reached
        truth.update((e.label, e.category, e.dom_id) for e in first.events)
        # The same key, other counters in the same partitions: the client's bug.
        other = load.request(labels=0, key=first.key)
        other.events = [same_partition_other_counter(load, e) for e in first.events]
        load.send(other)
        reused += len(load.records(other))
    load.stop()
    assert reused > 50
    assert_exact(services, truth)
    assert metric(services, "1", 'tally_worker_repeats_dropped_total{reason="key_reused"}') == reused
    assert metric(services, "1", "tally_worker_dedupe_keys") == keys
    assert metric(services, "1", "tally_worker_dedupe_oldest_key_age_seconds") > 0


def same_partition_other_counter(load: KeyedLoad, event: LabelEvent) -> LabelEvent:
    """Another counter whose events go to the same partition as ``event``'s."""
    partition = set(load.partitioner.group([event], range(PARTITIONS)))
    for n in range(1000):
        other = event._replace(dom_id=f"other{n}")
        if set(load.partitioner.group([other], range(PARTITIONS))) == partition:
            return other
    raise AssertionError("no counter found")


def test_replay_rebuilds_days_of_keyed_requests_as_the_worker_counted_them(services: Services) -> None:
    """Requests of past days, each sent 1-3 times seconds apart (record times too), some across a midnight."""
    services.start_worker(TALLY_WORKER_WINDOW_DAYS="10")
    load = KeyedLoad(services.stack.settings.kafka.bootstrap, services.topic, seed=24)
    truth: Truth = Counter()
    for i, day in enumerate(DAYS):
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        for n in range(300):
            if n < 20:  # sent just before midnight, its events stamped by the client just after; again after it
                sent_at, ts = midnight - 2_000 - n * 100, midnight + 500
            else:
                sent_at = ts = midnight + n * 60_000 + i
            request = load.request(ts_ms=ts)
            for k in range(request.sends_left):
                load.send(request, record_ms=sent_at + k * 3_000)
            truth.update((day, e.label, e.category, e.dom_id) for e in request.events)
    load.stop()
    assert load.repeats() > 200
    eventually(lambda: by_day(services) == truth, timeout_s=60)
    eventually(lambda: hourly_by_day(services) == truth)
    damaged = corrupt(services)
    assert damaged != truth

    env = services.env(TALLY_WORKER_WINDOW_DAYS="2", COLUMNS="200")
    replayed = subprocess.run(
        [tally_command(), "replay", "--from", str(DAYS[0]), "--to", str(DAYS[-1])],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert by_day(services) == truth
    assert hourly_by_day(services) == truth
    assert DAYS[-1] < datetime.now(UTC).date() - timedelta(days=1)
