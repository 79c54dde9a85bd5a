"""The read side's connection to ClickHouse, and the seed's heat-map query.

:class:`StatsReader` runs read queries on a small pool of connections, off
the event loop. ``GET /get_stats/?dom_ids=a|b|`` (served by :mod:`query.api`)
is the seed's call, unchanged: today's counts (or ``day=YYYY-MM-DD``) as
``[[dom_id, counter, label], ...]``, one row per (dom_id, label), summed over
categories, out of the ``daily_stats`` view.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool

from ingest.errors import InvalidBeacon, StoreUnavailable
from query import params
from schema.event import InvalidField, check_field
from schema.settings import ClickHouseSettings, clickhouse_client

log = logging.getLogger(__name__)

MAX_DOM_IDS_PER_QUERY = 500

STATS_BY_DOM_IDS = """
SELECT dom_id, sum(counter) AS counter, label
FROM daily_stats
WHERE day = %(day)s AND dom_id IN %(dom_ids)s
GROUP BY dom_id, label
ORDER BY dom_id, label
"""


class StatsReader:
    """Runs read queries on a small pool of ClickHouse connections, off the event loop."""

    def __init__(self, settings: ClickHouseSettings, pool_size: int = 4) -> None:
        self._settings = settings
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        for _ in range(pool_size):
            self._pool.put(clickhouse_client(settings))

    @contextmanager
    def _client(self) -> Iterator[Any]:
        client = self._pool.get()
        try:
            yield client
        finally:
            self._pool.put(client)

    def _execute(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._client() as client:
            rows: list[tuple[Any, ...]] = client.execute(query, params)
            return rows

    async def execute(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
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


def parse_dom_ids(raw: str | None) -> list[str]:
    if raw is None:
        raise InvalidBeacon("dom_ids", "is required, e.g. dom_ids=link1|link2|")
    dom_ids = [d for d in raw.split("|") if d]
    if not dom_ids:
        raise InvalidBeacon("dom_ids", "at least one dom id")
    if len(dom_ids) > MAX_DOM_IDS_PER_QUERY:
        raise InvalidBeacon("dom_ids", f"at most {MAX_DOM_IDS_PER_QUERY} dom ids")
    for index, dom_id in enumerate(dom_ids):
        try:
            check_field("dom_id", dom_id)
        except InvalidField as exc:
            raise InvalidBeacon(f"dom_ids[{index}]", exc.rule) from exc
    return dom_ids


def parse_day(raw: str | None, tz: ZoneInfo) -> date:
    if raw is None:
        return datetime.now(tz).date()
    return params.parse_day("day", raw)


def stats_rows(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The seed's answer: ``[[dom_id, counter, label], ...]``."""
    return [[dom_id, int(counter), label] for dom_id, counter, label in rows]
