"""The replicated, sharded DDL (schema/cluster.py), rendered from the single-node migrations.

Every rendered statement must parse on current ClickHouse (chdb's
``formatQuerySingleLine``) and keep the single-node schema's columns, order
and engine family; the views must read the Distributed tables, which keep
the names the services write and read.
"""

from __future__ import annotations

import re

import chdb  # type: ignore[import-untyped]
import pytest

from deploy import cli
from schema import cluster, migrations
from schema.cluster import Cluster, NotRenderable, render_statement

CLUSTER = Cluster("tally_cluster", "tally")
SINGLE = [s for m in migrations.available() for s in m.statements()]
RENDERED = [s for m in migrations.available() for s in cluster.render(m, CLUSTER)]


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.mark.parametrize(
    "statement",
    [cluster.create_database(CLUSTER), cluster.ledger_ddl(CLUSTER), *RENDERED],
    ids=lambda s: " ".join(s.split()[:6]),
)
def test_rendered_statement_parses_on_current_clickhouse(statement: str) -> None:
    formatted = str(chdb.query(f"SELECT formatQuerySingleLine({literal(statement)})", "TSVRaw")).strip()
    assert "ON CLUSTER tally_cluster" in formatted


def test_every_table_becomes_a_replicated_local_table_and_a_distributed_one() -> None:
    tables = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\)\s*ENGINE = (\w+)", "\n".join(SINGLE), re.DOTALL)
    assert {name for name, _, _ in tables} >= {"daily_counts", "hourly_counts"}
    for name, columns, engine in tables:
        [local] = [s for s in RENDERED if s.startswith(f"CREATE TABLE IF NOT EXISTS `tally`.`{name}_local` ")]
        assert f"ENGINE = Replicated{engine}('/clickhouse/tables/{{shard}}/tally/{name}_local', '{{replica}}'" in local
        assert columns in local  # the same columns, in the same order
        single = next(s for s in SINGLE if s.startswith(f"CREATE TABLE IF NOT EXISTS {name} "))
        keys = [line for line in single.splitlines() if line.startswith(("PARTITION BY", "ORDER BY"))]
        assert len(keys) == 2 and all(line in local.splitlines() for line in keys)  # the same partitions and order
        [distributed] = [s for s in RENDERED if s.startswith(f"CREATE TABLE IF NOT EXISTS `tally`.`{name}` ")]
        assert f"AS `tally`.`{name}_local`" in distributed
        assert f"Distributed(`tally_cluster`, `tally`, `{name}_local`, cityHash64(label, category, dom_id))" in (
            distributed
        )


def test_versioned_tables_keep_their_version_column() -> None:
    local = next(s for s in RENDERED if "`daily_counts_local` ON CLUSTER" in s)
    assert "ReplicatedReplacingMergeTree(" in local and local.split("ReplicatedReplacingMergeTree(")[1].startswith(
        "'/clickhouse/tables/{shard}/tally/daily_counts_local', '{replica}', version)"
    )


def test_views_read_the_distributed_tables_on_every_node() -> None:
    views = [s for s in RENDERED if s.startswith("CREATE VIEW")]
    assert {re.search(r"`tally`\.`(\w+)` ON CLUSTER", v)[1] for v in views} == {"daily_stats", "hourly_stats"}  # type: ignore[index]
    for view in views:
        assert re.findall(r"FROM (\S+)", view) in (["`tally`.`daily_counts`"], ["`tally`.`hourly_counts`"])
        assert "HAVING counter > 0" in view or "IF NOT EXISTS" in view  # 0003's views hide zeroed counters


def test_every_statement_runs_on_the_whole_cluster() -> None:
    assert all("ON CLUSTER `tally_cluster`" in s for s in RENDERED)
    assert len(RENDERED) == len(SINGLE) + sum(s.startswith("CREATE TABLE") for s in SINGLE)


def test_a_statement_without_a_cluster_form_is_refused() -> None:
    with pytest.raises(NotRenderable, match="ALTER TABLE daily_counts"):
        render_statement("ALTER TABLE daily_counts ADD COLUMN x UInt8", CLUSTER)


@pytest.mark.parametrize("name", ["tally-cluster", "x; DROP", ""])
def test_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        Cluster(name, "tally")


def test_tally_migrate_takes_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["migrate", "--help"])
    assert exited.value.code == 0
    assert "--cluster NAME" in capsys.readouterr().out
