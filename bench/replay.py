"""Replay throughput on one core, side by side with raw consumers reading the same range.

    make bench-replay            (python -m bench.replay --events 500000)

Pre-loads N events stamped four days ago (a closed day) into a fresh topic,
then, pinned to one core, in one run:

- raw kafka-python: the consumer replay uses, reading the range, nothing else
- raw aiokafka: the fastest Python consumer here, reading the range
- replay, dry: plan + read + decode + count (what ``tally replay --dry-run`` does)
- replay, full: the same, then stage, verify and swap into ClickHouse

Prints a table and appends it to bench/results/replay.txt (one table a run,
so repeated runs show the spread on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from aggregator import replay
from aggregator.settings import WorkerSettings
from bench.worker_load import counter_keys, preload, zipf_picker
from schema import migrations
from schema.event import LabelEvent, encode, encode_key
from schema.settings import ClickHouseSettings, clickhouse_client
from stack.kafka import delete_topics, ensure_topic

BOOTSTRAP = "127.0.0.1:9092"
RESULTS = Path(__file__).parent / "results" / "replay.txt"


def events_of_a_closed_day(n: int) -> tuple[list[tuple[bytes, bytes, int]], datetime]:
    day = (datetime.now(UTC) - timedelta(days=4)).replace(hour=0, minute=0, second=0, microsecond=0)
    start_ms = int(day.timestamp() * 1000)
    picks = zipf_picker(counter_keys(2000, 3), 3)
    messages = []
    for i in range(n):
        event = LabelEvent(*next(picks), start_ms + i * 86_000_000 // n)
        messages.append((encode_key(event), encode(event), event.ts_ms))
    return messages, day


def consumer() -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )


def raw_kafka_python(topic: str, n: int) -> int:
    c = consumer()
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    c.assign(tps)
    c.seek_to_beginning()
    seen = 0
    while seen < n:
        for records in c.poll(timeout_ms=1000, max_records=10_000).values():
            seen += len(records)
    c.close()
    return seen


def raw_aiokafka(topic: str, n: int) -> int:
    async def run() -> int:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(
            topic, bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest",
            fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20,
        )  # fmt: skip
        await c.start()
        seen = 0
        try:
            while seen < n:
                for records in (await c.getmany(timeout_ms=1000, max_records=10_000)).values():
                    seen += len(records)
        finally:
            await c.stop()
        return seen

    return asyncio.run(run())


def run_replay(topic: str, day: datetime, settings: ClickHouseSettings, *, dry_run: bool) -> int:
    c = consumer()
    with clickhouse_client(settings) as client:
        outcome = replay.replay(
            c, client, BOOTSTRAP, topic, day.date(), day.date(),
            tz=UTC, first_open_day=datetime.now(UTC).date() - timedelta(days=2), dry_run=dry_run,
            window_ms=WorkerSettings().dedupe_window_s * 1000,
        )  # fmt: skip
    c.close()
    return outcome.counted.events_read


def busy_ticks() -> int:
    """CPU time the whole machine spent busy so far, in clock ticks (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


@dataclass(frozen=True)
class Timing:
    seen: int
    seconds: float
    cpu: float
    """CPU seconds of this process (all its threads)"""
    others: float
    """the share of the machine's CPU used by other processes meanwhile (Kafka, ClickHouse, other work)"""


def timed(run: Callable[[], int]) -> Timing:
    tick = os.sysconf("SC_CLK_TCK")
    started, cpu, busy = time.perf_counter(), time.process_time(), busy_ticks()
    seen = run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    others = max((busy_ticks() - busy) / tick - cpu, 0.0) / (seconds * (os.cpu_count() or 1))
    return Timing(seen, seconds, cpu, others)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--core", type=int, default=1)
    args = parser.parse_args()

    topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
    database = f"bench_replay_{uuid.uuid4().hex[:8]}"
    settings = ClickHouseSettings(database=database)
    ensure_topic(BOOTSTRAP, topic, 6)
    migrations.apply(settings)
    try:
        messages, day = events_of_a_closed_day(args.events)
        preload(BOOTSTRAP, topic, [(k, v) for k, v, _ in messages], [ts for _, _, ts in messages])
        os.sched_setaffinity(0, {args.core})
        cases: list[tuple[str, Callable[[], int]]] = [
            ("raw kafka-python consumer (read only)", lambda: raw_kafka_python(topic, args.events)),
            ("raw aiokafka consumer (read only)", lambda: raw_aiokafka(topic, args.events)),
            ("tally replay --dry-run (read, decode, count)", lambda: run_replay(topic, day, settings, dry_run=True)),
            ("tally replay (... + stage, verify, swap)", lambda: run_replay(topic, day, settings, dry_run=False)),
        ]
        load = Path("/proc/loadavg").read_text().split()[0]
        rows = []
        for name, case in cases:
            timing = timed(case)
            assert timing.seen == args.events, f"{name} read {timing.seen} of {args.events}"
            rows.append((name, timing))
        with clickhouse_client(settings) as client:
            (total,) = client.execute("SELECT sum(counter) FROM daily_stats")[0]
        assert total == args.events, f"replayed day holds {total} of {args.events}"
    finally:
        delete_topics(BOOTSTRAP, topic)
        with clickhouse_client(settings, database="default") as admin:
            admin.execute(f"DROP DATABASE IF EXISTS `{database}`")
    report(rows, args, load)


def report(rows: list[tuple[str, Timing]], args: argparse.Namespace, load: str) -> None:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    kafka_python, aiokafka = rows[0][1].seconds, rows[1][1].seconds
    lines = [
        f"replay benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {os.cpu_count()} cores, {cpu}; pinned to core {args.core}; Kafka and ClickHouse on the same machine",
        f"load: {load} (1-minute load average before the cases); 'others' = the machine's CPU used by other processes",
        f"command: python -m bench.replay --events {args.events}  (make bench-replay)",
        f"{args.events:,} events of one closed day, ~2,000 counters (Zipf), 6 partitions",
        "",
        f"{'case':<46} {'seconds':>7} {'events/s':>9} {'vs kafka-python':>15} {'vs aiokafka':>11} "
        f"{'CPU s':>6} {'events/CPU s':>12} {'others':>6}",
    ]
    for name, t in rows:
        lines.append(
            f"{name:<46} {t.seconds:>7.2f} {t.seen / t.seconds:>9,.0f} "
            f"{kafka_python / t.seconds:>14.2f}x {aiokafka / t.seconds:>10.2f}x "
            f"{t.cpu:>6.2f} {t.seen / t.cpu:>12,.0f} {t.others:>6.0%}"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    with RESULTS.open("a") as results:
        results.write(text + "\n")


if __name__ == "__main__":
    main()
