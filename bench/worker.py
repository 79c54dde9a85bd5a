"""The worker benchmark: one command, every figure side by side, from one pre-loaded topic.

    make bench-worker                      # = flock /tmp/tally-bench.lock .venv/bin/python -m bench.worker
    .venv/bin/python -m bench.worker --events 100000 --no-profile --freshness-s 10   # a quicker look

1. Pre-load N events (about 2,000 counters, Zipf-like popularity, today)
   into a fresh 6-partition topic.
2. On that topic, each with its own consumer group and ClickHouse database:
   (a) one ``tally worker`` pinned to core 1, memory store: time until
       daily_stats shows every event, exactly, and its steady rate from /metrics;
   (b) the same with the RocksDB store;
   (c) the floor for Python: a raw aiokafka consume -> decode -> count loop
       on core 1 (and the same decode -> count over the messages in memory);
   (d) ClickHouse's own Kafka engine into a SummingMergeTree (what a
       ClickHouse user would pick instead);
   (e) two workers, one per core;
   (f) for comparison, a prototype of the worker's own design (count_batch,
       changelog, commit, ClickHouse roll-up) on a plain aiokafka loop
       (bench/worker_plain.py): what Faust's per-event machinery costs.
   (g) one worker on the same events as v2 records of 10-50 events (one
       request's events per partition, as ingest publishes them), no keys;
   (h) the same records, each with an idempotency key of its own (the
       dedupe stage looks up and holds every one): keyed against (g), and
       (g) against (a); and what the keys held cost in memory at (h)'s rate.
   Then (a) once more under py-spy, for where the time goes.
3. Freshness: one worker, events published through ingest's publisher at
   half of (a)'s rate; ack -> visible in daily_stats, p50 and p99.

Prints the table and writes it, with the machine and versions, to
bench/results/worker.txt. Kafka and ClickHouse are the stack's servers
(``tally up``); on a 2-core machine they share the cores with what is measured.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aggregator.settings import WorkerSettings
from bench.worker_clickhouse_kafka import EngineRun, run_kafka_engine
from bench.worker_freshness import Freshness, measure_freshness
from bench.worker_load import backlog, preload, topic_size
from bench.worker_plain import run_plain
from bench.worker_profile import Profile, py_spy_available, read_profile, recorder
from bench.worker_records import as_records, bytes_per_key, records_bench
from bench.worker_runs import Bench, WorkerRun, pinned, run_json, run_workers
from schema.settings import clickhouse_client

RESULTS = Path(__file__).parent / "results" / "worker.txt"
PACKAGES = ("faust-streaming", "aiokafka", "kafka-python", "clickhouse-driver", "rocksdict")
T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    run: str
    cores: str
    rate: str
    to_done: str
    startup: str
    per_cpu: str
    changelog: str
    servers: str
    exact: str


HEADER = Row(
    "run",
    "cores",
    "events/s (steady)",
    "all counted (s)",
    "startup (s)",
    "events/CPU-s",
    "changelog rec/event",
    "Kafka+CH CPU-s",
    "exact",
)


def worker_row(run: WorkerRun | str, title: str, cores: str) -> Row:
    if isinstance(run, str):
        return Row(title, cores, "failed", "", "", "", "", "", run)
    exact = f"yes, {run.counted_in_clickhouse:,}" if run.exact else f"NO: {run.detail}"
    return Row(
        title,
        cores,
        f"{run.steady_rate:,.0f}",
        f"{run.seconds_to_exact:.1f}",
        f"{run.startup_s:.1f}",
        f"{run.events_per_cpu_s:,.0f}",
        f"{run.changelog_records / run.events:.2f}",
        f"{sum(run.server_cpu_s.values()):.1f}",
        exact,
    )


def floor_rows(floor: dict[str, float] | str) -> list[Row]:
    title = "(c) raw aiokafka consume-decode-count"
    if isinstance(floor, str):
        return [Row(title, "1", "failed", "", "", "", "", "", floor)]
    return [
        Row(
            title,
            "1",
            f"{floor['steady_rate']:,.0f}",
            f"{floor['seconds']:.1f}",
            f"{floor['startup_s']:.1f}",
            f"{floor['events'] / floor['cpu_s']:,.0f}",
            "-",
            "",
            f"sum {floor['events']:,.0f} (in a dict)",
        ),
        Row("    the same decode-count, in memory", "1", f"{floor['in_memory_rate']:,.0f}", "", "", "", "-", "", ""),
    ]


def engine_row(run: EngineRun | str) -> Row:
    title = "(d) ClickHouse 18.16 Kafka engine -> SummingMergeTree"
    if isinstance(run, str):
        return Row(title, "server", "failed", "", "", "", "", "", run)
    if run.error and not run.counted:
        return Row(title, "server", "did not consume", f"{run.seconds:.0f}", "", "", "-", "", run.error)
    exact = f"yes, {run.counted:,}" if run.exact else f"NO: {run.error or 'per-counter sums differ'}"
    return Row(
        title,
        "server (both)",
        f"{run.events / run.seconds:,.0f} (overall)",
        f"{run.seconds:.1f}",
        f"{run.startup_s:.1f}",
        f"{run.events / run.server_cpu_s:,.0f}" if run.server_cpu_s else "",
        "-",
        f"{run.server_cpu_s:.1f} (CH)",
        exact,
    )


def table(rows: list[Row]) -> str:
    cells = [list(vars(HEADER).values()), *(list(vars(r).values()) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def attempt(what: str, run: Callable[[], T]) -> T | str:
    """Run one measurement; a failure becomes its row's text, not the end of the benchmark."""
    say(f"{what} ...")
    try:
        result = run()
    except Exception as exc:
        traceback.print_exc()
        return f"{type(exc).__name__}: {exc}"[:200]
    say(f"{what}: {result if not isinstance(result, Profile) else 'profiled'}")
    return result


def say(line: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", file=sys.stderr, flush=True)


def machine(bench: Bench) -> list[str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    with clickhouse_client(bench.stack.settings.clickhouse, database="default") as client:
        clickhouse = client.execute("SELECT version()")[0][0]
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PACKAGES)
    return [
        f"machine:  {os.cpu_count()} cores (nproc), {model}, {platform.system()} {platform.release()}",
        f"versions: Python {platform.python_version()}, {versions}; "
        f"Kafka {bench.stack.kafka.version()} (KRaft, 1 broker), ClickHouse {clickhouse}",
        f"command:  make bench-worker (flock /tmp/tally-bench.lock .venv/bin/python -m bench.worker"
        f"{''.join(' ' + a for a in sys.argv[1:])})",
        f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
    ]


def profile_lines(profile: Profile | str | None, run: WorkerRun | str | None) -> list[str]:
    if profile is None:
        return ["profile: skipped (--no-profile, or py-spy could not be run)"]
    if isinstance(profile, str):
        return [f"profile: failed: {profile}"]
    per_event = run.worker_cpu_s / run.events * 1e6 if isinstance(run, WorkerRun) else 0.0
    lines = [
        f"profile of (a) under py-spy ({profile.samples} samples of the thread holding the GIL; "
        f"the worker used {per_event:.0f} us of CPU per event in that run):",
    ]
    for stage, samples in profile.by_stage.items():
        share = samples / profile.samples
        lines.append(f"  {share:6.1%}  ~{share * per_event:5.1f} us/event  {stage}")
    lines.append("  hottest frames (self time):")
    lines += [f"  {n / profile.samples:6.1%}  {frame}" for frame, n in profile.top_leaves[:10]]
    return lines


def freshness_lines(fresh: Freshness | str | None) -> list[str]:
    if fresh is None:
        return ["freshness: skipped"]
    if isinstance(fresh, str):
        return [f"freshness: failed: {fresh}"]
    return [
        f"freshness at {fresh.achieved_rate:,.0f} events/s for {fresh.seconds:.0f} s (target {fresh.target_rate:,.0f},"
        f" half of (a)), published through ingest.publish.KafkaPublisher, one worker on core 1:",
        f"  ack -> visible in daily_stats, {len(fresh.latencies)} probes: p50 {fresh.percentile(50):.2f} s, "
        f"p99 {fresh.percentile(99):.2f} s, max {max(fresh.latencies, default=float('nan')):.2f} s; "
        f"{fresh.events:,} events, exact: {'yes' if fresh.exact else 'NO ' + fresh.detail}",
        f"  the worker wrote to ClickHouse every {fresh.worker_seconds / max(fresh.flushes, 1):.2f} s on average "
        f"(TALLY_WORKER_FLUSH_INTERVAL_S=1), each write taking {fresh.flush_seconds / max(fresh.flushes, 1):.3f} s",
    ]


def records_lines(
    a: WorkerRun | str, g: WorkerRun | str, h: WorkerRun | str, records: int, events: int, per_key: float
) -> list[str]:
    if not (isinstance(a, WorkerRun) and isinstance(g, WorkerRun) and isinstance(h, WorkerRun)):
        return ["v2 records: a run failed (see the table)"]
    keys_per_s = h.steady_rate * records / events
    window_s = WorkerSettings().dedupe_window_s
    return [
        f"v2 records against v1 one-event records: (g) / (a) = {g.steady_rate / a.steady_rate:.2f} "
        f"({g.steady_rate:,.0f} against {a.steady_rate:,.0f} events/s)",
        f"keyed against unkeyed: (h) / (g) = {h.steady_rate / g.steady_rate:.2f} (target >= 0.9)",
        f"dedupe state: {per_key:,.0f} bytes a key held (memory store: table entry + expiry queue; tracemalloc);",
        f"  at (h)'s rate, {keys_per_s:,.0f} keyed records/s, a worker holds {keys_per_s * window_s:,.0f} keys "
        f"in TALLY_DEDUPE_WINDOW_S={window_s} s: {keys_per_s * window_s * per_key / 2**30:,.1f} GiB",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--counters", type=int, default=2000, help="distinct (label, category, dom_id)")
    parser.add_argument("--freshness-s", type=float, default=30, help="0 to skip")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    say(f"generating {args.events:,} events over {args.counters:,} counters")
    events = backlog(args.events, args.counters)
    with Bench.create(events) as bench:
        seconds = preload(bench.bootstrap, bench.topic, events.messages)
        on_topic = topic_size(bench.bootstrap, bench.topic)
        if on_topic != events.total:
            raise SystemExit(f"pre-load: {on_topic} of {events.total} messages on {bench.topic}")
        say(f"pre-loaded {on_topic:,} events into {bench.topic} in {seconds:.1f}s")
        head = machine(bench)

        a = attempt("(a) one worker, memory store", lambda: run_workers(bench, "a", [1]))
        b = attempt("(b) one worker, RocksDB", lambda: run_workers(bench, "b", [1], store="rocksdb://"))
        floor_argv = [sys.executable, "-m", "bench.worker_floor", "--bootstrap", bench.bootstrap]
        floor_argv += ["--topic", bench.topic, "--events", str(bench.events)]
        c = attempt("(c) raw aiokafka loop", lambda: json.loads(run_json(pinned(1, floor_argv), 600)))
        unkeyed, keyed = as_records(events, keyed=False), as_records(events, keyed=True)
        g = attempt("(g) one worker, v2 records", lambda: run_workers(records_bench(bench, unkeyed, "v2"), "g", [1]))
        h = attempt("(h) one worker, keyed v2", lambda: run_workers(records_bench(bench, keyed, "v2keyed"), "h", [1]))
        per_key = bytes_per_key()
        d = attempt("(d) ClickHouse Kafka engine", lambda: run_kafka_engine(bench))
        e = attempt("(e) two workers", lambda: run_workers(bench, "e", [0, 1]))
        f = attempt("(f) the worker's design without Faust", lambda: run_plain(bench))

        profile: Profile | str | None = None
        profiled: WorkerRun | str | None = None
        if not args.no_profile and py_spy_available():
            raw = bench.tmp / "profile.txt"
            profiled = attempt(
                "(a) under py-spy", lambda: run_workers(bench, "a+py-spy", [1], while_running=recorder(raw, 0))
            )
            if isinstance(profiled, WorkerRun):
                profile = attempt("reading the profile", lambda: read_profile(raw))

        fresh: Freshness | str | None = None
        if args.freshness_s > 0 and isinstance(a, WorkerRun):
            rate = a.steady_rate / 2
            fresh = attempt(
                f"freshness at {rate:,.0f} events/s", lambda: measure_freshness(bench, rate, args.freshness_s)
            )

    rows = [
        worker_row(a, "(a) tally worker, memory store", "1"),
        worker_row(b, "(b) tally worker, RocksDB store", "1"),
        *floor_rows(c),
        engine_row(d),
        worker_row(e, "(e) 2 tally workers (scale-out)", "2"),
        worker_row(f, "(f) prototype: count.py's design, plain aiokafka", "1"),
        worker_row(g, f"(g) tally worker, v2 records ({unkeyed.records:,}), no keys", "1"),
        worker_row(h, f"(h) tally worker, v2 records ({keyed.records:,}), keyed", "1"),
    ]
    if isinstance(profiled, WorkerRun):
        rows.append(worker_row(profiled, "    (a) again, under py-spy", "1"))
    report = [
        f"Tally worker benchmark: {events.total:,} events pre-loaded, {len(events.sent):,} counters, 6 partitions",
        *head,
        "",
        table(rows),
        "",
        "(a), (b), (c), (f) pinned to core 1 (taskset); (e) one worker per core. Kafka and ClickHouse are the stack's",
        "servers, unpinned: with 2 cores they compete with what is measured, most of all in (e).",
        "events/s (steady): from the workers' tally_worker_events_counted_total between 10% and 90% counted.",
        "all counted: from starting the process(es) to SELECT sum(counter) FROM daily_stats = N; exact: every",
        "counter's daily_stats count equals what was pre-loaded, and hourly_stats sums to N.",
        "(d) writes a block every 65,536 rows or 7.5 s (stream_flush_interval_ms): if all N land in its first",
        "flush, its events/s is a floor set by that timer; its events/CPU-s counts the server's CPU over the run.",
        "(f) is not a worker (no rebalance handling, no recovery): it shows what Faust's per-event path costs.",
        "(g), (h): the same events as (a), as v2 records of 10-50 events (one request's events in one partition);",
        "(h) with an idempotency key per record, every one looked up and held by the dedupe stage.",
        "",
        *records_lines(a, g, h, keyed.records, keyed.total, per_key),
        "",
        *freshness_lines(fresh),
        "",
        *profile_lines(profile, profiled),
    ]
    text = "\n".join(report) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    say(f"wrote {args.output}")
    runs = [a, b, e, g, h]
    failed = [r for r in runs if not isinstance(r, WorkerRun) or not r.exact]
    return 1 if failed or isinstance(c, str) else 0


if __name__ == "__main__":
    sys.exit(main())
