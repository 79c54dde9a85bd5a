"""The whole local stack: Kafka, ClickHouse, the schema, ingest and a worker.

Every step is idempotent: ``up`` starts what is not running and leaves the
rest alone; ``down`` stops what runs, services first, servers last.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.cli import worker_web_port
from schema import migrations
from schema.settings import ClickHouseSettings, KafkaSettings, config_from, one_of, positive, whole
from stack import clickhouse as clickhouse_server
from stack import docker as docker_engine
from stack import kafka as kafka_broker
from stack.kafka import KafkaServer, ensure_topic
from stack.ports import free_port
from stack.processes import START_TIMEOUT_S, Managed, http_status

CHECKOUT = Path(__file__).resolve().parent.parent
# What a Faust worker logs once it has recovered its tables and is consuming.
WORKER_READY = b"[^Worker]: Ready"
# The local stack's read token (loopback only; production sets its own TALLY_API_READ_TOKENS).
DEV_READ_TOKEN = "tally-local-dev-read-token"
# TALLY_STACK_VERSIONS: the version pairs the stack runs (Kafka, ClickHouse); "default" is `make test`'s.
VERSION_PAIRS = {
    "default": (kafka_broker.DEFAULT_VERSION, clickhouse_server.DEFAULT_VERSION),
    "current": ("4.4.0", "26.9"),
}


@dataclass(frozen=True)
class StackSettings:
    root: Path = CHECKOUT / ".stack"
    """TALLY_STACK_DIR: data, logs and pid files of the local stack (git-ignored)."""
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    clickhouse_http_port: int = 8123
    """TALLY_CLICKHOUSE_HTTP_PORT"""
    kafka_version: str = kafka_broker.DEFAULT_VERSION
    """TALLY_STACK_KAFKA_VERSION: the Kafka broker the stack runs, 3.9.2 or 4.4.0 (each in its own folder);
    TALLY_STACK_VERSIONS's by default."""
    clickhouse_version: str = clickhouse_server.DEFAULT_VERSION
    """TALLY_STACK_CLICKHOUSE_VERSION: the ClickHouse the stack runs, 18.16 (Debian's) or 26.9 (chdb-core's);
    TALLY_STACK_VERSIONS's by default."""
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8000
    start_timeout_s: float = START_TIMEOUT_S
    """TALLY_STACK_START_TIMEOUT_S: how long a server or service of the stack (and of the tests, benchmarks
    and the soak) may take to be ready once started before its start fails, naming its log."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StackSettings:
        config = config_from(environ)
        pair = one_of(config, "TALLY_STACK_VERSIONS", tuple(VERSION_PAIRS), "default")
        kafka_version, clickhouse_version = VERSION_PAIRS[pair]
        return cls(
            root=Path(config("TALLY_STACK_DIR", default=str(cls.root))).resolve(),
            kafka=KafkaSettings.from_config(config),
            clickhouse=ClickHouseSettings.from_config(config),
            clickhouse_http_port=whole(config, "TALLY_CLICKHOUSE_HTTP_PORT", cls.clickhouse_http_port),
            kafka_version=one_of(config, "TALLY_STACK_KAFKA_VERSION", kafka_broker.VERSIONS, kafka_version),
            clickhouse_version=one_of(
                config, "TALLY_STACK_CLICKHOUSE_VERSION", clickhouse_server.VERSIONS, clickhouse_version
            ),
            ingest_host=config("TALLY_INGEST_HOST", default=cls.ingest_host),
            ingest_port=whole(config, "TALLY_INGEST_PORT", cls.ingest_port),
            start_timeout_s=positive(config, "TALLY_STACK_START_TIMEOUT_S", cls.start_timeout_s),
        )


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        root = settings.root
        host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
        version = settings.kafka_version
        home = kafka_broker.home_of(root, version)
        self.kafka = KafkaServer(
            home,
            self.managed(home.name),
            host=host,
            port=int(port),
            controller_port=int(port) + 1,
            release=kafka_broker.RELEASES[version],
        )
        clickhouse_home = clickhouse_server.home_of(root, settings.clickhouse_version)
        self.clickhouse = clickhouse_server.server(
            settings.clickhouse_version,
            clickhouse_home,
            self.managed(clickhouse_home.name),
            host=settings.clickhouse.host,
            tcp_port=settings.clickhouse.port,
            http_port=settings.clickhouse_http_port,
        )
        self.ingest = self.managed("ingest")
        # Started by `make image` and the image's test only (stack/docker.py); `down` stops it too.
        self.docker = docker_engine.engine(root, self.managed("docker"))

    def managed(self, name: str, root: Path | None = None) -> Managed:
        """A process of this stack, tracked under ``root`` (the stack's own by default)."""
        root = self.settings.root if root is None else root
        return Managed(name, root / "run", root / "logs", self.settings.start_timeout_s)

    def worker(self, worker_id: str) -> Managed:
        return self.managed(f"worker-{worker_id}")

    @property
    def ingest_url(self) -> str:
        return f"http://{self.settings.ingest_host}:{self.settings.ingest_port}"

    # -- pieces ---------------------------------------------------------------

    def start_servers(self) -> None:
        """Kafka and ClickHouse, with the events topic and the schema in place."""
        for name, server in (("Kafka", self.kafka), ("ClickHouse", self.clickhouse)):
            _say(f"{name}: {'started' if server.start() else 'already running'}")
        created = ensure_topic(
            self.settings.kafka.bootstrap,
            self.settings.kafka.topic,
            self.settings.kafka.partitions,
            retention_ms=self.settings.kafka.retention_days * 86_400_000,
        )
        _say(f"topic {self.settings.kafka.topic}: {'created' if created else 'exists'}")
        applied = migrations.apply(self.settings.clickhouse)
        _say(f"schema: {len(applied)} migration(s) applied" if applied else "schema: up to date")

    def start_ingest(self) -> bool:
        if self.ingest.pid() is not None:
            return False
        start_ingest(self.ingest, self.ingest_url, self.service_env())
        return True

    def start_worker(self, worker_id: str = "1") -> bool:
        worker = self.worker(worker_id)
        if worker.pid() is not None:
            return False
        start_worker(worker, worker_id, worker_env(self.settings.root, worker_id, self.service_env()))
        return True

    def workers(self) -> list[Managed]:
        run = self.settings.root / "run"
        return [self.managed(p.stem) for p in sorted(run.glob("worker-*.pid"))] if run.exists() else []

    # -- the whole ------------------------------------------------------------

    def up(self) -> None:
        self.start_servers()
        _say(f"ingest: {'started' if self.start_ingest() else 'already running'}")
        _say(f"worker 1: {'started' if self.start_worker('1') else 'already running'}")
        self.print_status()

    def down(self) -> None:
        for process in [self.ingest, *self.workers()]:
            _say(f"{process.name}: {'stopped' if process.stop() else 'not running'}")
        for process in (self.kafka.process, self.clickhouse.process):
            _say(f"{process.name}: {'stopped' if process.stop() else 'not running'}")
        if self.docker.stop():  # only where the image was built or tested
            _say("docker engine: stopped")

    def print_status(self) -> None:
        s = self.settings
        rows = [
            ("ingest", self.ingest, f"{self.ingest_url}/track/?labels=...  {self.ingest_url}/get_stats/?dom_ids=..."),
            ("kafka", self.kafka.process, f"bootstrap {s.kafka.bootstrap}, topic {s.kafka.topic}"),
            (
                "clickhouse",
                self.clickhouse.process,
                f"native {s.clickhouse.host}:{s.clickhouse.port}, http {s.clickhouse.host}:{s.clickhouse_http_port}, "
                f"database {s.clickhouse.database}",
            ),
            *(
                (w.name, w, f"Faust worker, http://127.0.0.1:{worker_web_port(w.name.removeprefix('worker-'))}/metrics")
                for w in self.workers()
            ),
        ]
        for name, process, where in rows:
            pid = process.pid()
            state = f"running (pid {pid})" if pid else "stopped"
            _say(f"  {name:<11} {state:<22} {where}")
            _say(f"  {'':<11} {'':<22} log: {process.log_file}")
        token = "from TALLY_API_READ_TOKENS" if os.environ.get("TALLY_API_READ_TOKENS") else DEV_READ_TOKEN
        _say(f"  stats page: {self.ingest_url}/stats/  API: {self.ingest_url}/api/v1/  read token: {token}")

    # -- helpers --------------------------------------------------------------

    def service_env(self) -> dict[str, str]:
        """The environment ``tally ingest`` and ``tally worker`` run with on this stack."""
        s = self.settings
        return {
            **os.environ,
            "TALLY_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "TALLY_EVENTS_TOPIC": s.kafka.topic,
            "TALLY_EVENTS_PARTITIONS": str(s.kafka.partitions),
            "TALLY_CLICKHOUSE_HOST": s.clickhouse.host,
            "TALLY_CLICKHOUSE_PORT": str(s.clickhouse.port),
            "TALLY_CLICKHOUSE_DATABASE": s.clickhouse.database,
            "TALLY_INGEST_HOST": s.ingest_host,
            "TALLY_INGEST_PORT": str(s.ingest_port),
            "TALLY_STACK_DIR": str(s.root),
            # Locally, /get_stats/ answers without a token as it always has; /api/v1 and /stats/ take this one.
            "TALLY_API_READ_TOKENS": self._read_token(),
            "TALLY_API_PUBLIC_GET_STATS": os.environ.get("TALLY_API_PUBLIC_GET_STATS", "true"),
        }

    def _read_token(self) -> str:
        return os.environ.get("TALLY_API_READ_TOKENS") or DEV_READ_TOKEN


# -- a stack of its own, apart from the local one (the soak's, the system benchmark's) --------------------------


def own_stack(root: Path, pair: StackSettings, *, topic: str, database: str) -> Stack:
    """Servers and services under ``root`` on free loopback ports, of ``pair``'s versions and start timeout."""
    return Stack(
        StackSettings(
            root=root,
            kafka_version=pair.kafka_version,
            clickhouse_version=pair.clickhouse_version,
            kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port(pair=True)}", topic=topic),
            clickhouse=ClickHouseSettings(port=free_port(), database=database),
            clickhouse_http_port=free_port(),
            ingest_port=free_port(),
            start_timeout_s=pair.start_timeout_s,
        )
    )


def wipe(stack: Stack) -> None:
    """Forget a stack of its own's data (Kafka's jars stay); refuse while a process of it still runs."""
    root = stack.settings.root
    for pid_file in (root / "run").glob("*.pid") if (root / "run").exists() else []:
        if stack.managed(pid_file.stem).pid() is not None:
            raise SystemExit(f"a process of the stack under {root} still runs ({pid_file}); stop it first")
    for child in root.iterdir() if root.exists() else []:
        if child == stack.kafka.home:
            for sub in child.iterdir():
                if sub.name != "libs":
                    shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


# -- starting the services, wherever a stack runs them (``tally up``, the tests, benchmarks, the soak) --------


def start_ingest(process: Managed, url: str, env: Mapping[str, str]) -> int:
    """``tally ingest`` in the background, until ``url``/readyz answers 200; return its pid."""
    return process.start_and_wait(
        [tally_command(), "ingest"], ready=lambda: http_status(f"{url}/readyz") == 200, env=env
    )


def start_worker(process: Managed, worker_id: str, env: Mapping[str, str]) -> int:
    """``tally worker --id ID`` in the background, until it logs that it is ready; return its pid."""
    return process.start_and_wait([tally_command(), "worker", "--id", worker_id], ready=WORKER_READY, env=env)


def worker_env(root: Path, worker_id: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env``, with a stack's defaults for its worker ``worker_id``: its state in ``root/worker-ID``,
    its /metrics on :func:`~deploy.cli.worker_web_port` (what ``env`` sets wins)."""
    return {
        "TALLY_WORKER_DATA_DIR": str(root / f"worker-{worker_id}"),
        "TALLY_WORKER_WEB_PORT": str(worker_web_port(worker_id)),
        **env,
    }


# -- what ``tally`` does differently in a checkout ------------------------------------------------------------


def join_by_hand(worker_id: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a ``tally worker`` started by hand in a checkout, which joins the local stack.

    It takes the first free worker id unless given, the stack's defaults for
    that worker (:func:`worker_env`), and registers its pid file (unless the
    stack started it) so that ``tally status`` and ``tally down`` see it.
    """
    stack = Stack(StackSettings.from_env(environ))
    if worker_id is None:
        worker_id = next(str(n) for n in range(1, 1000) if stack.worker(str(n)).pid() in (None, os.getpid()))
    own = stack.worker(worker_id)
    if own.pid() is None:
        own.run_dir.mkdir(parents=True, exist_ok=True)
        own.pid_file.write_text(f"{os.getpid()}\n")
    return worker_env(stack.settings.root, worker_id, environ)


def worker_state_dirs(environ: Mapping[str, str]) -> list[Path]:
    """The local state of the local stack's workers, which ``tally reset`` in a checkout forgets."""
    return sorted(StackSettings.from_env(environ).root.glob("worker-*"))


def tally_command() -> str:
    """The ``tally`` script beside the running interpreter (the project's venv)."""
    return str(Path(sys.executable).parent / "tally")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
