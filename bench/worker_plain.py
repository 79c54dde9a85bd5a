"""A prototype for comparison: the worker's own design (aggregator.count) on a plain aiokafka loop, no Faust.

Same stages and the same code as the worker -- ``decode_messages``,
``count_batch`` (daily and hourly counters, offsets kept for exactly-once),
``Rollup`` + ``ClickHouseWriter`` every second -- but the batch comes from
``AIOKafkaConsumer.getmany`` instead of Faust's per-event stream, and the
changed counters go to a changelog topic with one ``send`` each, awaited
(acks=all) before the batch's offsets are committed: what Faust's table does
for the worker, without its per-event machinery. It measures what that
machinery costs; it is not a second worker (no rebalance handling, no
recovery from the changelog).

    python -m bench.worker_plain --bootstrap B --topic T --group G --events N   (pinned by bench.worker)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime

from aggregator.count import DictCountTable, Windows, count_batch, first_open_day
from aggregator.decode import Message, decode_messages
from aggregator.rollup import Rollup
from aggregator.settings import WorkerSettings
from aggregator.write import ClickHouseWriter
from bench.worker_load import topic_size
from bench.worker_runs import PARTITIONS, Bench, WorkerRun, daily_totals, differences, hourly_sum, pinned, run_json
from stack.kafka import ensure_topic

BATCH_MAX = WorkerSettings.batch_max  # the worker's batch, for a like-for-like changelog


async def run(bootstrap: str, topic: str, group: str, events: int, flush_interval_s: float = 1.0) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    settings = WorkerSettings.from_env(os.environ)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        client_id="tally-bench-plain",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5)
    table = DictCountTable()
    windows = Windows(settings.day_tz)
    rollup = Rollup(ClickHouseWriter(settings.clickhouse), settings.day_tz)
    changelog = f"{group}-counts-changelog"
    started = time.perf_counter()
    await consumer.start()
    await producer.start()
    seen = 0
    marks: dict[str, float] = {}
    flushed_at = time.monotonic()
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH_MAX)
            sends = []
            for tp, records in batches.items():
                messages = (Message(tp.partition, r.offset, r.value or b"") for r in records)
                open_from = first_open_day(datetime.now(settings.day_tz), settings.window_days)
                result = count_batch(table, decode_messages(messages), windows, open_from)
                for key, tally in result.changed.items():
                    value = json.dumps(list(tally)).encode()
                    sends.append(await producer.send(changelog, value, key=key.encode(), partition=tp.partition))
                rollup.mark(result.changed)
                seen += len(records)
            if sends:
                await asyncio.gather(*sends)  # the changelog has the counts: now the offsets may be committed
                await consumer.commit()
            if time.monotonic() - flushed_at >= flush_interval_s:
                await rollup.flush()
                flushed_at = time.monotonic()
            now = time.perf_counter() - started
            for name, level in (("p10", 0.1 * events), ("p90", 0.9 * events)):
                if name not in marks and seen >= level:
                    marks[name] = now
        await rollup.flush(force=True)
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "events": seen,
        "seconds": time.perf_counter() - started,
        "steady_rate": 0.8 * events / (marks["p90"] - marks["p10"]),
        "cpu_s": time.process_time(),
    }


def run_plain(bench: Bench, cpu: int = 1) -> WorkerRun:
    """Run the prototype pinned to ``cpu`` on the pre-loaded topic; check ClickHouse as for the worker."""
    group = bench.new_app_id("plain")
    clickhouse = bench.new_database()
    ensure_topic(bench.bootstrap, f"{group}-counts-changelog", PARTITIONS)
    env = {**os.environ, "TALLY_CLICKHOUSE_DATABASE": clickhouse.database}
    argv = [sys.executable, "-m", "bench.worker_plain", "--bootstrap", bench.bootstrap, "--topic", bench.topic]
    argv += ["--group", group, "--events", str(bench.events)]
    servers = bench.server_cpu()
    result = json.loads(run_json(pinned(cpu, argv), 600, env=env))
    after = bench.server_cpu()
    counted = daily_totals(clickhouse)
    wrong = differences(bench.backlog.sent, counted)
    hourly = hourly_sum(clickhouse)
    return WorkerRun(
        name="plain",
        events=bench.events,
        counted_in_clickhouse=sum(counted.values()),
        seconds_to_exact=result["seconds"],
        startup_s=0.0,
        steady_rate=result["steady_rate"],
        worker_cpu_s=result["cpu_s"],
        server_cpu_s={k: after[k] - servers[k] for k in after},
        exact=not wrong and hourly == bench.events,
        changelog_records=topic_size(bench.bootstrap, f"{group}-counts-changelog"),
        detail=f"{len(wrong)} counters differ" if wrong else "",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.bootstrap, args.topic, args.group, args.events))))


if __name__ == "__main__":
    main()
