"""How fast ingest takes beacons on one core, beside its two floors. ``make bench-ingest``.

    flock /tmp/tally-bench.lock .venv/bin/python -m bench.ingest [--duration 10] [--profile] [--before DIR] [--rounds N]

Three servers (four with ``--before``), all pinned to core 1 (``taskset -c 1``),
loaded one at a time by ``wrk`` pinned to core 0:

    nginx     (b) ``return 204`` (bench/ingest_nginx.conf): the floor of any HTTP server here
    baseline  (a) the ingest app with a publisher that acks at once (bench/ingest_baseline.py)
    before    with ``--before DIR``: ``tally ingest`` of another checkout (e.g. ``git archive``
              of an older commit), on the same topic: the before of a before/after
    ingest    ``tally ingest``, publishing to the running Kafka (acks=all) on a topic of its own

and four cases: GET beacons with 3 labels, POST JSON batches of 100 events
(bench/ingest_post.lua), and both again with an idempotency key of its own
on every request (bench/ingest_keyed.lua: in the query string for GET, the
``Idempotency-Key`` header for JSON). Each case runs on each server in
turn (``--rounds N``: N times, the median shown), so that what else the
machine does meanwhile falls on all servers alike. For each: requests/s and events/s, latency
p50/p99, the server's own CPU time, and the ratios to (a) and (b). The
table goes to stdout and to bench/results/ingest.txt with the machine, the
versions and the command. After the runs the ingest topic is read: it must
hold at least every event answered 2xx (the promise), else the run fails.

**Per core** is counted two ways. ``req/s`` is what wrk saw; ``per CPU-s``
is requests divided by the CPU seconds the server process used (from
/proc), which is what one core sustains even when other processes share
core 1. The report says how busy core 1 was with other work: on a quiet
machine both columns agree; on a busy one trust ``per CPU-s`` and take
the latencies with care.

``--profile`` adds a run of each case under py-spy (``--gil``: the thread
that holds the interpreter, sampled from core 0) and prints what each part
of a request costs, in CPU microseconds per request: each part's share of
the samples times the server's CPU time per request. ``--checkout DIR``
serves the ingest code of another checkout instead of this one.

Needs: the local stack's Kafka (``make up``), ``wrk`` and ``nginx`` (Debian
packages, installed with apt-get if missing). The Kafka broker is not
pinned: it shares the machine with the server and wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVER_CORE = 1
LOAD_CORE = 0
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
TARGETS = {
    "get3": "≥ 12,000 req/s per core, p99 ≤ 20 ms",
    "json100": "≥ 150,000 events/s per core",
    "get3k": "as GET without a key",
    "json100k": "as JSON without a key",
}
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    path: str
    events_per_request: int
    body: bytes | None = None
    key: str | None = None
    """Where each request carries an idempotency key of its own: ``header``, ``query``, or None (no key)."""


def cases() -> list[Case]:
    return [
        Case("get3", "GET /track/, 3 labels", "/track/?labels=signup:forms:btn1|page_view|add_to_cart:shop:buy-3", 3),
        Case("json100", "POST /track/, JSON batch of 100", "/track/", 100, json_batch(100)),
        Case(
            "get3k",
            "GET, 3 labels, ?idempotency_key",
            "/track/?labels=signup:forms:btn1|page_view|add_to_cart:shop:buy-3",
            3,
            key="query",
        ),
        Case("json100k", "JSON of 100, Idempotency-Key", "/track/", 100, json_batch(100), key="header"),
    ]


def json_batch(n: int) -> bytes:
    """``n`` events over a few dozen counters, with client timestamps of the last minute."""
    now_ms = int(time.time() * 1000)
    labels = ("page_view", "signup_clicked", "add_to_cart", "checkout/step1", "search", "video_play")
    events = [
        {
            "label": labels[i % len(labels)],
            "category": ("nav", "forms", "promo", "")[i % 4],
            "dom_id": f"btn{i % 9}",
            "ts": now_ms - 1000 * (i % 60),
        }
        for i in range(n)
    ]
    return json.dumps({"events": events}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    """CPU seconds the server's processes used during the run."""
    core_busy_s: float
    """CPU seconds core SERVER_CORE was busy during the run, with anything."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu_s(self) -> float:
        return self.requests / self.server_cpu_s if self.server_cpu_s else 0.0

    @property
    def others_share(self) -> float:
        """How much of the server's core other processes took."""
        return max(self.core_busy_s - self.server_cpu_s, 0.0) / self.seconds


# -- processes ---------------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("wrk", "wrk"), ("nginx", "nginx")) if shutil.which(tool) is None]
    if missing:
        print(f"installing {' '.join(missing)} (apt-get)", flush=True)
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=apt_env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=apt_env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(argv: Sequence[str], ready_url: str, env: dict[str, str], log: Path, cwd: Path = ROOT) -> Iterator[int]:
    """Run ``argv`` pinned to the server core, once ``ready_url`` answers 2xx, until the block ends; yield its pid.

    Its output goes to ``log`` (a ``.log`` file).
    """
    from stack.processes import Managed, http_status
    from stack.stack import StackSettings

    server = Managed(log.stem, log.parent / "run", log.parent, StackSettings.from_env(os.environ).start_timeout_s)
    try:
        yield server.start_and_wait(
            ["taskset", "-c", str(SERVER_CORE), *argv],
            ready=lambda: 200 <= http_status(ready_url) < 300,
            env=env,
            cwd=cwd,
        )
    finally:
        server.stop(timeout_s=20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, its threads and its live children (nginx's worker)."""
    total = 0.0
    for each in (pid, *_children(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def core_busy_seconds(core: int) -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / CLOCK_TICK
    return 0.0


# -- load --------------------------------------------------------------------------------------------

_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, case: Case, seconds: float, connections: int, tmp: Path, pid: int) -> Run:
    argv = ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    argv += ["-H", f"User-Agent: {BROWSER_UA}"]
    body_file = tmp / f"{case.name}.json"
    if case.body is not None:
        body_file.write_bytes(case.body)
    if case.key is not None:
        body_args = [str(body_file)] if case.body is not None else []
        argv += ["-s", str(ROOT / "bench" / "ingest_keyed.lua"), url + case.path, "--", case.key, *body_args]
    elif case.body is not None:
        argv += ["-s", str(ROOT / "bench" / "ingest_post.lua"), url + case.path, "--", str(body_file)]
    else:
        argv.append(url + case.path)
    cpu_before, busy_before = cpu_seconds(pid), core_busy_seconds(SERVER_CORE)
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    cpu, busy = cpu_seconds(pid) - cpu_before, core_busy_seconds(SERVER_CORE) - busy_before
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if total is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    latency = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(out)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Run(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        server_cpu_s=cpu,
        core_busy_s=busy,
    )


# -- profile -----------------------------------------------------------------------------------------

# Where a sample's CPU goes: the innermost frame whose file is one of these
# names the part (a json.dumps called by Starlette is Starlette's).
PARTS: list[tuple[str, str]] = [
    ("ingest/metrics.py", "metrics"),
    ("prometheus_client/", "metrics"),
    ("ingest/parse.py", "parse"),
    ("ingest/validate.py", "validate"),
    ("schema/event.py", "validate"),  # the field rules; encode() is told apart below
    ("ingest/guard.py", "guard"),
    ("ingest/publish.py", "publish: ours"),
    ("ingest/batches.py", "publish: ours"),
    ("anyio/", "publish: ours"),  # the thread hop of run_in_threadpool
    ("kafka/", "publish: kafka-python send()"),
    ("ingest/protocol.py", "uvicorn, httptools"),
    ("ingest/", "routes, answers"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn, httptools"),
    ("httptools/", "uvicorn, httptools"),
]
IO_THREAD = "Kafka I/O thread"
PART_ORDER = [
    "uvicorn, httptools",
    "Starlette",
    "routes, answers",
    "parse",
    "validate",
    "guard",
    "metrics",
    "publish: encode",
    "publish: kafka-python send()",
    "publish: ours",
    IO_THREAD,
    "event loop, other",
]


def part_of(frames: Sequence[str]) -> str:
    if any(frame.startswith("Sender.run ") for frame in frames):
        return IO_THREAD
    for frame in reversed(frames):
        where = frame[frame.rfind("(") + 1 :]
        if where.startswith("schema/event.py") and frame.startswith(("encode ", "encode_key ")):
            return "publish: encode"
        for prefix, part in PARTS:
            if where.startswith(prefix):
                return part
    return "event loop, other"


def profile(pid: int, url: str, case: Case, seconds: float, connections: int, tmp: Path) -> tuple[Run, Counter[str]]:
    """CPU microseconds per request, by part."""
    raw = tmp / f"profile-{case.name}.txt"
    py_spy = str(Path(sys.executable).parent / "py-spy")
    spy = subprocess.Popen(
        [
            *("taskset", "-c", str(LOAD_CORE), py_spy, "record", "--pid", str(pid), "--rate", "250"),
            *("--duration", f"{seconds:g}", "--format", "raw", "--nonblocking", "--gil", "--output", str(raw)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = wrk(url, case, seconds, connections, tmp, pid)
    spy.wait(timeout=seconds + 30)
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples[part_of(stack.split(";"))] += int(count)
    total = sum(samples.values()) or 1
    cpu_us_per_request = run.server_cpu_s * 1e6 / max(run.requests, 1)
    return run, Counter({part: n / total * cpu_us_per_request for part, n in samples.items()})


# -- report ------------------------------------------------------------------------------------------


def versions(server_env: dict[str, str]) -> list[str]:
    probe = (
        "import importlib.metadata as m, kafka.record.util as u, platform;"
        "print(platform.python_version(), *(m.version(p) for p in ('starlette','uvicorn','kafka-python')),"
        "'yes' if u.crc32c_c else 'no')"
    )
    py, starlette, uvicorn, kafka, crc = subprocess.run(
        [sys.executable, "-c", probe], env=server_env, check=True, capture_output=True, text=True
    ).stdout.split()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("Copyright")[0].strip()
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    from stack.stack import Stack, StackSettings

    broker = Stack(StackSettings.from_env(os.environ)).kafka.version()
    return [
        f"Python {py}, Starlette {starlette}, uvicorn {uvicorn} (httptools, uvloop), kafka-python {kafka}, "
        f"crc32c in C: {crc}.",
        f"{wrk_v}; {nginx_v.replace('nginx version: ', '')}; Kafka {broker} (one local broker, not pinned).",
    ]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def table(results: dict[tuple[str, str], Run], case_list: list[Case]) -> list[str]:
    head = (
        f"{'case':<32} {'server':<9} {'req/s':>8} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'req/CPU-s':>9} {'ev/CPU-s':>9} {'/(a)':>5} {'/(b)':>5} {'others':>6}"
    )
    lines = [head, "-" * len(head)]
    for case in case_list:
        floor_a = results.get((case.name, "baseline"))
        floor_b = results.get((case.name, "nginx"))
        for server, label in SERVER_LABELS:
            run = results.get((case.name, server))
            if run is None:
                continue
            n = 0 if server == "nginx" else case.events_per_request
            events = f"{run.rps * n:,.0f}" if n else "-"
            events_cpu = f"{run.per_cpu_s * n:,.0f}" if n else "-"
            to_a = f"{run.per_cpu_s / floor_a.per_cpu_s:.2f}" if floor_a else "-"
            to_b = f"{run.per_cpu_s / floor_b.per_cpu_s:.2f}" if floor_b else "-"
            lines.append(
                f"{case.what:<32} {label:<9} {run.rps:>8,.0f} {events:>9} {run.p50_ms:>7.2f} {run.p99_ms:>7.2f} "
                f"{run.per_cpu_s:>9,.0f} {events_cpu:>9} {to_a:>5} {to_b:>5} {run.others_share:>6.0%}"
            )
            if run.non_2xx or run.socket_errors:
                lines.append(f"{'':<32} !! {run.non_2xx} non-2xx answers, {run.socket_errors} socket errors")
        lines.append(f"{'':<32} target: {TARGETS[case.name]}")
    return lines


def cost_table(costs: dict[str, Counter[str]], runs: dict[str, Run], case_list: list[Case]) -> list[str]:
    named = [c for c in case_list if c.name in costs]
    head = f"{'CPU µs per request (py-spy)':<30}" + "".join(f"{c.name:>10}" for c in named)
    lines = [head, "-" * len(head)]
    for part in PART_ORDER:
        if any(costs[c.name][part] >= 0.05 for c in named):
            lines.append(f"{part:<30}" + "".join(f"{costs[c.name][part]:>10.1f}" for c in named))
    lines.append(f"{'total':<30}" + "".join(f"{sum(costs[c.name].values()):>10.1f}" for c in named))
    lines.append(f"{'(req/CPU-s under py-spy)':<30}" + "".join(f"{runs[c.name].per_cpu_s:>10,.0f}" for c in named))
    return lines


# -- main --------------------------------------------------------------------------------------------


def events_on_topic(bootstrap: str, topic: str) -> int:
    """The events on ``topic``, in records of either version (read to its end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    from schema.event import decode_record

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        end = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        events = 0
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=1000, max_records=100_000).values():
                events += sum(len(decode_record(record.value).events) for record in records)
        return events
    finally:
        consumer.close()


def server_argv(server: str, port: int, tmp: Path, checkout: Path) -> tuple[list[str], str]:
    """How to start ``server`` on ``port``, and the URL that says it is ready."""
    url = f"http://127.0.0.1:{port}"
    if server == "nginx":
        (tmp / "nginx.conf").write_text((ROOT / "bench" / "ingest_nginx.conf").read_text().format(port=port, tmp=tmp))
        return ["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"], f"{url}/"
    if server == "baseline":
        uvicorn = [sys.executable, "-m", "uvicorn", "bench.ingest_baseline:app", "--factory", "--no-access-log"]
        if (checkout / "ingest" / "protocol.py").exists():  # as `tally ingest` serves (since it has one)
            uvicorn += ["--http", "ingest.protocol:OneWriteHttpToolsProtocol"]
        return [*uvicorn, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], f"{url}/healthz"
    return [sys.executable, "-m", "deploy.cli", "ingest"], f"{url}/readyz"


SERVERS = ("nginx", "baseline", "before", "ingest")
SERVER_LABELS = (("nginx", "(b) nginx"), ("baseline", "(a) app"), ("before", "before"), ("ingest", "ingest"))


def python_path(checkout: Path) -> str:
    """The checkout's ingest first, bench/ from this one, then whatever the caller had."""
    return os.pathsep.join(
        dict.fromkeys([str(checkout.resolve()), str(ROOT), *os.environ.get("PYTHONPATH", "").split(":")])
    ).rstrip(os.pathsep)


def checkout_commit(checkout: Path) -> str:
    """What ``checkout`` is: its commit, if git can tell (a ``git archive`` copy says so in its COMMIT file)."""
    stamp = checkout / "COMMIT"
    if stamp.exists():
        return stamp.read_text().strip()
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or "not a git checkout"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measured run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--profile", action="store_true", help="also profile each case with py-spy")
    parser.add_argument("--profile-dir", type=Path, help="keep py-spy's raw stacks here (profile-SERVER-CASE.txt)")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="serve the ingest code of this checkout")
    parser.add_argument(
        "--before",
        type=Path,
        help="also serve the ingest code of this checkout (e.g. `git archive` of an older commit), as `before`",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest.txt", help="where the report goes")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every case on every server this many times; report the median"
    )
    parser.add_argument("--only", choices=SERVERS, action="append", help="only these servers")
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: one for the server, one for wrk")
    ensure_tools()

    from stack.stack import Stack, StackSettings

    stack = Stack(StackSettings.from_env(os.environ))
    # The stack's Kafka, started if it is not running (and stopped after), as the worker's benchmark does.
    kafka_started = stack.kafka.process if stack.kafka.start() else None
    try:
        return _run(args, argv, stack.settings.kafka.bootstrap)
    finally:
        if kafka_started is not None:
            kafka_started.stop()


def _run(args: argparse.Namespace, argv: list[str] | None, bootstrap: str) -> int:
    from ingest.settings import IngestSettings
    from stack.kafka import delete_topics, ensure_topic

    topic = f"bench.ingest.{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "PYTHONPATH": python_path(args.checkout),
        "TALLY_KAFKA_BOOTSTRAP": bootstrap,
        "TALLY_EVENTS_TOPIC": topic,
        "TALLY_INGEST_HOST": "127.0.0.1",
        "TALLY_INGEST_WORKERS": "1",
        # The beacon routes only: what is measured, and /readyz then waits for Kafka alone, not ClickHouse.
        "TALLY_INGEST_ROUTES": "track",
    }
    servers = args.only or [s for s in SERVERS if s != "before" or args.before is not None]
    if "before" in servers and args.before is None:
        raise SystemExit("--only before needs --before DIR")
    case_list = cases()
    results: dict[tuple[str, str], Run] = {}
    answered = 0  # events the real ingest answered 2xx, warm-up and profile runs included
    costs: dict[str, Counter[str]] = {}
    profiled: dict[str, Run] = {}
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    ensure_topic(bootstrap, topic, 6)
    try:
        with tempfile.TemporaryDirectory(prefix="tally-bench-ingest-") as tmp_name, ExitStack() as running:
            tmp = Path(tmp_name)
            # Every server runs from the start, idle but for its turn: each case is run on each
            # server in turn, so that a change in what else the machine does meanwhile
            # falls on all of them alike, rather than on whichever server came last.
            urls: dict[str, tuple[str, int]] = {}
            for server in (s for s in SERVERS if s in servers):
                checkout: Path = args.before if server == "before" else args.checkout
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                print(f"{server} on {url}, pinned to core {SERVER_CORE}; wrk on core {LOAD_CORE}", flush=True)
                command, ready = server_argv(server, port, tmp, checkout)
                # In the checkout's directory: `python -m` puts the working directory before PYTHONPATH.
                server_env = {**env, "TALLY_INGEST_PORT": str(port), "PYTHONPATH": python_path(checkout)}
                pid = running.enter_context(
                    serving(command, ready, server_env, tmp / f"{server}.log", checkout.resolve())
                )
                urls[server] = (url, pid)
            measured: dict[tuple[str, str], list[Run]] = {}
            for round_ in range(args.rounds):
                for case in case_list:
                    for server, (url, pid) in urls.items():
                        runs = [wrk(url, case, args.warmup, args.connections, tmp, pid)]
                        runs.append(wrk(url, case, args.duration, args.connections, tmp, pid))
                        measured.setdefault((case.name, server), []).append(run := runs[-1])
                        print(
                            f"  {case.what:<32} {server:<9} {run.rps:>8,.0f} req/s  {run.per_cpu_s:>8,.0f} req/CPU-s  "
                            f"p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms",
                            flush=True,
                        )
                        if server == "ingest" and args.profile and round_ == 0:
                            profiled[case.name], costs[case.name] = profile(
                                pid, url, case, args.duration, args.connections, tmp
                            )
                            runs.append(profiled[case.name])
                        elif args.profile_dir is not None and server == "baseline" and round_ == 0:
                            profile(pid, url, case, args.duration, args.connections, tmp)
                        if args.profile_dir is not None and (tmp / f"profile-{case.name}.txt").exists():
                            args.profile_dir.mkdir(parents=True, exist_ok=True)
                            shutil.move(
                                tmp / f"profile-{case.name}.txt", args.profile_dir / f"profile-{server}-{case.name}.txt"
                            )
                        if server in ("ingest", "before"):
                            answered += sum((r.requests - r.non_2xx) * case.events_per_request for r in runs)
            for place, runs in measured.items():  # the median run of each, by CPU time per request
                results[place] = sorted(runs, key=lambda r: r.per_cpu_s)[len(runs) // 2]
        publishing = "ingest" in servers or "before" in servers
        on_topic = events_on_topic(bootstrap, topic) if publishing else 0
    finally:
        delete_topics(bootstrap, topic)

    given = sys.argv[1:] if argv is None else argv
    command_line = " ".join(["flock /tmp/tally-bench.lock .venv/bin/python -m bench.ingest", *given])
    report = [
        f"Ingest on one core ({started}): {command_line}",
        f"Machine: {machine()}; server pinned to core {SERVER_CORE}, wrk to core {LOAD_CORE}.",
        *versions(env),
        f"wrk: 1 thread, {args.connections} connections, {args.duration:g} s per run after {args.warmup:g} s "
        f"of warm-up, a browser User-Agent; each case on each server in turn, {args.rounds} round(s), the median "
        "(by req/CPU-s) shown. Ingest on a topic of its own: 6 partitions, acks=all, compression "
        f"{IngestSettings.from_env(env).publish.compression}.",
        "req/CPU-s: requests per CPU second of the server process (what one core sustains); /(a), /(b): its",
        "ratio to the floors'. others: the share of the server's core that other processes took meanwhile.",
        "",
        *table(results, case_list),
    ]
    ok = on_topic >= answered
    if args.before is not None:
        report += ["", f"before: the ingest of {args.before} ({checkout_commit(args.before)}), on the same topic."]
    if publishing:
        verdict = "every one is there" if ok else "EVENTS MISSING"
        report += ["", f"Events ingest answered 2xx: {answered:,}; on its topic afterwards: {on_topic:,}: {verdict}."]
        report += [
            "(Keyed cases: every request a key of its own, in the header or the query string, as distinct requests.)"
        ]
    if costs:
        report += ["", *cost_table(costs, profiled, case_list)]
    text = "\n".join(report) + "\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
