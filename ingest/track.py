"""``/track/``: the seed's beacon, chained parse -> validate -> publish."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from ingest.publish import Publisher
from ingest.validate import Limits, events_from_query


async def track(request: Request) -> JSONResponse:
    limits: Limits = request.state.limits
    publisher: Publisher = request.state.publisher
    events = events_from_query(
        request.query_params.get("labels"),
        len(request.scope.get("query_string", b"")),
        limits,
        ts_ms=time.time_ns() // 1_000_000,
    )
    await publisher.publish(events)
    return JSONResponse({"accepted": len(events)}, status_code=202)
