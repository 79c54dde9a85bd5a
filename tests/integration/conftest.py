"""Real Kafka and real ClickHouse for integration tests.

The session starts the local stack's servers if they are not running (and
stops what it started), or reuses running ones. Nothing here ever skips: a
server that cannot be started fails the tests that need it. Every test gets
its own topic, consumer group and database. What the tests share besides
these fixtures is in :mod:`tests.support`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from stack.kafka import delete_topics, ensure_topic
from stack.ports import free_port
from stack.stack import Stack, StackSettings
from tests.support.servers import PARTITIONS, Services


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's headless Chromium (/usr/bin/chromium)")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    stack = Stack(StackSettings.from_env(os.environ))
    started = [server.process for server in (stack.kafka, stack.clickhouse) if server.start()]
    with clickhouse_client(stack.settings.clickhouse, database="default") as client:
        running = str(client.execute("SELECT version()")[0][0])
    # A server of the other pair on these ports would be reused silently (TALLY_STACK_VERSIONS).
    assert running.startswith(f"{stack.settings.clickhouse_version}."), (
        f"ClickHouse {running} runs on port {stack.settings.clickhouse.port}; "
        f"this session is for {stack.settings.clickhouse_version}"
    )
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
    migrations.apply(settings)
    yield settings
    with clickhouse_client(settings, database="default") as admin:
        admin.execute(f"DROP DATABASE IF EXISTS `{settings.database}`")


@pytest.fixture
def services(stack: Stack, topic: str, clickhouse: ClickHouseSettings, tmp_path: Path) -> Iterator[Services]:
    services = Services(stack, topic, clickhouse, tmp_path, free_port(), f"test-app-{uuid.uuid4().hex[:8]}")
    yield services
    services.stop_all()
    delete_topics(stack.settings.kafka.bootstrap, services.app_id)
