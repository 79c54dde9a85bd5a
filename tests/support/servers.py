"""The integration tests' view of the servers: the project's services on a test's topic and database, and
how a test waits for them and reads what they counted."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from schema.settings import ClickHouseSettings, clickhouse_client
from stack.ports import free_port
from stack.processes import Managed
from stack.stack import Stack, start_ingest, start_worker, worker_env

T = TypeVar("T")
PARTITIONS = 6
"""Partitions of every test's events topic."""


def eventually(check: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.3) -> T:
    """Poll ``check`` until it returns a truthy value; fail with the last value."""
    deadline = time.monotonic() + timeout_s
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = check()
    assert value, f"still {value!r} after {timeout_s}s"
    return value


def daily_stats(settings: ClickHouseSettings) -> dict[tuple[str, str, str], int]:
    """(label, category, dom_id) -> counter summed over all days, as a Grafana panel would read it."""
    with clickhouse_client(settings) as client:
        rows: list[tuple[Any, ...]] = client.execute(
            "SELECT label, category, dom_id, sum(counter) FROM daily_stats GROUP BY label, category, dom_id"
        )
    return {(label, category, dom_id): counter for label, category, dom_id, counter in rows}


@dataclass
class Services:
    """The project's own processes (``tally ingest``, ``tally worker``) on a test's topic and database."""

    stack: Stack
    topic: str
    clickhouse: ClickHouseSettings
    run_dir: Path
    ingest_port: int
    app_id: str
    worker_ports: dict[str, int] = field(default_factory=dict)
    read_token: str = field(default_factory=lambda: f"test-read-{uuid.uuid4().hex}")

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TALLY_STACK_DIR": str(self.run_dir),
            "TALLY_KAFKA_BOOTSTRAP": self.stack.settings.kafka.bootstrap,
            "TALLY_EVENTS_TOPIC": self.topic,
            "TALLY_EVENTS_PARTITIONS": str(PARTITIONS),
            "TALLY_CLICKHOUSE_HOST": self.clickhouse.host,
            "TALLY_CLICKHOUSE_PORT": str(self.clickhouse.port),
            "TALLY_CLICKHOUSE_DATABASE": self.clickhouse.database,
            "TALLY_INGEST_PORT": str(self.ingest_port),
            "TALLY_WORKER_APP_ID": self.app_id,
            # As `tally up` runs it: a read token, and /get_stats/ public.
            "TALLY_API_READ_TOKENS": self.read_token,
            "TALLY_API_PUBLIC_GET_STATS": "true",
            **extra,
        }

    def process(self, name: str) -> Managed:
        return self.stack.managed(name, root=self.run_dir)

    def start_ingest(self, **env: str) -> Managed:
        ingest = self.process("ingest")
        start_ingest(ingest, self.ingest_url, self.env(**env))
        return ingest

    def start_worker(self, worker_id: str = "1", **env: str) -> Managed:
        """Start ``tally worker``; its /metrics and /readyz are on ``self.worker_ports[worker_id]``."""
        worker = self.process(f"worker-{worker_id}")
        port = self.worker_ports.setdefault(worker_id, free_port())
        env = self.env(TALLY_WORKER_WEB_PORT=str(port), **env)
        start_worker(worker, worker_id, worker_env(self.run_dir, worker_id, env))
        return worker

    def stop_all(self) -> None:
        for pid_file in (self.run_dir / "run").glob("*.pid"):
            self.process(pid_file.stem).stop(timeout_s=15)
