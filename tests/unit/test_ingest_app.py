"""The ingest app's answers, with fakes behind the publisher and reader interfaces."""

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from starlette.testclient import TestClient

from ingest.app import create_app
from ingest.errors import BrokerUnavailable
from ingest.settings import IngestSettings
from schema.event import LabelEvent


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[LabelEvent] = []
        self.down = False

    async def publish(self, events: Sequence[LabelEvent]) -> None:
        if self.down:
            raise BrokerUnavailable("Kafka did not acknowledge in time", retry_after_s=7)
        self.published.extend(events)

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


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def reader() -> FakeReader:
    return FakeReader()


@pytest.fixture
def client(publisher: FakePublisher, reader: FakeReader) -> Iterator[TestClient]:
    app = create_app(IngestSettings(), lambda _: publisher, lambda _: reader)
    with TestClient(app) as client:
        yield client


def test_track_publishes_every_label_then_answers_202(client: TestClient, publisher: FakePublisher) -> None:
    response = client.get("/track/", params={"labels": "signup:forms:btn1|home"})
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert [(e.label, e.category, e.dom_id) for e in publisher.published] == [
        ("signup", "forms", "btn1"),
        ("home", "", ""),
    ]


def test_bad_label_is_400_and_nothing_is_published(client: TestClient, publisher: FakePublisher) -> None:
    response = client.get("/track/", params={"labels": "good|bad!label"})
    assert response.status_code == 400
    assert response.json()["field"] == "labels[1].label"
    assert "only letters" in response.json()["rule"]
    assert publisher.published == []


def test_broker_down_is_503_with_retry_after(client: TestClient, publisher: FakePublisher) -> None:
    publisher.down = True
    response = client.get("/track/", params={"labels": "signup"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert "nothing was recorded" in response.json()["message"]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_get_stats_seed_shape_with_trailing_pipe(client: TestClient, reader: FakeReader) -> None:
    response = client.get("/get_stats/?dom_ids=link1|link2|")
    assert response.status_code == 200
    assert response.json() == [["link1", 3, "signup"], ["link2", 3, "signup"]]
    assert reader.queries[0]["dom_ids"] == ("link1", "link2")


@pytest.mark.parametrize(
    ("query", "field"),
    [("", "dom_ids"), ("?dom_ids=|", "dom_ids"), ("?dom_ids=a|b%20c", "dom_ids[1]"), ("?dom_ids=a&day=monday", "day")],
)
def test_get_stats_bad_parameters_are_400(client: TestClient, reader: FakeReader, query: str, field: str) -> None:
    response = client.get(f"/get_stats/{query}")
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert reader.queries == []
