"""Real Kafka and real ClickHouse for integration tests.

The session starts the local stack's servers if they are not running (and
stops what it started), or reuses running ones. Nothing here ever skips: a
server that cannot be started fails the tests that need it. Every test gets
its own topic, consumer group and database.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from stack.kafka import delete_topics, ensure_topic
from stack.ports import free_port
from stack.processes import Managed, http_status
from stack.stack import WORKER_READY, Stack, StackSettings, tally_command

T = TypeVar("T")
PARTITIONS = 6


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's headless Chromium (/usr/bin/chromium)")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    stack = Stack(StackSettings.from_env(os.environ))
    started = [server.process for server in (stack.kafka, stack.clickhouse) if server.start()]
    yield stack
    for process in reversed(started):
        process.stop()


@pytest.fixture
def topic(stack: Stack) -> Iterator[str]:
    name = f"test.events.{uuid.uuid4().hex[:12]}"
    ensure_topic(stack.settings.kafka.bootstrap, name, PARTITIONS)
    yield name
    delete_topics(stack.settings.kafka.bootstrap, name)


@pytest.fixture
def clickhouse(stack: Stack) -> Iterator[ClickHouseSettings]:
    """A fresh, migrated database of its own."""
    base = stack.settings.clickhouse
    settings = ClickHouseSettings(base.host, base.port, f"test_{uuid.uuid4().hex[:12]}", base.user, base.password)
    with clickhouse_client(settings, database="default") as admin:
        migrations.create_database(admin, settings.database)
    with clickhouse_client(settings) as client:
        migrations.migrate(client)
    yield settings
    with clickhouse_client(settings, database="default") as admin:
        admin.execute(f"DROP DATABASE IF EXISTS `{settings.database}`")


def eventually(check: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.3) -> T:
    """Poll ``check`` until it returns a truthy value; fail with the last value."""
    deadline = time.monotonic() + timeout_s
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = check()
    assert value, f"still {value!r} after {timeout_s}s"
    return value


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
        return Managed(name, self.run_dir / "run", self.run_dir / "logs")

    def start_ingest(self, **env: str) -> Managed:
        ingest = self.process("ingest")
        ingest.start([tally_command(), "ingest"], env=self.env(**env))
        ingest.wait_until(lambda: http_status(f"{self.ingest_url}/readyz") == 200, 60, "ready")
        return ingest

    def start_worker(self, worker_id: str = "1", **env: str) -> Managed:
        """Start ``tally worker``; its /metrics and /readyz are on ``self.worker_ports[worker_id]``."""
        worker = self.process(f"worker-{worker_id}")
        seen = worker.log_size()
        port = self.worker_ports.setdefault(worker_id, free_port())
        worker.start(
            [tally_command(), "worker", "--id", worker_id],
            env=self.env(TALLY_WORKER_WEB_PORT=str(port), **env),
        )
        worker.wait_until(lambda: WORKER_READY in worker.log_since(seen), 90, "ready")
        return worker

    def stop_all(self) -> None:
        for pid_file in (self.run_dir / "run").glob("*.pid"):
            self.process(pid_file.stem).stop(timeout_s=15)


@pytest.fixture
def services(stack: Stack, topic: str, clickhouse: ClickHouseSettings, tmp_path: Path) -> Iterator[Services]:
    services = Services(stack, topic, clickhouse, tmp_path, free_port(), f"test-app-{uuid.uuid4().hex[:8]}")
    yield services
    services.stop_all()
    delete_topics(stack.settings.kafka.bootstrap, services.app_id)


def daily_stats(settings: ClickHouseSettings) -> dict[tuple[str, str, str], int]:
    """(label, category, dom_id) -> counter summed over all days, as a Grafana panel would read it."""
    with clickhouse_client(settings) as client:
        rows: list[tuple[Any, ...]] = client.execute(
            "SELECT label, category, dom_id, sum(counter) FROM daily_stats GROUP BY label, category, dom_id"
        )
    return {(label, category, dom_id): counter for label, category, dom_id, counter in rows}
