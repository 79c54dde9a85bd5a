"""Property-based: whatever a client sends gets a 2xx or a 4xx, never a 5xx, and nothing invalid is published."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from ingest.errors import InvalidBeacon
from ingest.parse import TooManyFields, parse_labels
from ingest.validate import Limits, events_from_query
from schema.event import LabelEvent, decode, encode
from tests.support.fakes import FakePublisher, running

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The syntax's own characters, some that break a rule, and anything at all.
labels_text = st.one_of(
    st.text(alphabet="ab_.-/09:+ |!{}%&=\t\n\x00é", max_size=120),
    st.text(max_size=120),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(alphabet="ab_.-/ :!", max_size=70), st.text()
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner))
events = st.fixed_dictionaries(
    {}, optional={"label": scalars, "category": scalars, "dom_id": scalars, "ts": scalars, "other": json_values}
)
json_bodies = st.one_of(
    json_values,
    events,
    st.lists(st.one_of(events, json_values), max_size=8),
    st.fixed_dictionaries({"events": st.lists(st.one_of(events, json_values), max_size=8)}),
)
content_types = st.sampled_from([None, "text/plain;charset=UTF-8", "application/json", "text/html", "garbage"])


class Watched:
    """The app on a fake publisher, and what one request added to it."""

    def __init__(self, client: TestClient, publisher: FakePublisher) -> None:
        self.client = client
        self.publisher = publisher

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[Any, list[LabelEvent]]:
        before = len(self.publisher.published)
        response = self.client.request(method, path, **kwargs)
        return response, self.publisher.published[before:]


@pytest.fixture(scope="module")
def app() -> Iterator[Watched]:
    publisher = FakePublisher()
    with running(publisher) as client:
        yield Watched(client, publisher)


def assert_valid(events: list[LabelEvent]) -> None:
    """What the aggregator would read back: decoding applies every field rule again."""
    assert all(decode(encode(event)) == event for event in events)


@fuzz
@given(labels_text)
def test_labels_parser_returns_fields_or_refuses(text: str) -> None:
    try:
        raw = parse_labels(text)
    except TooManyFields:
        return
    assert all(len(fields) == 3 for fields in raw)
    try:
        events = events_from_query(text, len(text), Limits(), 1_764_000_000_000)
    except InvalidBeacon as exc:
        assert exc.status in (400, 413)
        return
    assert_valid(events)


@fuzz
@given(labels_text)
def test_any_get_is_2xx_or_4xx_and_all_or_nothing(app: Watched, text: str) -> None:
    for path in ("/track/", "/track.gif"):
        response, published = app.request("GET", path, params={"labels": text})
        assert response.status_code in (200, 202) or 400 <= response.status_code < 500
        if response.status_code >= 400:
            assert published == []
        assert_valid(published)


@fuzz
@given(st.one_of(st.binary(max_size=300), labels_text.map(str.encode)), content_types)
def test_any_post_body_is_2xx_or_4xx(app: Watched, body: bytes, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response, published = app.request("POST", "/track/", content=body, headers=headers)
    assert response.status_code == 202 or 400 <= response.status_code < 500
    if response.status_code >= 400:
        assert published == []
    assert_valid(published)


@fuzz
@given(json_bodies, st.sampled_from(["application/json", "text/plain"]))
def test_any_json_document_is_2xx_or_4xx_and_every_event_accounted_for(
    app: Watched, doc: object, content_type: str
) -> None:
    body = json.dumps(doc).encode()
    response, published = app.request("POST", "/track/", content=body, headers={"content-type": content_type})
    assert response.status_code == 202 or 400 <= response.status_code < 500
    assert_valid(published)
    if response.status_code >= 400:
        assert published == []
        return
    answer = response.json()
    assert answer["accepted"] == len(published)
    dropped = answer.get("dropped", [])
    assert all(d["reason"] in ("invalid", "overflow") for d in dropped)
    items = doc["events"] if isinstance(doc, dict) and "events" in doc else doc if isinstance(doc, list) else [doc]
    assert isinstance(items, list)
    assert len(published) + sum(d["reason"] == "invalid" for d in dropped) == len(items)
