"""The ingest application: routes, the clients they share, and error mapping.

Clients (the Kafka producer, the ClickHouse read pool) are created in the
lifespan, handed to requests through ``request.state``, and flushed and
closed on shutdown so a SIGTERM loses nothing that was acknowledged.
"""

from __future__ import annotations

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
from starlette.routing import Route

from ingest.errors import IngestError, as_response
from ingest.pipeline import Pipeline
from ingest.publish import KafkaPublisher, Publisher
from ingest.query import StatsReader, get_stats
from ingest.settings import IngestSettings
from ingest.track import track, track_pixel, track_post


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    kafka = await run_in_threadpool(request.state.publisher.ready)
    clickhouse = await run_in_threadpool(request.state.stats_reader.ready)
    ok = kafka and clickhouse
    return JSONResponse({"kafka": kafka, "clickhouse": clickhouse}, status_code=200 if ok else 503)


def create_app(
    settings: IngestSettings,
    publisher_factory: Callable[[IngestSettings], Publisher] | None = None,
    reader_factory: Callable[[IngestSettings], Any] | None = None,
) -> Starlette:
    """Build the app; the factories let unit tests put fakes behind the same interfaces."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        publisher = (publisher_factory or _kafka_publisher)(settings)
        reader = (reader_factory or _stats_reader)(settings)
        try:
            yield {
                "publisher": publisher,
                "stats_reader": reader,
                "pipeline": Pipeline(settings.limits, settings.policy, settings.day_tz),
                "day_tz": settings.day_tz,
            }
        finally:
            await run_in_threadpool(publisher.close)
            reader.close()

    return Starlette(
        routes=[
            Route("/track/", track, methods=["GET"]),
            Route("/track/", track_post, methods=["POST"]),
            Route("/track.gif", track_pixel, methods=["GET"]),
            Route("/get_stats/", get_stats, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        middleware=[
            # A JSON POST from another origin is preflighted; sendBeacon's text/plain is not.
            # No credentials: Tally sets no cookie and reads none.
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type"],
                expose_headers=["X-Tally-Dropped", "X-Tally-Error", "Retry-After"],
                max_age=86400,
            )
        ],
        exception_handlers={IngestError: as_response},
        lifespan=lifespan,
    )


def _kafka_publisher(settings: IngestSettings) -> Publisher:
    return KafkaPublisher.from_settings(settings.kafka, settings.publish)


def _stats_reader(settings: IngestSettings) -> StatsReader:
    return StatsReader(settings.clickhouse)


def from_env() -> Starlette:
    """uvicorn's ``--factory`` entry point."""
    return create_app(IngestSettings.from_env(os.environ))
