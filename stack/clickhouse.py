"""ClickHouse for the local stack: Debian's clickhouse-server, run as our own process.

It is installed with apt if missing (18.16 on Debian 12), configured to
listen on loopback only, and keeps its data and logs under ``.stack/``.
The stack's other ClickHouse, 26.9, is :mod:`stack.clickhouse_current`;
:func:`server` gives either (``TALLY_STACK_CLICKHOUSE_VERSION``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack import clickhouse_current
from stack.clickhouse_current import CurrentClickHouseServer, answers_ping
from stack.processes import Managed

HERE = Path(__file__).parent / "clickhouse"
DEFAULT_VERSION = "18.16"
VERSIONS = (DEFAULT_VERSION, clickhouse_current.VERSION)
SERVER_CANDIDATES = ("clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")


def server_binary() -> str | None:
    for candidate in SERVER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def install() -> bool:
    """apt-get install clickhouse-server unless it is there. Return whether it installed."""
    if server_binary() is not None:
        return False
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "clickhouse-server", "clickhouse-client"],
        check=True,
        env=env,
    )
    return True


@dataclass(frozen=True)
class ClickHouseServer:
    home: Path  # .stack/clickhouse
    process: Managed
    host: str = "127.0.0.1"
    tcp_port: int = 9000
    http_port: int = 8123

    def configure(self) -> Path:
        data_dir = self.home / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.process.log_dir.mkdir(parents=True, exist_ok=True)
        config = self.home / "config.xml"
        config.write_text(
            (HERE / "config.xml")
            .read_text()
            .format(
                host=self.host,
                tcp_port=self.tcp_port,
                http_port=self.http_port,
                data_dir=data_dir,
                log_dir=self.process.log_dir,
            )
        )
        shutil.copy(HERE / "users.xml", self.home / "users.xml")
        return config

    def ready(self) -> bool:
        return answers_ping(self.host, self.http_port)

    def start(self) -> bool:
        """Start the server unless it runs. Return whether it started it."""
        if self.process.pid() is not None or self.ready():
            return False
        install()
        binary = server_binary()
        assert binary is not None
        config = self.configure()
        self.process.start_and_wait(
            [binary, f"--config-file={config}"], ready=self.ready, what="answering /ping", cwd=self.home
        )
        return True


ClickHouse = ClickHouseServer | CurrentClickHouseServer


def home_of(root: Path, version: str) -> Path:
    """Where a stack under ``root`` keeps ClickHouse ``version``: the default's in ``clickhouse``, another's
    beside it."""
    return root / ("clickhouse" if version == DEFAULT_VERSION else f"clickhouse-{version}")


def server(
    version: str, home: Path, process: Managed, host: str = "127.0.0.1", tcp_port: int = 9000, http_port: int = 8123
) -> ClickHouse:
    """ClickHouse ``version`` (one of :data:`VERSIONS`) kept in ``home``, on these loopback ports."""
    kind = CurrentClickHouseServer if version == clickhouse_current.VERSION else ClickHouseServer
    return kind(home, process, host=host, tcp_port=tcp_port, http_port=http_port)
