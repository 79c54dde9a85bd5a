"""The query route group: the seed's ``/get_stats/``, the ``/api/v1`` read API, and the stats page.

A read goes ``authorize → parse → query (through the cache) → answer``:

- :mod:`query.auth`    a bearer token with read scope (``/get_stats/`` may be public)
- :mod:`query.params`  the parameters, or a 400 naming the field and the rule
- :mod:`query.counts`  parameterised SQL on the ``*_stats`` views, and the rows back
- :mod:`query.cache`   identical queries within ``TALLY_QUERY_CACHE_TTL_S`` share one answer
- :func:`answer`        JSON or CSV, saying how fresh the counts are

``/api/v1`` endpoints (all GET; the OpenAPI document is ``/api/v1/openapi.json``):

- ``counts``      filtered counts, grouped by any of day, hour, label, category, dom_id; ungrouped: the total
- ``top``         the N highest labels (or categories, or dom ids)
- ``labels``      the labels counted in the range, with their counts (``categories`` likewise)
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from query import counts as sql
from query.auth import ReadTokens
from query.cache import QueryCache, Rows
from query.counts import Counts
from query.openapi import document
from query.params import CountsRequest, QuerySettings, parse
from query.reader import STATS_BY_DOM_IDS, StatsReader, parse_day, parse_dom_ids, stats_rows

STATS_PAGE: Final = Path(__file__).resolve().parent.parent / "web" / "stats"
FRESH_HEADER: Final = "X-Tally-Fresh-As-Of"
NO_STORE: Final = {"Cache-Control": "no-store"}


class ReadApi:
    """The query routes of one app; holds its token check and its cache (the reader is the lifespan's)."""

    def __init__(self, settings: QuerySettings, day_tz: ZoneInfo) -> None:
        self.settings = settings
        self.day_tz = day_tz
        self.tokens = ReadTokens(settings.read_tokens)
        self.cache = QueryCache(settings.cache_ttl_s, settings.cache_max_rows)
        self._openapi = document(settings)

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
        dom_ids = parse_dom_ids(request.query_params.get("dom_ids"))
        day = parse_day(request.query_params.get("day"), self.day_tz)
        rows = await self._rows(request, STATS_BY_DOM_IDS, {"day": day, "dom_ids": tuple(dom_ids)})
        return JSONResponse(stats_rows(rows))

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi)

    def _endpoint(self, endpoint: str) -> Any:
        async def read(request: Request) -> Response:
            self.tokens.check(request)
            wanted = parse(endpoint, request.query_params, self.settings, datetime.now(self.day_tz).date())
            return answer(endpoint, wanted, await self.counts(request, wanted))

        read.__name__ = endpoint
        return read

    async def counts(self, request: Request, wanted: CountsRequest) -> Counts:
        if not wanted.group_by:
            return sql.ungrouped((await self._rows(request, *sql.total_sql(wanted)))[0])
        counts, truncated = sql.from_grouped(wanted, await self._rows(request, *sql.grouped_sql(wanted)))
        if truncated:  # the rows are not all there: ask for the total of all of them
            counts = sql.with_total(counts, (await self._rows(request, *sql.total_sql(wanted)))[0])
        return counts

    async def _rows(self, request: Request, query: str, params: dict[str, Any]) -> Rows:
        reader: StatsReader = request.state.stats_reader
        return await self.cache.get(query, params, lambda: reader.execute(query, params))


def answer(endpoint: str, wanted: CountsRequest, counts: Counts) -> Response:
    headers = {**NO_STORE, "X-Tally-Total": str(counts.total)}
    if counts.fresh_as_of is not None:
        headers[FRESH_HEADER] = _iso(counts.fresh_as_of)
    if wanted.format == "csv":
        headers["X-Tally-Truncated"] = "true" if counts.truncated else "false"
        name = f"tally-{endpoint}-{wanted.start}-{wanted.end}.csv"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(_csv(counts), media_type="text/csv; charset=utf-8", headers=headers)
    body = {
        "from": wanted.start.isoformat(),
        "to": wanted.end.isoformat(),
        "group_by": list(wanted.group_by),
        "rows": [{k: _json_value(v) for k, v in record.items()} for record in counts.records()],
        "total": counts.total,
        "truncated": counts.truncated,
        "fresh_as_of": _iso(counts.fresh_as_of) if counts.fresh_as_of else None,
    }
    return JSONResponse(body, headers=headers)


def _csv(counts: Counts) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(counts.columns)
    writer.writerows([_json_value(v) for v in row] for row in counts.rows)
    return out.getvalue()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
