"""Floor (a) of the ingest benchmark: the ingest app itself, answering without Kafka.

The same ``create_app`` as ``tally ingest`` (routes, middleware, metrics,
parse, validate, guard, the answer), with a publisher that acks at once and
a reader that is never asked: the difference to the real service is what
publishing costs. Served by uvicorn like the real one:

    uvicorn bench.ingest_baseline:app --factory
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette

from ingest.app import create_app
from ingest.settings import IngestSettings
from schema.event import LabelEvent


class InstantPublisher:
    """Acks every event at once, without encoding or sending it."""

    async def publish(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        return None

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


class NoReader:
    async def execute(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return []

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def app() -> Starlette:
    return create_app(
        IngestSettings.from_env(os.environ), lambda _: InstantPublisher(), lambda _: NoReader(), server=True
    )
