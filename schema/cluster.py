"""The replicated, sharded layout of the same schema: rendered from the single-node migrations.

``schema/migrations/NNNN_*.sql`` stay the one source. For a ClickHouse
cluster (``<remote_servers>`` with shards of replicas, and ZooKeeper or
ClickHouse Keeper), each statement becomes its cluster form:

- a table ``T`` with engine ``E`` becomes ``T_local`` with ``ReplicatedE``
  on every node (``ON CLUSTER``), its replicas kept in step through the
  keeper under ``/clickhouse/tables/{shard}/<database>/T_local``, plus ``T``
  itself as a ``Distributed`` table over the ``T_local`` of every shard.
  Rows are spread by ``cityHash64(label, category, dom_id)``: every version
  of a counter lands on one shard, where ReplacingMergeTree's merges find
  them together;
- views are created on every node, unchanged: they read ``T``, the
  Distributed table, so ``daily_stats`` is the whole cluster's answer (each
  shard groups its own rows; a counter lives on one shard);
- ``DROP`` runs on every node.

Writers and readers keep using the same names (``daily_counts``,
``daily_stats``), so the services need no change. The migrations ledger is
replicated to every node of the cluster (one keeper path for all shards), so
any node can run ``tally migrate --cluster NAME`` next time.

A statement this module cannot render raises :class:`NotRenderable`: a new
migration must be taught here before it ships (tests/unit/schema/test_cluster_schema.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from schema.migrations import Migration

SHARDING_KEY = "cityHash64(label, category, dom_id)"
LOCAL_SUFFIX = "_local"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CREATE_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<name>\w+) \((?P<columns>.*?)\)\s*"
    r"ENGINE = (?P<engine>\w*MergeTree)(?:\((?P<args>[^)]*)\))?(?P<rest>.*)",
    re.DOTALL,
)
_CREATE_VIEW = re.compile(r"CREATE VIEW (?P<if>IF NOT EXISTS )?(?P<name>\w+) AS\s+(?P<select>SELECT.*)", re.DOTALL)
_DROP = re.compile(r"DROP TABLE IF EXISTS (?P<name>\w+)")
_FROM = re.compile(r"\bFROM (\w+)\b")


class NotRenderable(ValueError):
    """A migration statement has no cluster form here yet."""


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    """The cluster's name in the servers' ``<remote_servers>``."""
    database: str

    def __post_init__(self) -> None:
        for value in (self.name, self.database):
            if not _NAME.fullmatch(value):
                raise ValueError(f"{value!r} must match {_NAME.pattern}")

    def on(self, table: str) -> str:
        return f"`{self.database}`.`{table}` ON CLUSTER `{self.name}`"


def ledger_ddl(cluster: Cluster) -> str:
    """The migrations ledger, replicated to every node of every shard.

    One keeper path for all shards, so each node's replica name there is its
    shard and replica (replica names are only unique within a shard).
    """
    path = f"/clickhouse/tables/all/{cluster.database}/schema_migrations"
    return (
        f"CREATE TABLE IF NOT EXISTS {cluster.on('schema_migrations')} "
        "(version UInt32, name String, applied_at DateTime) "
        f"ENGINE = ReplicatedMergeTree('{path}', '{{shard}}-{{replica}}') ORDER BY version"
    )


def create_database(cluster: Cluster) -> str:
    return f"CREATE DATABASE IF NOT EXISTS `{cluster.database}` ON CLUSTER `{cluster.name}`"


def render_statement(statement: str, cluster: Cluster) -> list[str]:
    """One single-node statement as the statements of the cluster layout."""
    if match := _CREATE_TABLE.fullmatch(statement):
        name, local = match["name"], match["name"] + LOCAL_SUFFIX
        path = f"/clickhouse/tables/{{shard}}/{cluster.database}/{local}"
        args = ", ".join(a for a in (f"'{path}'", "'{replica}'", (match["args"] or "").strip()) if a)
        return [
            f"CREATE TABLE IF NOT EXISTS {cluster.on(local)} ({match['columns']})\n"
            f"ENGINE = Replicated{match['engine']}({args}){match['rest']}",
            f"CREATE TABLE IF NOT EXISTS {cluster.on(name)} AS `{cluster.database}`.`{local}`\n"
            f"ENGINE = Distributed(`{cluster.name}`, `{cluster.database}`, `{local}`, {SHARDING_KEY})",
        ]
    if match := _CREATE_VIEW.fullmatch(statement):
        select = _FROM.sub(lambda m: f"FROM `{cluster.database}`.`{m[1]}`", match["select"])
        return [f"CREATE VIEW {match['if'] or ''}{cluster.on(match['name'])} AS\n{select}"]
    if match := _DROP.fullmatch(statement):
        return [f"DROP TABLE IF EXISTS {cluster.on(match['name'])}"]
    raise NotRenderable(f"no cluster form for: {statement.splitlines()[0]}")


def render(migration: Migration, cluster: Cluster) -> Iterator[str]:
    for statement in migration.statements():
        yield from render_statement(statement, cluster)
