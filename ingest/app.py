"""The ingest application: routes, the clients they share, and error mapping.

Clients (the Kafka producer, the ClickHouse read pool) are created in the
lifespan, handed to requests through ``request.state``, and flushed and
closed on shutdown so a SIGTERM loses nothing that was acknowledged.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from ingest.errors import IngestError, as_response
from ingest.metrics import IngestMetrics
from ingest.observe import Observed, metrics_page, sample_producer_forever
from ingest.pipeline import Pipeline
from ingest.protocol import check_versions as check_http_versions
from ingest.publish import KafkaPublisher, Publisher
from ingest.settings import IngestSettings
from ingest.track import Beacons, Served, track, track_pixel, track_post
from ingest.web import routes as web_routes
from query.answer import error_response
from query.api import ReadApi
from query.errors import QueryError
from query.store import StatsReader


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when what this process's route groups use answers: Kafka for track, ClickHouse for query."""
    checks: dict[str, bool] = {}
    if request.state.publisher is not None:
        checks["kafka"] = await run_in_threadpool(request.state.publisher.ready)
    if request.state.stats_reader is not None:
        checks["clickhouse"] = await run_in_threadpool(request.state.stats_reader.ready)
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


def create_app(
    settings: IngestSettings,
    publisher_factory: Callable[[IngestSettings], Publisher] | None = None,
    reader_factory: Callable[[IngestSettings], Any] | None = None,
    *,
    server: bool = False,
) -> Starlette:
    """Build the app; the factories let unit tests put fakes behind the same interfaces.

    ``server``: the app is the process's own (``tally ingest``), which may set
    process-wide things such as the garbage collector (:func:`freeze_startup`).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        check_http_versions()  # uvicorn and httptools: ingest.protocol uses their internals (the publisher: Kafka's)
        publisher = (publisher_factory or _kafka_publisher)(settings) if "track" in settings.routes else None
        reader = (reader_factory or _stats_reader)(settings) if "query" in settings.routes else None
        metrics = IngestMetrics(
            routes=[r.path for r in app.routes if isinstance(r, Route)],
            mounts=[r.path for r in app.routes if isinstance(r, Mount)],
            day_tz=settings.day_tz,
        )
        sampler = asyncio.create_task(sample_producer_forever(metrics, publisher))
        if server:
            freeze_startup()
        try:
            yield {
                "publisher": publisher,
                "stats_reader": reader,
                "pipeline": Pipeline(settings.limits, settings.policy, settings.day_tz),
                "day_tz": settings.day_tz,
                "metrics": metrics,
            }
        finally:
            sampler.cancel()
            metrics.close()
            if publisher is not None:
                await run_in_threadpool(publisher.close)
            if reader is not None:
                reader.close()

    # A JSON (or compressed) POST from another origin is preflighted; sendBeacon's text/plain is not.
    # No credentials: Tally sets no cookie and reads none.
    cors: dict[str, Any] = {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["Content-Type", "Content-Encoding", "Authorization", "Idempotency-Key"],
        "expose_headers": [
            "X-Tally-Dropped",
            "X-Tally-Error",
            "X-Tally-Recorded",
            "Retry-After",
            "X-Tally-Fresh-As-Of",
        ],
        "max_age": 86400,
    }
    app = Starlette(
        routes=[
            *(
                [
                    Route("/track/", Served(track), methods=["GET"]),
                    Route("/track/", Served(track_post), methods=["POST"]),
                    Route("/track.gif", Served(track_pixel), methods=["GET"]),
                    *web_routes(),  # tally.js and the demo pages: what pages load from the beacon host
                ]
                if "track" in settings.routes
                else []
            ),
            *(
                ReadApi(settings.query, settings.day_tz, beacons="track" in settings.routes).routes()
                if "query" in settings.routes
                else []
            ),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_page),
        ],
        middleware=[
            # First, so the beacons' fast path is under any middleware added later (ingest.track).
            *([Middleware(Beacons, cors=cors, access_log=settings.access_log)] if "track" in settings.routes else []),
            Middleware(Observed, access_log=settings.access_log),
            Middleware(CORSMiddleware, **cors),
        ],
        exception_handlers={IngestError: as_response, QueryError: error_response},
        lifespan=lifespan,
    )
    return app


def freeze_startup() -> None:
    """Keep what startup made (modules, the app, the producer) out of every later garbage collection.

    A request waiting for Kafka's ack outlives many young-generation
    collections, so its objects reach the oldest generation, whose
    collections walk every object of the process with the event loop
    stopped: those pauses make the tail of a GET's latency
    (docs/performance.md). Frozen, startup's objects are never walked again;
    what requests leave behind still is, so cycles are still collected.
    """
    gc.collect()
    gc.freeze()


def _kafka_publisher(settings: IngestSettings) -> Publisher:
    return KafkaPublisher.from_settings(settings.kafka, settings.publish)


def _stats_reader(settings: IngestSettings) -> StatsReader:
    return StatsReader(settings.clickhouse)


def from_env() -> Starlette:
    """uvicorn's ``--factory`` entry point."""
    return create_app(IngestSettings.from_env(os.environ), server=True)
