"""Versioned ClickHouse DDL, applied in order and recorded.

Each ``NNNN_name.sql`` file here is one migration: statements separated by
``;``, written without a database name (the client's database is used), valid
on ClickHouse 18.16 (Debian 12's package) and on current ClickHouse. Applying
is idempotent: every statement is ``IF NOT EXISTS`` and applied versions are
recorded in ``schema_migrations``.

On a ClickHouse cluster the same files are applied in their replicated,
sharded form (``cluster=``, see :mod:`schema.cluster`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from typing import Any, Protocol

from schema.settings import ClickHouseSettings, clickhouse_client

_FILE = re.compile(r"(\d{4})_(\w+)\.sql")

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime
) ENGINE = MergeTree ORDER BY version
"""


class Executes(Protocol):
    """What migrate needs of a client: clickhouse_driver.Client has it."""

    def execute(self, query: str, params: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> Iterator[str]:
        """The file's statements, comments removed first (they may contain ';')."""
        code = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        for chunk in code.split(";"):
            if chunk.strip():
                yield chunk.strip()


def available() -> list[Migration]:
    """All migrations shipped with this package, in order."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def apply(settings: ClickHouseSettings, cluster: str | None = None) -> list[Migration]:
    """Create the settings' database unless it exists, and apply the migrations it lacks (``tally migrate``)."""
    with clickhouse_client(settings, database="default") as admin:
        create_database(admin, settings.database, cluster)
    with clickhouse_client(settings) as client:
        return migrate(client, cluster)


def create_database(client: Executes, database: str, cluster: str | None = None) -> None:
    """Create ``database`` (on every node of ``cluster``); its name comes from checked settings, never a request."""
    if cluster is None:
        client.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    else:
        from schema import cluster as layout

        client.execute(layout.create_database(layout.Cluster(cluster, database)))


def migrate(client: Executes, cluster: str | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded, in order; return those applied.

    ``client`` must be connected to the target database. With ``cluster``, the
    replicated and sharded form of each statement runs on every node of that
    cluster (:mod:`schema.cluster`).
    """
    statements: Callable[[Migration], Iterable[str]] = Migration.statements
    if cluster is None:
        client.execute(LEDGER_DDL)
    else:
        from schema import cluster as layout

        where = layout.Cluster(cluster, client.execute("SELECT currentDatabase()")[0][0])
        client.execute(layout.ledger_ddl(where))
        statements = partial(layout.render, cluster=where)
    done = {row[0] for row in client.execute("SELECT DISTINCT version FROM schema_migrations")}
    applied = []
    for migration in available():
        if migration.version in done:
            continue
        for statement in statements(migration):
            client.execute(statement)
        client.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES",
            [(migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None, microsecond=0))],
        )
        applied.append(migration)
    return applied
