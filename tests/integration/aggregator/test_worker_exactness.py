"""Counts stay exact through what happens to workers in production: kill -9 at
random moments, workers joining and leaving, a different store, ClickHouse
going away. Events go straight to Kafka through the ingest publisher (what a
2xx means), so the truth is known exactly.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schema import migrations
from schema.event import LabelEvent
from schema.settings import ClickHouseSettings, clickhouse_client
from stack import clickhouse
from stack.ports import free_port
from stack.processes import Managed
from tests.support.load import Load, assert_exact
from tests.support.servers import Services, daily_stats, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def test_exact_through_repeated_kill_9(services: Services) -> None:
    worker = services.start_worker()
    rng = random.Random(7)
    with Load(services, seed=1).running() as load:
        for _ in range(3):
            time.sleep(rng.uniform(1.0, 4.0))
            worker.kill()
            time.sleep(rng.uniform(0.0, 2.0))
            worker = services.start_worker()
        time.sleep(2)
    assert sum(load.sent.values()) > 1000
    assert_exact(services, load.sent)


def test_exact_through_kill_9_while_kafka_is_slow_to_take_the_changelog(services: Services) -> None:
    """Offsets are committed only for events whose counts Kafka already holds.

    A producer quota on the worker's client id makes the broker slow to take
    its changelog records (as a loaded broker is) while the consumer's commits
    go through: a worker that commits ahead of its changelog loses events at
    the kill -9.
    """
    kafka = services.stack.kafka
    worker = services.start_worker()
    with Load(services, seed=11).running() as load:
        time.sleep(2)
        kafka.set_producer_quota(services.app_id, 2_000)
        try:
            time.sleep(8)
            worker.kill()
        finally:
            kafka.set_producer_quota(services.app_id, None)
        worker = services.start_worker()
        time.sleep(2)
    assert_exact(services, load.sent)


def test_events_the_consumer_skipped_are_read_again_and_counted(services: Services) -> None:
    """What Faust's stream does during a rebalance -- skip events and commit past them -- done on purpose:
    the group's committed offsets are moved past 300 events nobody counted. The worker notices that what it
    is given does not continue from what its table counted, reads the hole from Kafka and counts it."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    load = Load(services, seed=12)
    worker = services.start_worker()
    asyncio.run(load.publish(load.batch(300)))
    assert_exact(services, load.sent)
    worker.stop()
    asyncio.run(load.publish(load.batch(300)))  # never delivered to a worker: the committed offsets skip them
    bootstrap = services.stack.settings.kafka.bootstrap
    group = KafkaConsumer(bootstrap_servers=bootstrap, group_id=services.app_id, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(services.topic, p) for p in group.partitions_for_topic(services.topic)]
        ends = group.end_offsets(partitions)
        group.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    finally:
        group.close()
    services.start_worker()
    asyncio.run(load.publish(load.batch(300)))
    load.publisher.close()
    assert sum(load.sent.values()) == 900
    assert_exact(services, load.sent)


def test_exact_through_a_restart_right_after_kill_9(services: Services) -> None:
    """The new worker joins while the killed one is still a member of the group (until its session times out)."""
    worker = services.start_worker()
    with Load(services, seed=8).running() as load:
        time.sleep(2)
        worker.kill()
        worker = services.start_worker()
        time.sleep(2)
    assert_exact(services, load.sent)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_exact_while_workers_join_and_leave(services: Services, store: str) -> None:
    services.start_worker("1", TALLY_WORKER_STORE=store)
    with Load(services, seed=2).running() as load:
        time.sleep(2)
        second = services.start_worker("2", TALLY_WORKER_STORE=store)
        time.sleep(2)
        services.start_worker("3", TALLY_WORKER_STORE=store)
        time.sleep(2)
        second.stop()  # SIGTERM: a graceful leave
        time.sleep(3)

    def assigned() -> list[object]:
        ready = [_json(f"http://127.0.0.1:{services.worker_ports[w]}/readyz") for w in "13"]
        return sorted(p for r in ready for p in r["assigned_partitions"])  # type: ignore[attr-defined]

    eventually(lambda: assigned() == list(range(6)))
    assert_exact(services, load.sent)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_exact_while_partitions_move_back_and_forth(services: Services, store: str) -> None:
    """A second worker joins and leaves three times: worker 1 loses partitions and gets them back, each time
    with newer counts in the changelog than in what it held before."""
    services.start_worker("1", TALLY_WORKER_STORE=store)
    with Load(services, seed=6).running() as load:
        for _ in range(3):
            time.sleep(1.5)
            second = services.start_worker("2", TALLY_WORKER_STORE=store)
            time.sleep(1.5)
            second.stop()
        time.sleep(2)
    assert_exact(services, load.sent)


def test_day_boundary_in_the_configured_zone(services: Services) -> None:
    paris = ZoneInfo("Europe/Paris")
    midnight = datetime.now(paris).replace(hour=0, minute=0, second=0, microsecond=0)
    before, after = int(midnight.timestamp() * 1000) - 1, int(midnight.timestamp() * 1000)
    services.start_worker(TALLY_DAY_TZ="Europe/Paris")
    load = Load(services, seed=3)
    asyncio.run(
        load.publish([LabelEvent("late_night", "", "x", before)] * 3 + [LabelEvent("late_night", "", "x", after)])
    )
    load.publisher.close()
    yesterday, today = (midnight - timedelta(days=1)).date(), midnight.date()

    def by_day() -> dict[object, int]:
        with clickhouse_client(services.clickhouse) as client:
            return dict(client.execute("SELECT day, counter FROM daily_stats WHERE label = 'late_night'"))

    def by_hour() -> dict[object, int]:
        with clickhouse_client(services.clickhouse) as client:
            return dict(client.execute("SELECT hour, counter FROM hourly_stats WHERE label = 'late_night'"))

    assert eventually(lambda: by_day() == {yesterday: 3, today: 1})
    midnight_utc = midnight.astimezone(UTC)
    # The hourly rows are the flush's second INSERT: they may land a moment after the daily ones.
    assert eventually(lambda: by_hour() == {midnight_utc - timedelta(hours=1): 3, midnight_utc: 1})


def test_late_events_are_refused_and_reported(services: Services) -> None:
    services.start_worker(TALLY_WORKER_WINDOW_DAYS="2")
    load = Load(services, seed=4)
    old = int((datetime.now(UTC) - timedelta(days=5)).timestamp() * 1000)
    asyncio.run(load.publish(load.batch(5, ts_ms=old)))
    asyncio.run(load.publish([LabelEvent("fresh", "", "", time.time_ns() // 1_000_000)]))
    load.publisher.close()
    eventually(lambda: daily_stats(services.clickhouse) == {("fresh", "", ""): 1})
    metrics = _text(f"http://127.0.0.1:{services.worker_ports['1']}/metrics")
    assert 'tally_worker_events_dropped_total{reason="late"} 5.0' in metrics


def test_clickhouse_outage_counting_goes_on_and_catches_up(services: Services, tmp_path: Path) -> None:
    # A ClickHouse of the test's own, of the version the session runs.
    own = clickhouse.server(
        services.stack.settings.clickhouse_version,
        tmp_path / "clickhouse",
        Managed("clickhouse", tmp_path / "run", tmp_path / "logs"),
        tcp_port=free_port(),
        http_port=free_port(),
    )
    own.start()
    try:
        settings = ClickHouseSettings("127.0.0.1", own.tcp_port, "outage")
        migrations.apply(settings)
        services.clickhouse = settings
        services.start_worker(TALLY_CLICKHOUSE_PORT=str(own.tcp_port), TALLY_CLICKHOUSE_DATABASE="outage")
        readyz = f"http://127.0.0.1:{services.worker_ports['1']}/readyz"
        with Load(services, seed=5).running() as load:
            time.sleep(2)
            own.process.stop()
            eventually(lambda: _json(readyz).get("clickhouse_writes_failing"), timeout_s=30)
            time.sleep(5)
            own.start()
            time.sleep(2)
        assert_exact(services, load.sent)
        assert not _json(readyz)["clickhouse_writes_failing"]
    finally:
        own.process.stop()


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _json(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))
