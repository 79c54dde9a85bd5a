"""The query route group: the seed's ``/get_stats/``, the ``/api/v1`` read API, and the stats page.

``/api/v1`` endpoints (all GET; the OpenAPI document is ``/api/v1/openapi.json``):

- ``counts``      filtered counts, grouped by any of day, hour, label, category, dom_id; ungrouped: the total
- ``top``         the N highest labels (or categories, or dom ids)
- ``labels``      the labels counted in the range, with their counts (``categories`` likewise)

The stages a read passes are listed in :mod:`query`.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from query import counts, heatmap
from query.answer import counts_response
from query.auth import ReadTokens
from query.cache import QueryCache
from query.counts import Counts
from query.openapi import document
from query.params import CountsRequest, parse
from query.settings import QuerySettings
from query.store import Rows, StatsReader

STATS_PAGE: Final = Path(__file__).resolve().parent.parent / "web" / "stats"


class ReadApi:
    """The query routes of one app; holds its token check and its cache (the reader is the lifespan's)."""

    def __init__(self, settings: QuerySettings, day_tz: ZoneInfo, beacons: bool = False) -> None:
        """``beacons``: the process also serves the beacon routes, which the OpenAPI document then describes."""
        self.settings = settings
        self.day_tz = day_tz
        self.tokens = ReadTokens(settings.read_tokens)
        self.cache = QueryCache(settings.cache_ttl_s, settings.cache_max_rows)
        self._openapi = document(settings, beacons)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/get_stats/", self.get_stats, methods=["GET"]),
            *(
                Route(f"/api/v1/{endpoint}", self._endpoint(endpoint), methods=["GET"], name=endpoint)
                for endpoint in ("counts", "top", "labels", "categories")
            ),
            Route("/api/v1/openapi.json", self.openapi, methods=["GET"]),
            Mount("/stats", app=StaticFiles(directory=STATS_PAGE, html=True), name="stats"),
        ]

    async def get_stats(self, request: Request) -> Response:
        if not self.settings.public_get_stats:
            self.tokens.check(request)
        params = heatmap.parse(request.query_params, self._today())
        return JSONResponse(heatmap.stats_rows(await self._rows(request, heatmap.STATS_BY_DOM_IDS, params)))

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi)

    def _endpoint(self, endpoint: str) -> Any:
        async def read(request: Request) -> Response:
            self.tokens.check(request)
            wanted = parse(endpoint, request.query_params, self.settings, self._today())
            return counts_response(endpoint, wanted, await self._counts(request, wanted))

        read.__name__ = endpoint
        return read

    async def _counts(self, request: Request, wanted: CountsRequest) -> Counts:
        if not wanted.group_by:
            return counts.ungrouped((await self._rows(request, *counts.total_sql(wanted)))[0])
        found, truncated = counts.from_grouped(wanted, await self._rows(request, *counts.grouped_sql(wanted)))
        if truncated:  # the rows are not all there: ask for the total of all of them
            found = counts.with_total(found, (await self._rows(request, *counts.total_sql(wanted)))[0])
        return found

    def _today(self) -> date:
        return datetime.now(self.day_tz).date()

    async def _rows(self, request: Request, query: str, params: dict[str, Any]) -> Rows:
        reader: StatsReader = request.state.stats_reader
        return await self.cache.get(query, params, lambda: reader.execute(query, params))
