"""Real ``tally worker`` processes on the benchmark's topic, watched until ClickHouse is exact.

Each run gets its own consumer group (``TALLY_WORKER_APP_ID``), ClickHouse
database, web port and state directory, as the integration tests do, and
removes them afterwards. Two clocks are read while it runs: the workers'
``tally_worker_events_counted_total`` (for the rate, startup excluded) and
``SELECT sum(counter) FROM daily_stats`` (for "done": every event counted and
visible, exactly).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.worker_load import Backlog, Key, topic_size
from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from stack.kafka import delete_topics, ensure_topic
from stack.ports import free_port
from stack.stack import Stack, StackSettings, tally_command, worker_env

PARTITIONS = 6
POLL_S = 0.25
_COUNTED = re.compile(rb"^tally_worker_events_counted_total (\S+)$", re.M)
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads), 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Bench:
    """What every measurement shares: the stack's servers, the pre-loaded topic, and what to clean up."""

    stack: Stack
    topic: str
    backlog: Backlog
    tmp: Path
    databases: list[str] = field(default_factory=list)
    topic_prefixes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    @classmethod
    @contextmanager
    def create(cls, backlog: Backlog) -> Iterator[Bench]:
        stack = Stack(StackSettings.from_env(os.environ))
        topic = f"bench.worker.{uuid.uuid4().hex[:10]}"
        # The stack's servers, started if they are not running (and stopped after), as the tests do.
        started = [server.process for server in (stack.kafka, stack.clickhouse) if server.start()]
        bench = cls(stack, topic, backlog, Path(tempfile.mkdtemp(prefix="tally-bench-worker-")))
        bench.topic_prefixes.append(topic)
        try:
            ensure_topic(bench.bootstrap, topic, PARTITIONS)
            yield bench
        finally:
            bench.cleanup()
            for process in reversed(started):
                process.stop()

    @property
    def bootstrap(self) -> str:
        return self.stack.settings.kafka.bootstrap

    @property
    def events(self) -> int:
        return self.backlog.total

    def new_topic(self, kind: str) -> str:
        name = f"bench.{kind}.{uuid.uuid4().hex[:10]}"
        self.topic_prefixes.append(name)
        ensure_topic(self.bootstrap, name, PARTITIONS)
        return name

    def new_database(self, migrate: bool = True) -> ClickHouseSettings:
        base = self.stack.settings.clickhouse
        settings = ClickHouseSettings(base.host, base.port, f"bench_{uuid.uuid4().hex[:10]}", base.user, base.password)
        self.databases.append(settings.database)
        with clickhouse_client(settings, database="default") as admin:
            migrations.create_database(admin, settings.database)
        if migrate:
            with clickhouse_client(settings) as client:
                migrations.migrate(client)
        return settings

    def new_app_id(self, kind: str) -> str:
        app_id = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
        self.topic_prefixes.append(app_id)  # the changelog and Faust's assignor topics
        self.groups.append(app_id)
        return app_id

    def server_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the stack's Kafka and ClickHouse."""
        return {
            "kafka": cpu_seconds(self.stack.kafka.process.pid()),
            "clickhouse": cpu_seconds(self.stack.clickhouse.process.pid()),
        }

    def cleanup(self) -> None:
        ch = self.stack.settings.clickhouse
        with suppress(Exception), clickhouse_client(ch, database="default") as admin:
            for database in self.databases:
                admin.execute(f"DROP DATABASE IF EXISTS `{database}`")
        for prefix in self.topic_prefixes:
            with suppress(Exception):
                delete_topics(self.bootstrap, prefix)
        if self.groups:
            with suppress(Exception):
                delete_groups(self.bootstrap, self.groups)
        shutil.rmtree(self.tmp, ignore_errors=True)


def delete_groups(bootstrap: str, groups: Sequence[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="tally-bench")
    try:
        known = {group["group_id"] for group in admin.list_groups()}
        doomed = [g for g in groups if g in known]
        if doomed:
            admin.delete_groups(doomed)
    finally:
        admin.close()


def daily_totals(settings: ClickHouseSettings) -> Counter[Key]:
    with clickhouse_client(settings) as client:
        rows = client.execute("SELECT label, category, dom_id, counter FROM daily_stats")
    return Counter({(label, category, dom_id): counter for label, category, dom_id, counter in rows})


def hourly_sum(settings: ClickHouseSettings) -> int:
    with clickhouse_client(settings) as client:
        return int(client.execute("SELECT sum(counter) FROM hourly_stats")[0][0])


def differences(sent: Counter[Key], counted: Counter[Key]) -> dict[Key, tuple[int, int]]:
    return {k: (sent[k], counted[k]) for k in sent.keys() | counted.keys() if sent[k] != counted[k]}


def rate_between(samples: Sequence[tuple[float, float]], total: int, low: float = 0.1, high: float = 0.9) -> float:
    """Events/s between ``low`` and ``high`` of ``total``: the steady state, startup and tail left out."""

    def time_at(level: float) -> float:
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if c0 <= level <= c1 and c1 > c0:
                return t0 + (t1 - t0) * (level - c0) / (c1 - c0)
        raise ValueError(f"the samples never reach {level:.0f}")

    lo, hi = low * total, high * total
    return (hi - lo) / (time_at(hi) - time_at(lo))


@dataclass(frozen=True)
class WorkerRun:
    name: str
    events: int
    counted_in_clickhouse: int
    seconds_to_exact: float
    """From starting the process(es) to daily_stats showing every event."""
    startup_s: float
    """From start to the first event counted (/metrics)."""
    steady_rate: float
    """Events/s between 10% and 90% counted, from the workers' /metrics."""
    worker_cpu_s: float
    server_cpu_s: dict[str, float]
    exact: bool
    changelog_records: int
    """Records the workers wrote to their table's changelog topic."""
    detail: str = ""

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.worker_cpu_s if self.worker_cpu_s else 0.0


def counted(port: int) -> float | None:
    """A worker's events counted so far, or None while its web server is not up."""
    return metric(port, _COUNTED)


def metric(port: int, pattern: re.Pattern[bytes]) -> float | None:
    """One value of a worker's /metrics (``pattern``'s group 1), or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            found = pattern.search(response.read())
    except OSError:
        return None
    return float(found[1]) if found else None


def clickhouse_sum(client: Any) -> int:
    return int(client.execute("SELECT sum(counter) FROM daily_stats")[0][0])


def run_workers(
    bench: Bench,
    name: str,
    cpus: Sequence[int],
    store: str = "memory://",
    timeout_s: float = 600,
    extra_env: dict[str, str] | None = None,
    while_running: Callable[[list[int]], Callable[[], None]] | None = None,
) -> WorkerRun:
    """Start one ``tally worker`` per CPU in ``cpus`` (pinned with taskset) on a fresh group and database.

    ``while_running`` is called with the workers' pids once they serve
    /metrics, and returns what to call when the count is complete (to stop
    the profiler).
    """
    app_id = bench.new_app_id("worker")
    clickhouse = bench.new_database()
    run_dir = bench.tmp / app_id
    ports = [free_port() for _ in cpus]
    env = {
        **os.environ,
        "TALLY_STACK_DIR": str(run_dir),
        "TALLY_KAFKA_BOOTSTRAP": bench.bootstrap,
        "TALLY_EVENTS_TOPIC": bench.topic,
        "TALLY_EVENTS_PARTITIONS": str(PARTITIONS),
        "TALLY_CLICKHOUSE_HOST": clickhouse.host,
        "TALLY_CLICKHOUSE_PORT": str(clickhouse.port),
        "TALLY_CLICKHOUSE_DATABASE": clickhouse.database,
        "TALLY_WORKER_APP_ID": app_id,
        "TALLY_WORKER_STORE": store,
        **(extra_env or {}),
    }
    workers = [bench.stack.managed(f"worker-{i}", root=run_dir) for i in range(1, len(cpus) + 1)]
    servers_before = bench.server_cpu()
    started = time.monotonic()
    pids = [
        worker.start(
            ["taskset", "-c", str(cpu), tally_command(), "worker", "--id", str(i)],
            env=worker_env(run_dir, str(i), {**env, "TALLY_WORKER_WEB_PORT": str(port)}),
        )
        for i, (worker, cpu, port) in enumerate(zip(workers, cpus, ports, strict=True), start=1)
    ]
    finish: Callable[[], None] | None = None
    samples: list[tuple[float, float]] = [(0.0, 0.0)]
    first_counted: float | None = None
    in_clickhouse = 0
    cpu = 0.0
    try:
        with clickhouse_client(clickhouse) as client:
            next_query = 0.0
            while True:
                now = time.monotonic() - started
                reads = [counted(port) for port in ports]
                total = sum(r or 0.0 for r in reads)
                if while_running and finish is None and None not in reads:
                    finish = while_running(pids)  # the workers are Python processes serving /metrics by now
                samples.append((now, max(total, samples[-1][1])))
                if first_counted is None and total > 0:
                    first_counted = now
                if now >= next_query:
                    in_clickhouse = clickhouse_sum(client)
                    next_query = now + 2 * POLL_S
                    if in_clickhouse >= bench.events:
                        break
                dead = [w.log_file for w in workers if w.pid() is None]
                if dead:
                    raise RuntimeError(f"{name}: a worker exited; see {dead[0]}")
                if now > timeout_s:
                    raise RuntimeError(f"{name}: {in_clickhouse} of {bench.events} counted after {timeout_s:.0f}s")
                time.sleep(POLL_S)
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(pid) for pid in pids)
        servers_after = bench.server_cpu()
    finally:
        if finish:
            finish()
        for worker in workers:
            worker.stop(timeout_s=20)
    samples.append((elapsed, float(bench.events)))
    wrong = differences(bench.backlog.sent, daily_totals(clickhouse))
    hourly = hourly_sum(clickhouse)
    detail = "" if not wrong else f"{len(wrong)} counters differ, e.g. {next(iter(wrong.items()))}"
    if hourly != bench.events:
        detail += f" hourly_stats sums to {hourly}"
    return WorkerRun(
        name=name,
        events=bench.events,
        counted_in_clickhouse=in_clickhouse,
        seconds_to_exact=elapsed,
        startup_s=first_counted or elapsed,
        steady_rate=rate_between(samples, bench.events),
        worker_cpu_s=cpu,
        server_cpu_s={k: servers_after[k] - servers_before[k] for k in servers_after},
        exact=not wrong and hourly == bench.events,
        changelog_records=topic_size(bench.bootstrap, f"{app_id}-counts-changelog"),
        detail=detail.strip(),
    )


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]


def run_json(argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> str:
    """Run a helper process to its end; return its last line of output (a JSON document)."""
    process = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[3:6]} failed ({process.returncode}): {process.stderr.strip()[-2000:]}")
    return process.stdout.strip().splitlines()[-1]


def interrupt(process: subprocess.Popen[Any], timeout_s: float = 30) -> None:
    """SIGINT a helper (py-spy writes its profile on it), then wait for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
