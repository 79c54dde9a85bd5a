"""The read side's connection to ClickHouse: a small pool of connections, used off the event loop."""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.concurrency import run_in_threadpool

from query.errors import StoreUnavailable
from schema.settings import ClickHouseSettings, clickhouse_client

log = logging.getLogger(__name__)

Rows = list[tuple[Any, ...]]


class StatsReader:
    """Runs read queries on a small pool of ClickHouse connections, each query in a worker thread.

    A query that fails for any reason is :class:`StoreUnavailable` (503).
    """

    def __init__(self, settings: ClickHouseSettings, pool_size: int = 4) -> None:
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        for _ in range(pool_size):
            self._pool.put(clickhouse_client(settings))

    async def execute(self, query: str, params: dict[str, Any]) -> Rows:
        try:
            return await run_in_threadpool(self._execute, query, params)
        except Exception as exc:
            log.warning("stats query failed: %s", str(exc).splitlines()[0])
            raise StoreUnavailable(f"ClickHouse: {type(exc).__name__}") from exc

    def ready(self) -> bool:
        try:
            return self._execute("SELECT 1", {}) == [(1,)]
        except Exception:
            return False

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait().disconnect()

    def _execute(self, query: str, params: dict[str, Any]) -> Rows:
        with self._client() as client:
            rows: Rows = client.execute(query, params)
            return rows

    @contextmanager
    def _client(self) -> Iterator[Any]:
        client = self._pool.get()
        try:
            yield client
        finally:
            self._pool.put(client)
