"""The whole system under load and faults, then reconciled: ``make soak`` (``SOAK_SECONDS``, default 600).

    python -m soak --seconds 600 [--rate 150] [--results bench/results] [--name soak-600s]

1. Starts a stack of its own, apart from the local one (which other work
   may be using): a Kafka broker and a ClickHouse server on free ports, with
   their data under ``.stack/soak/`` (wiped at each start; ``--root`` to
   move it), the events topic and the schema, ``tally ingest`` and two
   ``tally worker`` processes.
2. Sends the mixed load of :mod:`soak.load` for the duration, and,
   while it runs, one after the other: ``kill -9`` of worker 2 and its
   restart, a restart of the Kafka broker, ClickHouse stopped for 30 s and
   started, a restart of ingest. Meanwhile a watchdog notes (and restarts,
   as a supervisor would) any service that dies on its own, and a poller
   times the probes' freshness.
3. Drains: waits until ClickHouse holds as many events as were answered 2xx
   and stays so.
4. Reconciles (:mod:`soak.report`) per (day, label, category,
   dom_id): 2xx events == ``daily_stats`` == the sum of ``hourly_stats`` ==
   ``/api/v1/counts``, and ``/get_stats/`` per (day, dom_id, label); no
   event of a refused request or a bot counted; the reconciliation metrics
   (``tally_worker_day_events`` summed over workers == 2xx events per day;
   ingest's ``tally_ingest_events_accepted_by_day_total`` == 2xx events of
   the requests it took). Prints a table of every difference.
5. Writes ``<name>.txt`` (the summary: throughput, latency, freshness,
   before/during/after each fault, the reconciliation) and ``<name>.png``
   into the results folder. Exits 1 if anything differs.

The CI version is ``tests/integration/system/test_soak.py``: the same code, shorter.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from schema.settings import ClickHouseSettings, clickhouse_client
from soak.load import PROBE_LABEL, Load, LoadSettings, Outcomes, boundary_for
from soak.report import RECOVERY_LIMIT_S, RECOVERY_PROBE_S
from stack.ports import free_port
from stack.processes import Managed
from stack.stack import CHECKOUT, StackSettings, own_stack, start_ingest, start_worker, wipe, worker_env

READ_TOKEN = "tally-soak-read-token-0123456789"
TOPIC = "soak.events"
DATABASE = "soak"
SESSION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SoakSettings:
    seconds: float = 600.0
    """How long the load runs (longer if the faults take longer)."""
    rate: float = 150.0
    """Requests per second."""
    root: Path = CHECKOUT / ".stack" / "soak"
    results: Path = CHECKOUT / "bench" / "results"
    name: str = ""
    """Results file stem; default ``soak-<seconds>s``."""
    workers: int = 2
    store: str = "rocksdb://"
    """The workers' table store: RocksDB, as docs/limits.md advises for several workers."""
    day_tz: str = "UTC"
    clickhouse_outage_s: float = 30.0
    kafka_outage_s: float = 0.0
    """How long the broker stays stopped before its restart: past the requests' wait (6 s), requests get 503s."""
    worker_down_s: float = SESSION_TIMEOUT_S + 5
    """kill -9 to restart: past the session timeout (a faster restart may stall: docs/limits.md)."""
    window_s: float = 20.0
    """The 'before' and 'after' windows around each fault, and the least time between two faults."""
    drain_timeout_s: float = 240.0
    seed: int = 9

    @property
    def stem(self) -> str:
        return self.name or f"soak-{round(self.seconds)}s"


@dataclass
class Fault:
    name: str
    started: float = 0.0
    recovered: float = 0.0
    """When what was stopped answered again (ready), epoch seconds."""
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """What a soak run saw; :mod:`soak.report` turns it into the report."""

    settings: SoakSettings
    started: float = 0.0
    load_ended: float = 0.0
    drained: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    deaths: list[tuple[float, str]] = field(default_factory=list)
    """Services that died on their own (not killed by a fault), and when."""
    freshness: list[tuple[float, float]] = field(default_factory=list)
    """(ack time, seconds until the probe's count showed in daily_stats)."""
    probes_unseen: int = 0
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    """Every 2 s: the reconciliation metrics and ingest's publish figures, as scraped (see ``sample_metrics``)."""
    outcomes: Outcomes = field(default_factory=Outcomes)
    boundary: datetime | None = None
    notes: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


class SoakStack:
    """Kafka, ClickHouse, ingest and workers of the soak's own, under ``settings.root``."""

    def __init__(self, settings: SoakSettings) -> None:
        self.settings = settings
        # The version pair of the environment's stack (TALLY_STACK_VERSIONS), on servers of the soak's own.
        self.stack = own_stack(settings.root, StackSettings.from_env(os.environ), topic=TOPIC, database=DATABASE)
        self.worker_ports = {str(n): free_port() for n in range(1, settings.workers + 1)}
        self.app_id = "soak-aggregator"

    @property
    def ingest_url(self) -> str:
        return self.stack.ingest_url

    @property
    def clickhouse(self) -> ClickHouseSettings:
        return self.stack.settings.clickhouse

    def processes(self) -> dict[str, Managed]:
        return {"ingest": self.stack.ingest, **{f"worker-{n}": self.stack.worker(n) for n in self.worker_ports}}

    def clean(self) -> None:
        """Wipe the previous run's data (Kafka's jars stay); refuse if something of it still runs."""
        wipe(self.stack)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **self.stack.service_env(),
            "TALLY_WORKER_APP_ID": self.app_id,
            "TALLY_WORKER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
            "TALLY_DAY_TZ": self.settings.day_tz,
            "TALLY_WORKER_STORE": self.settings.store,
            "TALLY_API_READ_TOKENS": READ_TOKEN,
            "TALLY_API_PUBLIC_GET_STATS": "true",
            "TALLY_API_MAX_ROWS": "100000",  # the reconciliation reads every counter in one answer
            "TALLY_API_CACHE_TTL_S": "0",
            **extra,
        }

    def start(self) -> None:
        self.stack.start_servers()
        self.start_ingest()
        starting = [threading.Thread(target=self.start_worker, args=(n,)) for n in self.worker_ports]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        for name, process in self.processes().items():
            if process.pid() is None:
                raise SystemExit(f"{name} did not start; see {process.log_file}")

    def start_ingest(self) -> None:
        start_ingest(self.stack.ingest, self.ingest_url, self.env())

    def start_worker(self, worker_id: str) -> None:
        env = self.env(TALLY_WORKER_WEB_PORT=str(self.worker_ports[worker_id]))
        start_worker(self.stack.worker(worker_id), worker_id, worker_env(self.settings.root, worker_id, env))

    def stop(self) -> None:
        for process in self.processes().values():
            process.stop(timeout_s=20)
        for process in (self.stack.kafka.process, self.stack.clickhouse.process):
            process.stop(timeout_s=60)

    def worker_metrics(self) -> dict[str, str]:
        """Each live worker's /metrics text."""
        found = {}
        for worker_id, port in self.worker_ports.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    found[worker_id] = response.read().decode()
            except OSError:
                pass
        return found

    def ingest_metrics(self) -> str:
        with urllib.request.urlopen(f"{self.ingest_url}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text


class Soak:
    """One run: start, load with faults, drain, reconcile, report."""

    def __init__(self, settings: SoakSettings) -> None:
        self.settings = settings
        self.stack = SoakStack(settings)
        self.run = Run(settings)
        self.busy: set[str] = set()
        """Services a fault is acting on: the watchdog leaves them alone."""
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.faults_done = threading.Event()
        self.load: Load | None = None

    # -- faults ----------------------------------------------------------------------------------

    @contextmanager
    def fault(self, name: str, *services: str) -> Iterator[Fault]:
        fault = Fault(name, started=time.time())
        with self.lock:
            self.busy.update(services)
        say(f"fault: {name}")
        try:
            yield fault
        finally:
            fault.recovered = fault.recovered or time.time()
            with self.lock:
                self.busy.difference_update(services)
            self.run.faults.append(fault)
            say(f"fault: {name}: recovered after {fault.recovered - fault.started:.1f} s")

    def kill_worker(self) -> None:
        worker_id = max(self.stack.worker_ports)
        with self.fault(f"kill -9 worker-{worker_id}, restart after {self.settings.worker_down_s:.0f} s",
                        f"worker-{worker_id}") as fault:  # fmt: skip
            self.stack.stack.worker(worker_id).kill()
            fault.marks["killed"] = time.time()
            time.sleep(self.settings.worker_down_s)
            fault.marks["restarting"] = time.time()
            self.stack.start_worker(worker_id)
            fault.recovered = time.time()

    def restart_kafka(self) -> None:
        kafka = self.stack.stack.kafka
        away = self.settings.kafka_outage_s
        with self.fault("Kafka broker restart" + (f", away {away:.0f} s" if away else "")) as fault:
            kafka.process.stop(timeout_s=60)
            fault.marks["stopped"] = time.time()
            time.sleep(away)
            kafka.start()
            fault.recovered = time.time()

    def stop_clickhouse(self) -> None:
        clickhouse = self.stack.stack.clickhouse
        with self.fault(f"ClickHouse stopped {self.settings.clickhouse_outage_s:.0f} s") as fault:
            clickhouse.process.stop(timeout_s=60)
            fault.marks["stopped"] = time.time()
            time.sleep(self.settings.clickhouse_outage_s)
            clickhouse.start()
            fault.recovered = time.time()

    def restart_ingest(self) -> None:
        with self.fault("ingest restart", "ingest") as fault:
            self.stack.stack.ingest.stop(timeout_s=30)
            fault.marks["stopped"] = time.time()
            assert self.load is not None
            self.load.mark("ingest restart")  # every 2xx from now on is the new process's
            self.stack.start_ingest()
            fault.recovered = time.time()

    def inject(self) -> None:
        """The faults, one after the other, spread over the run."""
        s = self.settings
        faults: list[Callable[[], None]] = [self.kill_worker, self.stop_clickhouse, self.restart_kafka,
                                            self.restart_ingest]  # fmt: skip
        start = self.run.started
        spacing = max(s.seconds - 2 * s.window_s, 0) / len(faults)
        free_at = start + s.window_s
        try:
            for n, inject in enumerate(faults):
                at = max(start + s.window_s + n * spacing, free_at)
                if self.done.wait(max(at - time.time(), 0)):
                    return
                inject()
                # Time to see the recovery, and the window after it, before the next fault.
                free_at = time.time() + max(s.window_s, RECOVERY_LIMIT_S + RECOVERY_PROBE_S)
            self.done.wait(max(free_at - time.time(), 0))
        except Exception as exc:  # a fault that could not be carried out ends the run, reported
            self.run.notes.append(f"fault injection failed: {exc!r}")
            say(f"fault injection failed: {exc!r}")
        finally:
            self.faults_done.set()

    # -- watchers ------------------------------------------------------------------------------------

    def watchdog(self) -> None:
        """Note services that die on their own, and restart them as a supervisor would."""
        while not self.done.wait(1.0):
            for name, process in self.stack.processes().items():
                with self.lock:
                    if name in self.busy:
                        continue
                if process.pid() is None:
                    self.run.deaths.append((time.time(), name))
                    say(f"watchdog: {name} died on its own; restarting it (see {process.log_file})")
                    with self.lock:
                        self.busy.add(name)
                    try:
                        if name == "ingest":
                            self.stack.start_ingest()
                        else:
                            self.stack.start_worker(name.removeprefix("worker-"))
                    except Exception as exc:
                        self.run.notes.append(f"watchdog could not restart {name}: {exc!r}")
                    finally:
                        with self.lock:
                            self.busy.discard(name)

    def sample_metrics(self) -> None:
        """What an operator's Prometheus would see: accepted (ingest) and counted (workers), and 503 causes."""
        from prometheus_client.parser import text_string_to_metric_families

        wanted = {
            "tally_ingest_events_accepted_total": "accepted",
            "tally_ingest_events_in_flight": "in_flight",
            "tally_ingest_publish_failed_total": "failed",
            "tally_worker_day_events": "counted",
            "tally_worker_events_counted_total": "worker_counted_total",
        }
        while not self.done.wait(2.0):
            texts = list(self.stack.worker_metrics().values())
            with suppress(OSError):
                texts.append(self.stack.ingest_metrics())
            figures: dict[str, float] = {}
            for text in texts:
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        name = wanted.get(sample.name)
                        if name == "failed":
                            name = f"failed_{sample.labels['reason']}"
                        if name:
                            figures[name] = figures.get(name, 0.0) + sample.value
            self.run.samples.append((time.time(), figures))

    def watch_probes(self) -> None:
        """Time each probe from its 2xx to its count in daily_stats."""
        seen: set[str] = set()
        client = None
        while not self.done.wait(0.25):
            assert self.load is not None
            waiting = {p: t for p, t in dict(self.load.outcomes.probes_acked).items() if p not in seen}
            if not waiting:
                continue
            try:
                client = client or clickhouse_client(self.stack.clickhouse)
                rows = client.execute(
                    "SELECT DISTINCT dom_id FROM daily_stats WHERE label = %(label)s AND dom_id IN %(ids)s",
                    {"label": PROBE_LABEL, "ids": tuple(waiting)},
                )
            except Exception:
                if client is not None:
                    client.disconnect()
                client = None
                continue
            now = time.time()
            for (dom_id,) in rows:
                seen.add(dom_id)
                self.run.freshness.append((waiting[dom_id], now - waiting[dom_id]))
        if client is not None:
            client.disconnect()
        self.run.probes_unseen = len(set(self.run.outcomes.probes_acked) - seen)

    # -- the run ------------------------------------------------------------------------------------

    def execute(self) -> Run:
        s = self.settings
        run = self.run
        run.load_before = os.getloadavg()
        # clickhouse_driver logs every refused connection with its traceback: ClickHouse is down on purpose.
        logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
        self.stack.clean()
        say(f"soak: own stack under {s.root}")
        self.stack.start()
        tz = ZoneInfo(s.day_tz)
        run.boundary = boundary_for(datetime.now(tz), s.seconds)
        if run.boundary is None:
            run.notes.append("no simulated day boundary: the run is close to a real midnight, which it crosses")
        self.load = Load(
            self.stack.ingest_url,
            LoadSettings(seconds=s.seconds, rate=s.rate, seed=s.seed),
            tz,
            run.boundary,
            keep_going=lambda: not self.faults_done.is_set(),
        )
        threads = [
            threading.Thread(target=t, daemon=True) for t in (self.watchdog, self.watch_probes, self.sample_metrics)
        ]
        run.started = time.time()
        injector = threading.Thread(target=self.inject, daemon=True)
        for thread in [*threads, injector]:
            thread.start()
        say(f"load: {s.rate:.0f} requests/s for {s.seconds:.0f} s (and until the faults are over)")
        try:
            run.outcomes = asyncio.run(self.load.run())
            run.load_ended = time.time()
            injector.join()
            say("load done; draining")
            self.drain()
        finally:
            self.done.set()
            for thread in threads:
                thread.join(timeout=30)
        run.load_after = os.getloadavg()
        return run

    def drain(self) -> None:
        """Until ClickHouse holds as many events as were answered 2xx, and stays so (or stops moving)."""
        want = sum(self.run.outcomes.expected.values())
        deadline = time.time() + self.settings.drain_timeout_s
        last, steady_since = -1, time.time()
        while time.time() < deadline:
            try:
                with clickhouse_client(self.stack.clickhouse) as client:
                    total = int(client.execute("SELECT sum(counter) FROM daily_stats")[0][0] or 0)
            except Exception:
                total = -1
            if total != last:
                last, steady_since = total, time.time()
            steady = time.time() - steady_since
            if (total == want and steady >= 3) or steady >= 30:
                break
            time.sleep(0.5)
        self.run.drained = time.time()
        if last != want:
            self.run.notes.append(f"drain: ClickHouse holds {last} events, 2xx answered {want}")


def say(line: str) -> None:
    sys.stdout.write(f"{datetime.now(UTC).strftime('%H:%M:%S')} {line}\n")
    sys.stdout.flush()


def soak(settings: SoakSettings) -> Any:
    """Run, reconcile and report; return the report (``report.ok`` says whether everything matched)."""
    from soak.report import reconcile, write_report

    runner = Soak(settings)
    try:
        run = runner.execute()
        reconciliation = reconcile(run, runner.stack)
    finally:
        runner.stack.stop()
    return write_report(run, reconciliation, machine_note())


def machine_note() -> str:
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")))
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", "150")))
    parser.add_argument("--root", type=Path, default=SoakSettings.root)
    parser.add_argument("--results", type=Path, default=SoakSettings.results)
    parser.add_argument("--name", default="")
    parser.add_argument("--day-tz", default="UTC")
    parser.add_argument(
        "--store", default=SoakSettings.store, help="the workers' table store (memory:// or rocksdb://)"
    )
    parser.add_argument("--clickhouse-outage", type=float, default=SoakSettings.clickhouse_outage_s)
    parser.add_argument(
        "--kafka-outage", type=float, default=SoakSettings.kafka_outage_s, help="seconds the broker stays stopped"
    )
    parser.add_argument("--window", type=float, default=SoakSettings.window_s, help="seconds before/after a fault")
    args = parser.parse_args(argv)
    settings = SoakSettings(
        seconds=args.seconds, rate=args.rate, root=args.root.resolve(), results=args.results,
        name=args.name, day_tz=args.day_tz, store=args.store,
        clickhouse_outage_s=args.clickhouse_outage, kafka_outage_s=args.kafka_outage, window_s=args.window,
    )  # fmt: skip
    report = soak(settings)
    sys.stdout.write(report.text)
    sys.stdout.write(f"results: {report.txt} {report.png}\n")
    return 0 if report.ok and report.recovered else 1


if __name__ == "__main__":
    sys.exit(main())
