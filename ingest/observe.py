"""Every answer counted for ``/metrics`` and, when asked, logged: one ASGI middleware, and the metrics page.

No line is logged per request by default: at thousands of beacons a second
a log line would cost more than the rest of a beacon's trip, and the
counts are in ``/metrics``. ``TALLY_INGEST_ACCESS_LOG=true`` logs one structured
line per answer (``method``, ``path``, ``status``, ``duration_ms``), without
the query string or the client's address: no IP address is kept, logs
included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.metrics import IngestMetrics

PRODUCER_SAMPLE_S: Final = 5.0
"""How often the producer's figures are copied into gauges (and at every scrape)."""

access = logging.getLogger("ingest.access")


class Observed:
    """Counts each answer by route, method and status (the app's metrics are in the lifespan state)."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics: IngestMetrics | None = scope.get("state", {}).get("metrics") if scope["type"] == "http" else None
        if metrics is None:
            await self.app(scope, receive, send)
            return
        status = 500  # unless an answer starts: an unhandled error
        started = time.perf_counter()

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, answering)
        finally:
            observed(metrics, scope, status, started, self.access_log)


def observed(metrics: IngestMetrics, scope: Scope, status: int, started: float, access_log: bool) -> None:
    """One answer counted and, if asked, logged (also by ``ingest.track.Beacons``, which answers before Observed)."""
    metrics.request(scope["path"], scope["method"], status)
    if access_log:
        took_ms = round((time.perf_counter() - started) * 1000, 3)
        fields = {"method": scope["method"], "path": scope["path"], "status": status, "duration_ms": took_ms}
        access.info("%s %s %d", scope["method"], scope["path"], status, extra=fields)


async def metrics_page(request: Request) -> Response:
    metrics: IngestMetrics = request.state.metrics
    sample_producer(metrics, request.state.publisher)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def sample_producer(metrics: IngestMetrics, publisher: Any) -> None:
    """The producer's buffer into gauges: our events in flight, and kafka-python's own figures."""
    if publisher is None:
        return
    stats = getattr(publisher, "stats", None)
    metrics.sample_producer(getattr(publisher, "in_flight", 0), stats() if stats is not None else {})


async def sample_producer_forever(metrics: IngestMetrics, publisher: Any) -> None:
    """Keeps the gauges fresh between scrapes, for the processes a scrape does not reach."""
    while True:
        sample_producer(metrics, publisher)
        await asyncio.sleep(PRODUCER_SAMPLE_S)
