"""The cluster layout on real servers: three ClickHouse 18.16 processes and Debian's ZooKeeper, on loopback.

Cluster ``tally_cluster``: shard 1 has two replicas (nodes 1 and 2), shard 2
one (node 3). ``tally migrate --cluster tally_cluster`` runs on node 1; the
worker's own writer (aggregator/write.py) writes roll-ups of the known
events, with stale versions beside them, into the Distributed tables; then
every dashboard query must answer on every node what counting the events by
hand gives, rows must be spread over both shards, and shard 1's replicas
must hold the same rows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.write import ClickHouseWriter, RollupRow
from schema.settings import ClickHouseSettings, clickhouse_client
from stack import dashboards
from stack.clickhouse import HERE as CLICKHOUSE_CONFIG
from stack.clickhouse import server_binary
from stack.ports import free_port
from stack.processes import Managed
from stack.stack import Stack, tally_command
from tests.support.dashboard_cases import (
    EXPECTED,
    FRESHNESS,
    VARIABLE_CASES,
    Case,
    fixed_range,
    known_events,
    normalized,
)
from tests.support.servers import eventually

pytestmark = [pytest.mark.clickhouse]

ZOOKEEPER = Path("/usr/share/zookeeper/bin/zkServer.sh")
CLUSTER = "tally_cluster"
DATABASE = "tally"
LAYOUT = [(1, "r1"), (1, "r2"), (2, "r1")]
"""(shard, replica) of each node."""


@dataclass
class Node:
    shard: int
    replica: str
    tcp_port: int
    http_port: int
    interserver_port: int
    process: Managed

    @property
    def settings(self) -> ClickHouseSettings:
        return ClickHouseSettings("127.0.0.1", self.tcp_port, DATABASE)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/ping", timeout=1) as response:
                return bool(response.read().strip() == b"Ok.")
        except OSError:
            return False

    def query(self, sql: str, database: str = DATABASE) -> list[tuple[Any, ...]]:
        with clickhouse_client(self.settings, database=database) as client:
            rows: list[tuple[Any, ...]] = client.execute(sql)
            return rows


def zookeeper_answers(port: int) -> bool:
    """Whether ZooKeeper serves sessions: ``ruok`` says "imok" before that, and ClickHouse 18.16 crashes
    (a null pointer in ``ZooKeeper::createImpl``) when its first handshake is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"srvr")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            return b"Mode:" in answer
    except OSError:
        return False


def node_config(node: Node, nodes: list[Node], zookeeper_port: int, home: Path) -> Path:
    """stack/clickhouse/config.xml, plus the cluster, the keeper, this node's macros and replication port."""
    (home / "data").mkdir(parents=True)
    base = (CLICKHOUSE_CONFIG / "config.xml").read_text().format(
        host="127.0.0.1", tcp_port=node.tcp_port, http_port=node.http_port, data_dir=home / "data",
        log_dir=node.process.log_dir,
    )  # fmt: skip
    shards = "".join(
        "<shard><internal_replication>true</internal_replication>"
        + "".join(f"<replica><host>127.0.0.1</host><port>{n.tcp_port}</port></replica>" for n in nodes if n.shard == s)
        + "</shard>"
        for s in sorted({n.shard for n in nodes})
    )
    cluster = f"""
    <remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>
    <zookeeper><node><host>127.0.0.1</host><port>{zookeeper_port}</port></node></zookeeper>
    <macros><shard>{node.shard}</shard><replica>{node.replica}</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>{node.interserver_port}</interserver_http_port>
</yandex>"""
    config = home / "config.xml"
    config.write_text(base.replace("</yandex>", cluster))
    shutil.copy(CLICKHOUSE_CONFIG / "users.xml", home / "users.xml")
    return config


@pytest.fixture(scope="module")
def nodes(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    """Three servers of our own; ``stack`` only makes sure clickhouse-server is installed."""
    if not ZOOKEEPER.exists():
        pytest.fail("Debian's zookeeper is missing: `make zookeeper` (apt-get install zookeeper) installs it")
    binary = server_binary()
    assert binary is not None, "clickhouse-server is missing: `make up` installs it"
    home = tmp_path_factory.mktemp("cluster")
    started: list[Managed] = []
    try:
        zk_port = free_port()
        (home / "zk").mkdir()
        (home / "zk" / "zoo.cfg").write_text(
            f"tickTime=500\ndataDir={home / 'zk'}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n4lw.commands.whitelist=srvr\n"
        )
        zookeeper = stack.managed("zookeeper", root=home)
        zookeeper.start([str(ZOOKEEPER), "start-foreground", str(home / "zk" / "zoo.cfg")],
                        env={**os.environ, "ZOO_LOG_DIR": str(home / "logs")})  # fmt: skip
        started.append(zookeeper)
        zookeeper.wait_until(lambda: zookeeper_answers(zk_port), what="answering")
        cluster = [
            Node(shard, replica, free_port(), free_port(), free_port(), stack.managed(f"ch{i}", root=home))
            for i, (shard, replica) in enumerate(LAYOUT, 1)
        ]
        for i, node in enumerate(cluster, 1):
            config = node_config(node, cluster, zk_port, home / f"node{i}")
            node.process.start([binary, f"--config-file={config}"], cwd=home / f"node{i}")
            started.append(node.process)
        for node in cluster:
            node.process.wait_until(node.ready, what="answering /ping")
        yield cluster
    finally:
        for process in reversed(started):
            process.stop(timeout_s=15)


def test_tally_migrate_cluster_then_every_node_answers_the_dashboards(nodes: list[Node]) -> None:
    first = nodes[0]
    env = {**os.environ, "TALLY_CLICKHOUSE_HOST": "127.0.0.1", "TALLY_CLICKHOUSE_PORT": str(first.tcp_port),
           "TALLY_CLICKHOUSE_DATABASE": DATABASE, "TALLY_STACK_DIR": str(first.process.run_dir)}  # fmt: skip
    command = [tally_command(), "migrate", "--cluster", CLUSTER]
    migrate = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert migrate.returncode == 0, migrate.stderr
    assert "applied 0001_daily_counts" in migrate.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.stdout.strip() == "schema up to date", again.stdout + again.stderr
    for node in nodes:  # every node has the layout, and the ledger says so everywhere
        tables = dict(node.query(f"SELECT name, engine FROM system.tables WHERE database = '{DATABASE}'"))
        assert tables["daily_counts_local"] == "ReplicatedReplacingMergeTree"
        assert tables["daily_counts"] == "Distributed" and tables["daily_stats"] == "View"
        assert node.query("SELECT count() FROM schema_migrations")[0][0] == 3

    # The worker's writer, as a worker would write: absolute counts, versions; older writes beside.
    now = datetime.now(UTC)
    events = known_events(now)
    written = now.replace(tzinfo=None, microsecond=0)
    daily = Counter((e.day, None, e.label, e.category, e.dom_id) for e in events)
    hourly = Counter((e.day, e.hour, e.label, e.category, e.dom_id) for e in events)
    rows = [RollupRow(*key, n, 100, written) for key, n in (daily + hourly).items()]
    stale = [RollupRow(*key, n + 5, 10, written) for key, n in (daily + hourly).items()]
    writer = ClickHouseWriter(first.settings)
    try:
        writer.write(rows)
        writer.write(stale)
    finally:
        writer.close()

    # Distributed inserts travel in the background: wait until every shard holds its part of both writes.
    local_rows = 2 * len(daily)
    shard_rows: dict[int, int] = {}

    def delivered() -> bool:
        shard_rows.update({n.shard: n.query("SELECT count() FROM daily_counts_local")[0][0] for n in nodes})
        return sum(shard_rows.values()) == local_rows

    eventually(delivered, timeout_s=60)
    assert all(shard_rows.values()) and sum(shard_rows.values()) == local_rows, shard_rows  # both shards hold rows
    replicas = [n for n in nodes if n.shard == 1]
    eventually(lambda: len({tuple(sorted(n.query("SELECT * FROM daily_counts_local"))) for n in replicas}) == 1)

    time_range = fixed_range(now)
    for node in nodes:
        for query in dashboards.all_queries():
            if query.datasource != dashboards.CLICKHOUSE_PLUGIN or FRESHNESS in query.panel.lower():
                continue
            for name, variables in VARIABLE_CASES.items():
                sql = dashboards.expand(query.text, time_range, variables)
                with clickhouse_client(node.settings) as client:
                    got = client.execute(sql)
                want = EXPECTED[query.key](Case(events, time_range, variables))
                assert normalized(got) == normalized(want), f"node {node.shard}/{node.replica}: {query.key} ({name})"
