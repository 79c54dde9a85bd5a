"""The whole local stack: Kafka, ClickHouse, the schema, ingest and a worker.

Every step is idempotent: ``up`` starts what is not running and leaves the
rest alone; ``down`` stops what runs, services first, servers last.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.config import Config

from schema import migrations
from schema.settings import ClickHouseSettings, KafkaSettings, clickhouse_client
from stack.clickhouse import ClickHouseServer
from stack.kafka import KafkaServer, ensure_topic
from stack.processes import Managed, http_status

CHECKOUT = Path(__file__).resolve().parent.parent
# What a Faust worker logs once it has recovered its tables and is consuming.
WORKER_READY = b"[^Worker]: Ready"
# The local stack's read token (loopback only; production sets its own TALLY_API_READ_TOKENS).
DEV_READ_TOKEN = "tally-local-dev-read-token"


@dataclass(frozen=True)
class StackSettings:
    root: Path = CHECKOUT / ".stack"
    """TALLY_STACK_DIR: data, logs and pid files of the local stack (git-ignored)."""
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    clickhouse_http_port: int = 8123
    """TALLY_CLICKHOUSE_HTTP_PORT"""
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8000
    partitions: int = 6
    """TALLY_EVENTS_PARTITIONS: partitions of the events topic when it is created."""
    retention_days: int = 30
    """TALLY_EVENTS_RETENTION_DAYS: how long the events topic keeps events (replays reach that far)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StackSettings:
        config = Config(environ=dict(environ))
        return cls(
            root=Path(config("TALLY_STACK_DIR", default=str(cls.root))).resolve(),
            kafka=KafkaSettings.from_config(config),
            clickhouse=ClickHouseSettings.from_config(config),
            clickhouse_http_port=config("TALLY_CLICKHOUSE_HTTP_PORT", cast=int, default=cls.clickhouse_http_port),
            ingest_host=config("TALLY_INGEST_HOST", default=cls.ingest_host),
            ingest_port=config("TALLY_INGEST_PORT", cast=int, default=cls.ingest_port),
            partitions=config("TALLY_EVENTS_PARTITIONS", cast=int, default=cls.partitions),
            retention_days=config("TALLY_EVENTS_RETENTION_DAYS", cast=int, default=cls.retention_days),
        )


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        root = settings.root
        host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
        self.kafka = KafkaServer(
            root / "kafka", self.managed("kafka"), host=host, port=int(port), controller_port=int(port) + 1
        )
        self.clickhouse = ClickHouseServer(
            root / "clickhouse",
            self.managed("clickhouse"),
            host=settings.clickhouse.host,
            tcp_port=settings.clickhouse.port,
            http_port=settings.clickhouse_http_port,
        )
        self.ingest = self.managed("ingest")

    def managed(self, name: str) -> Managed:
        return Managed(name, self.settings.root / "run", self.settings.root / "logs")

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
            self.settings.partitions,
            retention_ms=self.settings.retention_days * 86_400_000,
        )
        _say(f"topic {self.settings.kafka.topic}: {'created' if created else 'exists'}")
        applied = self.migrate()
        _say(f"schema: {len(applied)} migration(s) applied" if applied else "schema: up to date")

    def migrate(self, cluster: str | None = None) -> list[migrations.Migration]:
        ch = self.settings.clickhouse
        with clickhouse_client(ch, database="default") as admin:
            migrations.create_database(admin, ch.database, cluster)
        with clickhouse_client(ch) as client:
            return migrations.migrate(client, cluster)

    def start_ingest(self) -> bool:
        if self.ingest.pid() is not None:
            return False
        self.ingest.start([tally_command(), "ingest"], env=self.service_env())
        self.ingest.wait_until(self._ingest_ready, 60, "ready")
        return True

    def start_worker(self, worker_id: str = "1") -> bool:
        worker = self.worker(worker_id)
        if worker.pid() is not None:
            return False
        seen = worker.log_size()
        worker.start([tally_command(), "worker", "--id", worker_id], env=self.service_env())
        worker.wait_until(lambda: WORKER_READY in worker.log_since(seen), 120, "ready")
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
            "TALLY_EVENTS_PARTITIONS": str(s.partitions),
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

    def _ingest_ready(self) -> bool:
        return http_status(f"{self.ingest_url}/readyz") == 200


def worker_web_port(worker_id: str) -> int:
    """Where ``tally worker --id N`` serves /metrics, /healthz and /readyz unless TALLY_WORKER_WEB_PORT says."""
    return 6065 + int(worker_id) if worker_id.isdigit() else 6066


def tally_command() -> str:
    """The ``tally`` script beside the running interpreter (the project's venv)."""
    return str(Path(sys.executable).parent / "tally")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
