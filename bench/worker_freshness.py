"""Freshness: from Kafka's ack of an event (what a 2xx at ingest means) to its count in daily_stats.

One ``tally worker`` runs (pinned to core 1) on a topic of its own. A
publisher process (pinned to core 0) sends events through ingest's own
``KafkaPublisher`` at a steady rate, in requests of up to 50 events as
browsers' beacons would arrive, and every ``probe_interval_s`` one probe:
an event of a counter of its own (label ``freshness_probe``, dom_id
``pN``), whose ack time it prints. This process polls daily_stats for the
probes; a probe's freshness is when its count first shows minus when Kafka
acked it. At the end every count must be exact.

    python -m bench.worker_freshness --bootstrap B --topic T --rate R --seconds S   (the publisher)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.worker_load import Key, counter_keys, zipf_picker
from bench.worker_runs import PARTITIONS, Bench, daily_totals, differences, metric, pinned
from schema.event import LabelEvent
from schema.settings import clickhouse_client
from stack.ports import free_port
from stack.stack import WORKER_READY, tally_command, worker_env

PROBE_LABEL = "freshness_probe"
REQUEST_EVENTS = 50  # ingest's MAX_LABELS_PER_REQUEST
TICK_S = 0.02
MAX_IN_FLIGHT = 256
FLUSHES = re.compile(rb"^tally_worker_flush_seconds_count (\S+)$", re.M)
FLUSH_SECONDS = re.compile(rb"^tally_worker_flush_seconds_sum (\S+)$", re.M)


@dataclass(frozen=True)
class Freshness:
    target_rate: float
    achieved_rate: float
    seconds: float
    events: int
    probes: int
    latencies: list[float]
    exact: bool
    flushes: float
    """ClickHouse writes the worker made from start to end (its tally_worker_flush_seconds_count)."""
    flush_seconds: float
    """Time those writes took, in all."""
    worker_seconds: float
    detail: str = ""

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure_freshness(
    bench: Bench,
    rate: float,
    seconds: float = 30,
    probe_interval_s: float = 0.1,
    worker_cpu: int = 1,
    extra_env: dict[str, str] | None = None,
    tally: str | None = None,
) -> Freshness:
    """``tally`` is the script that runs the worker: this checkout's by default, another's for a before/after."""
    topic = bench.new_topic("freshness")
    app_id = bench.new_app_id("freshness")
    clickhouse = bench.new_database()
    run_dir = bench.tmp / app_id
    worker = bench.stack.managed("worker-1", root=run_dir)
    env = {
        **os.environ,
        "TALLY_STACK_DIR": str(run_dir),
        "TALLY_KAFKA_BOOTSTRAP": bench.bootstrap,
        "TALLY_EVENTS_TOPIC": topic,
        "TALLY_EVENTS_PARTITIONS": str(PARTITIONS),
        "TALLY_CLICKHOUSE_DATABASE": clickhouse.database,
        "TALLY_CLICKHOUSE_HOST": clickhouse.host,
        "TALLY_CLICKHOUSE_PORT": str(clickhouse.port),
        "TALLY_WORKER_APP_ID": app_id,
        "TALLY_WORKER_WEB_PORT": str(free_port()),
        **(extra_env or {}),
    }
    port = int(env["TALLY_WORKER_WEB_PORT"])
    worker_started = time.monotonic()
    try:
        worker.start_and_wait(
            pinned(worker_cpu, [tally or tally_command(), "worker", "--id", "1"]),
            ready=WORKER_READY,
            env=worker_env(run_dir, "1", env),
        )
        argv = [sys.executable, "-m", "bench.worker_freshness", "--bootstrap", bench.bootstrap, "--topic", topic]
        argv += ["--rate", str(rate), "--seconds", str(seconds), "--probe-interval-s", str(probe_interval_s)]
        publisher = subprocess.Popen(pinned(1 - worker_cpu, argv), stdout=subprocess.PIPE, text=True)
        acks: dict[str, float] = {}
        summary: dict[str, Any] = {}
        reader = threading.Thread(target=_read_publisher, args=(publisher, acks, summary), daemon=True)
        reader.start()
        seen: dict[str, float] = {}
        deadline = time.monotonic() + seconds + 120
        with clickhouse_client(clickhouse) as client:
            while time.monotonic() < deadline:
                rows = client.execute("SELECT dom_id FROM daily_stats WHERE label = %(label)s", {"label": PROBE_LABEL})
                now = time.monotonic()
                for (dom_id,) in rows:
                    seen.setdefault(dom_id, now)
                if summary and set(acks) <= set(seen):
                    break
                time.sleep(0.1)
        publisher.wait(timeout=60)
        reader.join(timeout=10)
        if publisher.returncode != 0 or not summary:
            raise RuntimeError(f"the freshness publisher failed ({publisher.returncode})")
        expected: Counter[Key] = Counter()
        for key, n in summary["sent"].items():
            label, category, dom_id = key.split(":")
            expected[(label, category, dom_id)] = n
        expected.update({(PROBE_LABEL, "", dom_id): 1 for dom_id in acks})
        _wait_exact(clickhouse, expected)
        wrong = differences(expected, daily_totals(clickhouse))
        flushes, flush_seconds = metric(port, FLUSHES) or 0.0, metric(port, FLUSH_SECONDS) or 0.0
        worker_seconds = time.monotonic() - worker_started
    finally:
        worker.stop(timeout_s=20)
    missing = [dom_id for dom_id in acks if dom_id not in seen]
    detail = f"{len(wrong)} counters differ" if wrong else ""
    if missing:
        detail += f" {len(missing)} probes never visible"
    return Freshness(
        target_rate=rate,
        achieved_rate=float(summary["rate"]),
        seconds=float(summary["seconds"]),
        events=int(summary["events"]) + len(acks),
        probes=len(acks),
        latencies=[seen[d] - acks[d] for d in acks if d in seen],
        exact=not wrong and not missing,
        flushes=flushes,
        flush_seconds=flush_seconds,
        worker_seconds=worker_seconds,
        detail=detail.strip(),
    )


def _read_publisher(publisher: subprocess.Popen[str], acks: dict[str, float], summary: dict[str, Any]) -> None:
    assert publisher.stdout is not None
    for line in publisher.stdout:
        doc = json.loads(line)
        if "probe" in doc:
            acks[doc["probe"]] = doc["ack"]
        else:
            summary.update(doc)


def _wait_exact(clickhouse: Any, expected: Counter[Key], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and differences(expected, daily_totals(clickhouse)):
        time.sleep(0.5)


# -- the publisher process ------------------------------------------------------


async def publish(bootstrap: str, topic: str, rate: float, seconds: float, probe_interval_s: float) -> None:
    from ingest.errors import BrokerUnavailable
    from ingest.publish import KafkaPublisher, PublishSettings

    publisher = KafkaPublisher(bootstrap, topic, PublishSettings())
    keys = zipf_picker(counter_keys(2000, seed=2), seed=2)
    sent: Counter[str] = Counter()
    failed = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def request(events: list[LabelEvent]) -> None:
        nonlocal failed
        try:
            await publisher.publish(events)
        except BrokerUnavailable:
            failed += len(events)
            return
        sent.update(event.counter_key for event in events)

    async def probe(n: int) -> None:
        dom_id = f"p{n}"
        try:
            await publisher.publish([LabelEvent(PROBE_LABEL, "", dom_id, time.time_ns() // 1_000_000)])
        except BrokerUnavailable:
            return
        print(json.dumps({"probe": dom_id, "ack": time.monotonic()}), flush=True)

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    started = time.monotonic()
    queued = probes = 0
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            if elapsed >= probes * probe_interval_s:
                spawn(probe(probes))
                probes += 1
            while queued < rate * elapsed and len(in_flight) < MAX_IN_FLIGHT:
                n = min(REQUEST_EVENTS, int(rate * elapsed - queued) + 1)
                now_ms = time.time_ns() // 1_000_000
                spawn(request([LabelEvent(*next(keys), now_ms) for _ in range(n)]))
                queued += n
            await asyncio.sleep(TICK_S)
        while in_flight:
            await asyncio.gather(*in_flight)
        elapsed = time.monotonic() - started
    finally:
        publisher.close()
    total = sum(sent.values())
    print(
        json.dumps({"sent": dict(sent), "events": total, "failed": failed, "seconds": elapsed, "rate": total / elapsed})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True, help="events/s")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--probe-interval-s", type=float, default=0.1)
    args = parser.parse_args()
    asyncio.run(publish(args.bootstrap, args.topic, args.rate, args.seconds, args.probe_interval_s))


if __name__ == "__main__":
    main()
