"""Fixtures of the unit tests: the fakes of :mod:`tests.support.fakes`, one per test, and current
ClickHouse embedded (chdb), one per test module."""

from collections.abc import Iterator

import pytest
from chdb import session as chs  # type: ignore[import-untyped]

from schema import migrations
from tests.support.fakes import FakePublisher, FakeReader


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def reader() -> FakeReader:
    return FakeReader()


@pytest.fixture(scope="module")
def current_clickhouse(request: pytest.FixtureRequest) -> Iterator[chs.Session]:
    """Current ClickHouse (chdb embeds it) with the schema migrated, in a database of the test module's own."""
    session = chs.Session()
    database = request.module.__name__.rsplit(".", 1)[-1]
    session.query(f"CREATE DATABASE IF NOT EXISTS {database}")
    session.query(f"USE {database}")
    for migration in migrations.available():
        for statement in migration.statements():
            session.query(statement)
    yield session
    session.close()
