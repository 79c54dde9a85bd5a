"""Current ClickHouse (26.9) for the local stack: chdb-core's clickhouse-local, serving TCP and HTTP.

chdb-core (a dependency of the dev group's chdb) embeds clickhouse-local,
whose ``SYSTEM START LISTEN TCP`` and ``SYSTEM START LISTEN HTTP`` serve the
native protocol and HTTP for as long as the query that started them runs.
``python -m stack.clickhouse_current HOME`` is that server: one per process,
reading ``listen_host`` and the ports from the ``config.xml`` in ``HOME`` (its
working directory), its data in ``HOME/data`` (kept across restarts), no
authentication (loopback only). SIGTERM stops it.

It goes through ``chdb._chdb.query``, a private call (``chdb.connect()`` has
no listeners): :func:`serve` is the one place that names it, and it runs only
with the chdb-core it is proved with (``PROVED``).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.processes import Managed, http_status

HERE = Path(__file__).parent / "clickhouse"
VERSION = "26.9"
PROVED = {"chdb-core": "26.9.0"}
"""The chdb-core whose private ``_chdb.query`` serves ClickHouse 26.9 here: the lock's."""
# The listeners live as long as the query that started them: one that sleeps a row a second, ~30 years.
SERVE = (
    "SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; "
    "SELECT sum(sleepEachRow(1)) FROM numbers(1000000000) SETTINGS max_block_size = 1"
)


def answers_ping(host: str, http_port: int) -> bool:
    """Whether a ClickHouse server (of either version) answers its HTTP ``/ping``."""
    return http_status(f"http://{host}:{http_port}/ping", timeout_s=1) == 200


class UnprovedVersion(RuntimeError):
    """The installed chdb-core is not the one this server is proved with."""


def check_version() -> None:
    for name, proved in PROVED.items():
        installed = importlib.metadata.version(name)
        if installed != proved:
            raise UnprovedVersion(
                f"{name} {installed} is installed; the current ClickHouse server is proved on {proved}"
            )


def serve(home: Path) -> None:
    """Serve ClickHouse from ``home`` until the process is stopped."""
    check_version()
    # Private and untyped (chdb's stubs do not name it): see the module's docstring.
    engine: Any = importlib.import_module("chdb._chdb")
    os.chdir(home)
    engine.query(SERVE, "CSV", path=str(home / "data"))


@dataclass(frozen=True)
class CurrentClickHouseServer:
    """The stack's ClickHouse 26.9, as :class:`stack.clickhouse.ClickHouseServer` is its 18.16."""

    home: Path  # .stack/clickhouse-26.9
    process: Managed
    host: str = "127.0.0.1"
    tcp_port: int = 9000
    http_port: int = 8123

    def configure(self) -> Path:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        config = self.home / "config.xml"
        config.write_text(
            (HERE / "current.xml").read_text().format(host=self.host, tcp_port=self.tcp_port, http_port=self.http_port)
        )
        return config

    def ready(self) -> bool:
        return answers_ping(self.host, self.http_port)

    def start(self) -> bool:
        """Start the server unless it runs. Return whether it started it."""
        if self.process.pid() is not None or self.ready():
            return False
        check_version()
        self.configure()
        self.process.start_and_wait(
            [sys.executable, "-m", "stack.clickhouse_current", str(self.home)],
            ready=self.ready,
            what="answering /ping",
            cwd=self.home,
        )
        return True


if __name__ == "__main__":
    serve(Path(sys.argv[1]).resolve())
