"""A short-lived cache of query results, for hot identical queries.

A heat map polled by many visitors sends the same query many times a second;
ClickHouse answers it once per ``ttl_s`` and everyone else gets that answer.
Identical queries that arrive while one is running wait for it instead of
sending their own. The cache (cachetools' ``TTLCache``) is bounded by the
number of rows it holds in all, not by entries, so a few large answers cannot
fill memory; an answer larger than the whole bound is not kept.

It lives on the event loop (one per process, no lock needed); a cached answer
still carries the freshness of the rows it was made of, so it never claims to
be newer than it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping

from cachetools import TTLCache

from query.store import Rows

Key = tuple[str, tuple[tuple[str, Hashable], ...]]


class QueryCache:
    def __init__(self, ttl_s: float, max_rows: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.enabled = ttl_s > 0
        self._results: TTLCache[Key, Rows] = TTLCache(
            maxsize=max_rows, ttl=ttl_s if self.enabled else 1, timer=timer, getsizeof=_size
        )
        self._running: dict[Key, asyncio.Future[Rows]] = {}

    async def get(self, query: str, params: Mapping[str, Hashable], run: Callable[[], Awaitable[Rows]]) -> Rows:
        """The rows of ``query`` with ``params``: cached, being fetched, or fetched now by ``run``."""
        if not self.enabled:
            return await run()
        key: Key = (query, tuple(sorted(params.items())))
        cached = self._results.get(key)
        if cached is not None:
            return cached
        running = self._running.get(key)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not running.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await run()  # the request we waited for went away; we did not
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            rows = await run()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a failure nobody else waited for is not "never retrieved"
            raise
        else:
            future.set_result(rows)
            if _size(rows) <= self._results.maxsize:
                self._results[key] = rows
            return rows
        finally:
            del self._running[key]

    @property
    def rows(self) -> float:
        """Rows held in all (what ``max_rows`` bounds)."""
        return self._results.currsize


def _size(rows: Rows) -> int:
    return len(rows) + 1
