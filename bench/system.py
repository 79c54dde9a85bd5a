"""The whole system on one box: ``make bench-system`` (= flock /tmp/tally-bench.lock .venv/bin/python -m bench.system).

For each version pair (``default``: Kafka 3.9.2 + ClickHouse 18.16;
``current``: Kafka 4.4.0 + ClickHouse 26.9, chdb-core's), on servers of the
benchmark's own on free loopback ports (``stack.stack.own_stack``, data under
``.stack/system``, never the local stack's):

1. Tally: ``tally ingest`` and one ``tally worker`` (memory store), nothing
   pinned: the servers, the services, the load generator and the poller
   share the machine's 2 cores as they would on one small box. The load
   (:mod:`bench.system_load`, a process of its own) steps its offered rate
   up: ``--start`` events/s, doubled while a step holds, then once between
   the last rate that held and the first that did not (``next_rate``); each
   step runs ``--step-s`` seconds and drains for at most ``--drain-s``.
   A step *holds* (``verdict``) when every request got a 2xx, 2xx events
   came at 95 % of the offered rate or more, every counter of the step reads
   back from ClickHouse's ``daily_stats`` (what ``/api/v1`` and
   ``/get_stats/`` read) equal to what got a 2xx, every probe became visible
   through ``/get_stats/``, and freshness (a probe's 2xx to its count
   showing in ``/get_stats/``, polled every 0.1 s with the cache off) has
   p99 ≤ 5 s. Then one more step at half the highest rate that held: the
   freshness a site sees at ordinary load (target p99 ≤ 2 s).
2. What a ClickHouse user would build instead (:mod:`bench.worker_clickhouse_kafka`'s
   tables): the worker stopped, a Kafka engine table on the same topic (its
   group's offsets set to the topic's end first, each record read as one
   line), a materialized view that ARRAY JOINs each v2 record's events into
   a SummingMergeTree, read with ``sum() ... GROUP BY``. The same load, at
   half the highest rate and at the highest; freshness is polled with that
   query. If the engine cannot be created or counts nothing, the row says so.

Every step uses labels of its own (``t3.``, ``k1.`` ...), so each step's
exactness is its own. Prints the figures side by side (Tally and the Kafka
engine, default and current pair) and writes them to bench/results/system.txt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.worker_clickhouse_kafka import COUNTS, QUEUE, VIEW, commit_beginning
from bench.worker_freshness import FLUSHES
from bench.worker_runs import cpu_seconds, metric
from schema.settings import ClickHouseSettings, clickhouse_client
from soak.report import pct
from stack.ports import free_port
from stack.stack import (
    CHECKOUT,
    VERSION_PAIRS,
    WORKER_READY,
    Stack,
    StackSettings,
    own_stack,
    start_ingest,
    start_worker,
    wipe,
    worker_env,
)

RESULTS = CHECKOUT / "bench" / "results" / "system.txt"
ROOT = CHECKOUT / ".stack" / "system"
TOPIC = "system.events"
DATABASE = "tally_system"
ENGINE_DATABASE = "kafka_engine"
READ_TOKEN = "tally-system-bench-read-token-0123"
FRESHNESS_LIMIT_S = 5.0
HALF_RATE_TARGET_S = 2.0
KEPT_UP = 0.95
"""A step holds only if its events answered 2xx per second of load (the load's end included: requests still
queued are sent then) are at least this share of the offered rate."""
POLL_S = 0.1
ENGINE = "kafka engine"


# -- the step logic (pure) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    holds: bool
    why: str
    """Empty when it holds; else what failed, e.g. ``p99 6.1 s > 5 s``."""


def verdict(
    *,
    offered: float,
    achieved: float,
    non_2xx: int,
    wrong: int,
    unseen: int,
    p99: float,
    limit_s: float = FRESHNESS_LIMIT_S,
) -> Verdict:
    """Whether a step held: the offered rate answered 2xx and counted exactly, freshness p99 within ``limit_s``."""
    reasons = []
    if achieved < KEPT_UP * offered:
        reasons.append(f"2xx at {achieved / offered:.0%} of the offered rate")
    if non_2xx:
        reasons.append(f"{non_2xx} requests not 2xx")
    if wrong:
        reasons.append(f"{wrong} counters differ")
    if unseen:
        reasons.append(f"{unseen} probes never visible")
    if not p99 <= limit_s:  # NaN (no probe seen) fails too
        reasons.append(f"p99 {p99:.1f} s > {limit_s:g} s")
    return Verdict(not reasons, ", ".join(reasons))


def next_rate(history: Sequence[tuple[float, bool]], start: float, factor: float, max_steps: int) -> float | None:
    """The next rate to offer, given (rate, held) so far; None when done.

    ``start``, then ``factor`` times the last while every step holds; after
    the first that does not, once the geometric mean of the highest that
    held and the lowest that did not; done after that, or when the first
    step fails, or after ``max_steps``.
    """
    if len(history) >= max_steps:
        return None
    if not history:
        return start
    held = [rate for rate, ok in history if ok]
    failed = [rate for rate, ok in history if not ok]
    if not failed:
        return history[-1][0] * factor
    if not held:
        return None
    low, high = max(held), min(failed)
    if high / low <= math.sqrt(factor) * 1.01:
        return None
    return math.sqrt(low * high)


def highest_held(history: Sequence[tuple[float, bool]]) -> float | None:
    return max((rate for rate, ok in history if ok), default=None)


# -- one step -------------------------------------------------------------------------------------------------------


@dataclass
class Step:
    pipeline: str
    """``tally`` or ``kafka engine``."""
    label: str
    """What the step was for: ``step``, ``half``, ``highest``."""
    prefix: str
    rate: float
    """Offered events/s."""
    seconds: float = 0.0
    offered: int = 0
    not_sent: int = 0
    events_2xx: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    counters: int = 0
    wrong: int = 0
    freshness: list[float] = field(default_factory=list)
    unseen: int = 0
    request_p99: float = float("nan")
    cores: dict[str, float] = field(default_factory=dict)
    """CPU-s per wall-s of each process over the load."""
    write_every: float = float("nan")
    """Seconds of load per ClickHouse write of the worker (its tally_worker_flush_seconds_count)."""
    anomalies: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def engine(self) -> bool:
        """Whether the step measures the Kafka engine's pipeline (else Tally's)."""
        return self.pipeline == ENGINE

    @property
    def achieved(self) -> float:
        return self.events_2xx / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def p(self, q: float) -> float:
        return pct(self.freshness, q)

    @property
    def verdict(self) -> Verdict:
        if self.error:
            return Verdict(False, self.error)
        return verdict(
            offered=self.rate,
            achieved=self.achieved,
            non_2xx=self.non_2xx + len(self.anomalies),
            wrong=self.wrong,
            unseen=self.unseen,
            p99=self.p(99),
        )


class Pair:
    """One version pair's servers, ingest and worker, of the benchmark's own."""

    def __init__(self, name: str, step_s: float, drain_s: float) -> None:
        here = StackSettings.from_env(os.environ)
        kafka_version, clickhouse_version = VERSION_PAIRS[name]
        pair = StackSettings(
            kafka_version=kafka_version, clickhouse_version=clickhouse_version, start_timeout_s=here.start_timeout_s
        )
        self.name = name
        self.stack: Stack = own_stack(ROOT / name, pair, topic=TOPIC, database=DATABASE)
        self.worker = self.stack.worker("1")
        self.worker_port = free_port()
        self.step_s, self.drain_s = step_s, drain_s
        self.engine_ready = False
        self.engine_error = ""

    @property
    def clickhouse(self) -> ClickHouseSettings:
        return self.stack.settings.clickhouse

    def env(self) -> dict[str, str]:
        return {
            **self.stack.service_env(),
            "TALLY_API_READ_TOKENS": READ_TOKEN,
            "TALLY_API_PUBLIC_GET_STATS": "true",
            "TALLY_API_CACHE_TTL_S": "0",
            "TALLY_WORKER_APP_ID": "system-bench",
            "TALLY_WORKER_WEB_PORT": str(self.worker_port),
        }

    def start(self) -> None:
        wipe(self.stack)
        self.stack.start_servers()
        start_ingest(self.stack.ingest, self.stack.ingest_url, self.env())
        start_worker(self.worker, "1", worker_env(self.stack.settings.root, "1", self.env()))

    def restart_worker(self, tally: str) -> None:
        """The worker again, from another ``tally`` script (another checkout's): same group, same table."""
        self.worker.stop(timeout_s=20)
        env = worker_env(self.stack.settings.root, "1", self.env())
        self.worker.start_and_wait([tally, "worker", "--id", "1"], ready=WORKER_READY, env=env)

    def writes(self) -> float:
        return (metric(self.worker_port, FLUSHES) or 0.0) if self.worker.pid() else 0.0

    def stop(self) -> None:
        for process in (self.stack.ingest, self.worker):
            process.stop(timeout_s=20)
        for process in (self.stack.kafka.process, self.stack.clickhouse.process):
            process.stop(timeout_s=60)

    def versions(self) -> str:
        with clickhouse_client(self.clickhouse, database="default") as client:
            clickhouse = client.execute("SELECT version()")[0][0]
        return f"Kafka {self.stack.kafka.version()}, ClickHouse {clickhouse}"

    def pids(self) -> dict[str, int | None]:
        return {
            "ingest": self.stack.ingest.pid(),
            "worker": self.worker.pid(),
            "kafka": self.stack.kafka.process.pid(),
            "clickhouse": self.stack.clickhouse.process.pid(),
        }

    # -- the Kafka engine ---------------------------------------------------------------------------------------

    def start_engine(self) -> None:
        """Stop the worker; the Kafka engine's tables on the events topic, from its end."""
        self.worker.stop(timeout_s=20)
        settings = self.clickhouse
        group = "system-bench-kafka-engine"
        commit_beginning(settings_bootstrap(self.stack), TOPIC, group, end=True)
        statements = (
            ("the SummingMergeTree", COUNTS),
            ("the Kafka engine table", QUEUE),
            ("the materialized view", VIEW),
        )
        with clickhouse_client(settings, database="default") as admin:
            admin.execute(f"CREATE DATABASE IF NOT EXISTS {ENGINE_DATABASE}")
        with clickhouse_client(settings, database=ENGINE_DATABASE) as client:
            for what, sql in statements:
                try:
                    client.execute(sql, {"brokers": settings_bootstrap(self.stack), "topic": TOPIC, "group": group})
                except Exception as exc:  # an engine this build does not have, or cannot run
                    message = " ".join(str(exc).split("Stack trace")[0].split())
                    self.engine_error = f"creating {what} failed: {type(exc).__name__}: {message}"[:300]
                    return
        self.engine_ready = True

    # -- reading back ---------------------------------------------------------------------------------------------

    def counts(self, engine: bool, prefix: str) -> Counter[tuple[str, str, str]]:
        """Every counter of the step's labels, summed over days, as the pipeline's readers see it."""
        table, database = ("counts", ENGINE_DATABASE) if engine else ("daily_stats", DATABASE)
        sql = (
            f"SELECT label, category, dom_id, sum(counter) FROM {table} WHERE label LIKE %(p)s"
            " GROUP BY label, category, dom_id"
        )
        with clickhouse_client(self.clickhouse, database=database) as client:
            rows = client.execute(sql, {"p": prefix + "%"})
        return Counter({(label, category, dom_id): int(n) for label, category, dom_id, n in rows})

    def visible(self, engine: bool, prefix: str, probes: Sequence[str], client: Any) -> set[str]:
        """Which of ``probes`` show a count: through /get_stats/ (Tally), or the engine's table."""
        if not probes:
            return set()
        if not engine:
            query = urllib.parse.urlencode({"dom_ids": "|".join(probes) + "|"})
            with urllib.request.urlopen(f"{self.stack.ingest_url}/get_stats/?{query}", timeout=5) as response:
                rows = json.loads(response.read())
            return {dom_id for dom_id, counter, _label in rows if counter > 0}
        rows = client.execute(
            "SELECT dom_id FROM counts WHERE label = %(label)s GROUP BY dom_id", {"label": f"{prefix}probe"}
        )
        return {dom_id for (dom_id,) in rows}


def settings_bootstrap(stack: Stack) -> str:
    return stack.settings.kafka.bootstrap


def run_step(pair: Pair, step: Step) -> Step:
    """Offer ``step.rate`` for the pair's step time, then drain; fill in what came back."""
    argv = [sys.executable, "-m", "bench.system_load", "--url", pair.stack.ingest_url]
    argv += ["--rate", f"{step.rate:.0f}", "--seconds", str(pair.step_s), "--prefix", step.prefix]
    pids = pair.pids()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own_before = time.process_time()
    writes_before = pair.writes()
    started = time.monotonic()
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    acked: dict[str, float] = {}
    summary: dict[str, Any] = {}
    reader = threading.Thread(target=_read_load, args=(load, acked, summary), daemon=True)
    reader.start()
    seen: dict[str, float] = {}
    load_ended: float | None = None
    drained = False
    database = ENGINE_DATABASE if step.engine else DATABASE
    with clickhouse_client(pair.clickhouse, database=database) as client:
        while True:
            waiting = [p for p in list(acked) if p not in seen][:100]
            try:
                found = pair.visible(step.engine, step.prefix, waiting, client)
            except OSError as exc:
                step.anomalies.append(f"probe poll failed: {exc}")
                found = set()
            now = time.time()
            for probe in found:
                seen.setdefault(probe, now)
            if load_ended is None and load.poll() is not None:
                reader.join(timeout=10)
                load_ended = time.monotonic()
                wall = load_ended - started
                after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                step.cores = {name: (after[name] - before[name]) / wall for name in pids if pids[name]}
                step.cores["load generator"] = float(summary.get("cpu_s", 0.0)) / wall
                step.cores["bench poller"] = (time.process_time() - own_before) / wall
                writes = pair.writes() - writes_before
                step.write_every = wall / writes if writes else float("nan")
            if load_ended is not None:
                if set(acked) <= set(seen):
                    drained = _exact(pair, step, summary)
                if drained or time.monotonic() - load_ended > pair.drain_s:
                    break
            time.sleep(POLL_S)
    if load.returncode != 0 or not summary:
        step.error = f"the load generator failed ({load.returncode})"
        return step
    if not drained:
        _exact(pair, step, summary)
    step.seconds = float(summary["seconds"])
    step.offered = int(summary["offered"])
    step.not_sent = int(summary["not_sent"])
    step.events_2xx = int(summary["events_2xx"])
    step.statuses = dict(summary["statuses"])
    step.request_p99 = float(summary["latency_p99"])
    step.anomalies += list(summary["anomalies"])
    step.freshness = [seen[p] - acked[p] for p in acked if p in seen]
    step.unseen = len([p for p in acked if p not in seen])
    return step


def _exact(pair: Pair, step: Step, summary: dict[str, Any]) -> bool:
    expected = Counter({tuple(key.split("\t")): n for key, n in summary["expected"].items()})
    counted = pair.counts(step.engine, step.prefix)
    step.counters = len(expected)
    step.wrong = sum(1 for key in expected.keys() | counted.keys() if expected[key] != counted[key])
    return step.wrong == 0


def _read_load(load: subprocess.Popen[str], acked: dict[str, float], summary: dict[str, Any]) -> None:
    assert load.stdout is not None
    for line in load.stdout:
        doc = json.loads(line)
        if "probe" in doc:
            acked[doc["probe"]] = doc["acked"]
        else:
            summary.update(doc)


# -- a pair's whole run ---------------------------------------------------------------------------------------------


@dataclass
class PairRun:
    name: str
    versions: str = ""
    steps: list[Step] = field(default_factory=list)
    highest: float | None = None
    half: Step | None = None
    baseline: Step | None = None
    """The half-rate step again, with the worker of ``--baseline-worker``'s checkout."""
    engine: list[Step] = field(default_factory=list)
    engine_error: str = ""
    error: str = ""


def run_pair(name: str, args: argparse.Namespace) -> PairRun:
    run = PairRun(name)
    pair = Pair(name, args.step_s, args.drain_s)
    say(f"{name}: starting Kafka, ClickHouse, ingest and a worker under {pair.stack.settings.root}")
    try:
        pair.start()
        run.versions = pair.versions()
        history: list[tuple[float, bool]] = []
        n = 0
        while (rate := next_rate(history, args.start, 2.0, args.max_steps)) is not None:
            n += 1
            step = run_step(pair, Step("tally", "step", f"t{n}.", rate))
            run.steps.append(step)
            history.append((rate, step.verdict.holds))
            say(f"{name}: {describe(step)}")
        run.highest = highest_held(history)
        if run.highest is None:
            return run
        n += 1
        run.half = run_step(pair, Step("tally", "half", f"t{n}.", run.highest / 2))
        say(f"{name}: {describe(run.half)}")
        if args.baseline_worker:
            pair.restart_worker(str(args.baseline_worker / ".venv" / "bin" / "tally"))
            n += 1
            run.baseline = run_step(pair, Step("tally, baseline worker", "half", f"t{n}.", run.highest / 2))
            say(f"{name}: {describe(run.baseline)}")
        pair.start_engine()
        if not pair.engine_ready:
            run.engine_error = pair.engine_error
            say(f"{name}: the Kafka engine: {run.engine_error}")
            return run
        for k, (what, rate) in enumerate((("half", run.highest / 2), ("highest", run.highest)), start=1):
            step = run_step(pair, Step(ENGINE, what, f"k{k}.", rate))
            run.engine.append(step)
            say(f"{name}: {describe(step)}")
            if step.events_2xx and not step.freshness and not pair.counts(True, step.prefix):
                run.engine_error = f"the Kafka engine counted nothing in {args.drain_s:g} s after the load"
                break
    except Exception as exc:
        traceback.print_exc()
        run.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        pair.stop()
    return run


def describe(step: Step) -> str:
    v = step.verdict
    return (
        f"{step.pipeline} {step.label} {step.rate:,.0f}/s: {step.achieved:,.0f}/s 2xx, p50 {step.p(50):.2f} s p99 "
        f"{step.p(99):.2f} s, {step.wrong} of {step.counters} counters differ -> {'holds' if v.holds else v.why}"
    )


# -- the report ----------------------------------------------------------------------------------------------------

CORES = ("ingest", "worker", "kafka", "clickhouse", "load generator")


def step_row(step: Step) -> list[str]:
    v = step.verdict
    statuses = " ".join(f"{k}:{n:,}" for k, n in sorted(step.statuses.items()))
    return [
        step.pipeline,
        step.label,
        f"{step.rate:,.0f}",
        f"{step.achieved:,.0f}",
        statuses + (f" not sent:{step.not_sent:,}" if step.not_sent else ""),
        "yes" if step.counters and not step.wrong else f"NO ({step.wrong} of {step.counters})",
        f"{step.p(50):.2f}",
        f"{step.p(99):.2f}",
        f"{step.request_p99 * 1000:,.0f}",
        f"{step.write_every:.2f}" if step.write_every == step.write_every else "-",
        " ".join(f"{step.cores.get(name, 0.0):.2f}" for name in CORES),
        "holds" if v.holds else v.why,
    ]


HEADER = [
    "pipeline",
    "step",
    "offered ev/s",
    "2xx ev/s",
    "answers",
    "exact",
    "fresh p50 s",
    "fresh p99 s",
    "req p99 ms",
    "write every s",
    "cores: " + " / ".join(CORES),
    "verdict",
]


def table(rows: list[list[str]]) -> str:
    cells = [HEADER, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def summary_lines(runs: list[PairRun], baseline: str = "") -> list[str]:
    lines = ["summary (highest rate that held; freshness = 2xx -> visible through the read side):"]
    for run in runs:
        if run.error and run.highest is None:
            lines.append(f"  {run.name}: failed: {run.error}")
            continue
        if run.highest is None:
            lines.append(f"  {run.name} ({run.versions}): no step held (first: {run.steps[0].verdict.why})")
            continue
        half = run.half
        half_text = (
            f"at half ({half.rate:,.0f}/s) p50 {half.p(50):.2f} s, p99 {half.p(99):.2f} s "
            f"(target <= {HALF_RATE_TARGET_S:g} s: {'met' if half.p(99) <= HALF_RATE_TARGET_S else 'NOT met'}), "
            f"exact: {'yes' if not half.wrong else 'NO'}"
            if half
            else "half-rate step missing"
        )
        lines.append(f"  {run.name} ({run.versions}): Tally holds {run.highest:,.0f} events/s; {half_text}")
        if run.baseline:
            b = run.baseline
            lines.append(
                f"    the same half-rate step with the worker of {baseline}: p50 {b.p(50):.2f} s, p99 {b.p(99):.2f} s, "
                f"a write every {b.write_every:.2f} s (this worker: every {half.write_every if half else 0:.2f} s)"
            )
        if run.engine_error and not run.engine:
            lines.append(f"    Kafka engine: not measured: {run.engine_error}")
        for step in run.engine:
            exact = "yes" if step.counters and not step.wrong else f"NO ({step.wrong} of {step.counters} differ)"
            lines.append(
                f"    Kafka engine at {step.rate:,.0f}/s: p50 {step.p(50):.2f} s, p99 {step.p(99):.2f} s, "
                f"{step.unseen} probes never visible, exact: {exact}"
            )
        if run.error:
            lines.append(f"    stopped early: {run.error}")
    return lines


def report(runs: list[PairRun], args: argparse.Namespace, command: str) -> str:
    rows = []
    for run in runs:
        for step in [*run.steps, *(s for s in (run.half, run.baseline) if s), *run.engine]:
            rows.append([f"{run.name}: {step_row(step)[0]}", *step_row(step)[1:]])
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return "\n".join(
        [
            "Tally, the whole system on one box: ingest -> Kafka -> one worker -> ClickHouse, beside",
            "ingest -> Kafka -> ClickHouse's Kafka engine -> materialized view -> SummingMergeTree, at the same load",
            f"machine:  {os.cpu_count()} cores (nproc), {model}, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}",
            "pairs:    " + "; ".join(f"{run.name}: {run.versions or '?'}" for run in runs),
            f"command:  {command}",
            f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"load:     {args.step_s:g} s a step (then up to {args.drain_s:g} s to drain), from "
            f"{args.start:,.0f} events/s, doubled while a step holds, then once between; JSON batches of",
            "          2-50 events (3 in 4 requests) and",
            "          seed GETs of 1-3 labels, open loop from one process (bench/system_load.py); a probe every 0.2 s",
            "",
            table(rows),
            "",
            "2xx ev/s: events answered 2xx per second of load. exact: every counter of the step read back (Tally:",
            "daily_stats, what /api/v1 and /get_stats/ read; Kafka engine: sum() GROUP BY on its SummingMergeTree)",
            "equals its 2xx events. fresh: a probe's 2xx to its count showing (Tally: /get_stats/, cache off; Kafka",
            "engine: its table), polled every 0.1 s. req p99: request latency from when it was due. write every:",
            "seconds of load per ClickHouse write of the worker (TALLY_WORKER_FLUSH_INTERVAL_S=1). cores: CPU-s",
            "per second of load of each process (nothing pinned, 2 cores in all). A step holds when every request",
            f"got a 2xx, 2xx ev/s >= {KEPT_UP:.0%} of offered, every count is exact and fresh p99 <= "
            f"{FRESHNESS_LIMIT_S:g} s.",
            "",
            *summary_lines(runs, baseline_name(args.baseline_worker)),
        ]
    )


def baseline_name(checkout: Path | None) -> str:
    """``--baseline-worker``'s checkout and its commit, as the report names it."""
    if checkout is None:
        return ""
    commit = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"{checkout} ({commit[:70]})"


def say(line: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="default,current", help="comma-separated: default, current")
    parser.add_argument("--start", type=float, default=1000, help="events/s of the first step")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--step-s", type=float, default=20)
    parser.add_argument("--drain-s", type=float, default=30)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--baseline-worker",
        type=Path,
        help="a checkout (with its .venv) whose worker runs the half-rate step again, for a before/after",
    )
    args = parser.parse_args(argv)
    command = "make bench-system (flock /tmp/tally-bench.lock .venv/bin/python -m bench.system"
    command += "".join(" " + a for a in (sys.argv[1:] if argv is None else argv)) + ")"
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = [p for p in pairs if p not in VERSION_PAIRS]
    if unknown:
        parser.error(f"unknown pair(s) {unknown}; known: {', '.join(VERSION_PAIRS)}")
    runs = [run_pair(name, args) for name in pairs]
    text = report(runs, args, command) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    say(f"wrote {args.output}")
    return 0 if all(run.highest is not None and not run.error for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
