"""Versioned ClickHouse DDL, applied in order and recorded.

Each ``NNNN_name.sql`` file here is one migration: statements separated by
``;``, written without a database name (the client's database is used), valid
on ClickHouse 18.16 (Debian 12's package) and on current ClickHouse. Applying
is idempotent: every statement is ``IF NOT EXISTS`` and applied versions are
recorded in ``schema_migrations``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol

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


def create_database(client: Executes, database: str) -> None:
    """Create ``database``; its name comes from checked settings, never from a request."""
    client.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")


def migrate(client: Executes) -> list[Migration]:
    """Apply the migrations not yet recorded, in order; return those applied.

    ``client`` must be connected to the target database.
    """
    client.execute(LEDGER_DDL)
    done = {row[0] for row in client.execute("SELECT DISTINCT version FROM schema_migrations")}
    applied = []
    for migration in available():
        if migration.version in done:
            continue
        for statement in migration.statements():
            client.execute(statement)
        client.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES",
            [(migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None, microsecond=0))],
        )
        applied.append(migration)
    return applied
