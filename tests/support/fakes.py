"""Fakes behind the ingest app's interfaces (the publisher, the stats reader), and the app running on them."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

from ingest.app import create_app
from ingest.errors import BrokerUnavailable
from ingest.settings import IngestSettings
from query.settings import QuerySettings
from schema.event import LabelEvent

READ_TOKEN = "unit-test-read-token"
AUTH = {"authorization": f"Bearer {READ_TOKEN}"}
DEFAULTS = IngestSettings(query=QuerySettings(read_tokens=(READ_TOKEN,)))
"""The documented defaults, with a read token for the query routes."""


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[LabelEvent] = []
        self.keys: list[str | None] = []
        """The idempotency key of each publish, in order."""
        self.down = False

    async def publish(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        self.publish_blocking(events, key)

    def publish_blocking(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        if self.down:
            raise BrokerUnavailable("Kafka did not acknowledge in time", retry_after_s=7)
        self.published.extend(events)
        self.keys.append(key)

    def fields(self) -> list[tuple[str, str, str]]:
        return [(e.label, e.category, e.dom_id) for e in self.published]

    def ready(self) -> bool:
        return not self.down

    def close(self) -> None:
        pass


class FakeReader:
    def __init__(self) -> None:
        self.queries: list[dict[str, Any]] = []

    async def execute(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        self.queries.append(params)
        return [(d, 3, "signup") for d in params["dom_ids"]]

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


@contextmanager
def running(
    publisher: FakePublisher, settings: IngestSettings | None = None, reader: FakeReader | None = None
) -> Iterator[TestClient]:
    """The app with ``settings`` (default: the documented defaults and a read token), behind fakes."""
    app = create_app(settings or DEFAULTS, lambda _: publisher, lambda _: reader or FakeReader())
    with TestClient(app) as client:
        yield client
