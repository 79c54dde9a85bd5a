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
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ingest.errors import IngestError, as_response
from ingest.publish import KafkaPublisher, Publisher
from ingest.query import StatsReader, get_stats
from ingest.settings import IngestSettings
from ingest.track import track


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
                "limits": settings.limits,
                "day_tz": settings.day_tz,
            }
        finally:
            await run_in_threadpool(publisher.close)
            reader.close()

    return Starlette(
        routes=[
            Route("/track/", track, methods=["GET"]),
            Route("/get_stats/", get_stats, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        exception_handlers={IngestError: as_response},
        lifespan=lifespan,
    )


def _kafka_publisher(settings: IngestSettings) -> Publisher:
    return KafkaPublisher(settings.kafka.bootstrap, settings.kafka.topic, settings.publish)


def _stats_reader(settings: IngestSettings) -> StatsReader:
    return StatsReader(settings.clickhouse)


def from_env() -> Starlette:
    """uvicorn's ``--factory`` entry point."""
    return create_app(IngestSettings.from_env(os.environ))
