"""The ingest app's answers, with fakes behind the publisher and reader interfaces.

Every way a browser sends (GET, the pixel, POST text/plain and JSON), as a
caller sees it: the status, the body naming field and rule, the headers,
and what reached the (fake) publisher. The fakes are in
:mod:`tests.support.fakes`.
"""

import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.answer import TRANSPARENT_GIF
from ingest.app import create_app
from ingest.settings import IngestSettings
from ingest.validate import Limits
from schema.event import encode
from tests.support.fakes import AUTH, DEFAULTS, FakePublisher, FakeReader, running


@pytest.fixture
def client(publisher: FakePublisher, reader: FakeReader) -> Iterator[TestClient]:
    with running(publisher, reader=reader) as client:
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


@pytest.mark.parametrize("path", ["/track/", "/track.gif"])
def test_labels_given_twice_is_400_and_nothing_is_published(
    client: TestClient, publisher: FakePublisher, path: str
) -> None:
    long = "|".join(["signup_clicked"] * 40)  # a query string too long to be remembered (ingest.validate)
    # The short one twice: the second answer comes from the remembered query strings.
    for query in ("labels=signup&labels=home", "labels=signup&labels=home", f"labels={long}&labels=home"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400
        error = json.loads(response.headers["x-tally-error"]) if path.endswith(".gif") else response.json()
        assert error["field"] == "labels"
        assert "given once" in error["rule"]
    assert publisher.published == []
    assert client.get(f"{path}?labels=signup|home").status_code in (200, 202)


def test_broker_down_is_503_with_retry_after(client: TestClient, publisher: FakePublisher) -> None:
    publisher.down = True
    response = client.get("/track/", params={"labels": "signup"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert "may have been recorded" in response.json()["message"]
    assert response.json()["recorded"] == response.headers["x-tally-recorded"] == "unknown"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_get_stats_seed_shape_with_trailing_pipe(client: TestClient, reader: FakeReader) -> None:
    response = client.get("/get_stats/?dom_ids=link1|link2|", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == [["link1", 3, "signup"], ["link2", 3, "signup"]]
    assert reader.queries[0]["dom_ids"] == ("link1", "link2")


@pytest.mark.parametrize(
    ("query", "field"),
    [("", "dom_ids"), ("?dom_ids=|", "dom_ids"), ("?dom_ids=a|b%20c", "dom_ids[1]"), ("?dom_ids=a&day=monday", "day")],
)
def test_get_stats_bad_parameters_are_400(client: TestClient, reader: FakeReader, query: str, field: str) -> None:
    response = client.get(f"/get_stats/{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert reader.queries == []


# -- the pixel ---------------------------------------------------------------


def test_pixel_publishes_then_answers_a_transparent_gif(client: TestClient, publisher: FakePublisher) -> None:
    response = client.get("/track.gif", params={"labels": "signup:forms:btn1|home"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == "no-store"
    assert response.content == TRANSPARENT_GIF
    assert response.content[:6] == b"GIF89a" and response.content[6:10] == b"\x01\x00\x01\x00"  # 1x1
    assert publisher.fields() == [("signup", "forms", "btn1"), ("home", "", "")]


def test_pixel_refused_is_still_an_image_with_the_reason_in_a_header(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.get("/track.gif", params={"labels": "good|bad!label"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "image/gif"
    assert response.content == TRANSPARENT_GIF
    error = json.loads(response.headers["x-tally-error"])
    assert error["field"] == "labels[1].label"
    assert "only letters" in error["rule"]
    assert publisher.published == []


def test_pixel_with_broker_down_is_a_503_image_with_retry_after(client: TestClient, publisher: FakePublisher) -> None:
    publisher.down = True
    response = client.get("/track.gif", params={"labels": "signup"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["retry-after"] == "7"
    assert json.loads(response.headers["x-tally-error"])["error"] == "unavailable"


# -- POST: sendBeacon's text/plain, and JSON -----------------------------------


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", None])
def test_beacon_text_body_is_the_labels_syntax(
    client: TestClient, publisher: FakePublisher, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/track/", content="signup:forms:btn1|home+nav|", headers=headers)
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert publisher.fields() == [("signup", "forms", "btn1"), ("home", "nav", "")]


def test_beacon_text_body_with_a_bad_label_is_refused_whole(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post("/track/", content="good|a:b:c:d", headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["field"] == "labels[1]"
    assert publisher.published == []


def test_beacon_text_body_holding_json_is_read_as_json(client: TestClient, publisher: FakePublisher) -> None:
    body = json.dumps({"events": [{"label": "signup", "category": "forms", "dom_id": "btn1"}]})
    response = client.post("/track/", content=" " + body, headers={"content-type": "text/plain;charset=UTF-8"})
    assert response.status_code == 202
    assert publisher.fields() == [("signup", "forms", "btn1")]


@pytest.mark.parametrize(
    "doc",
    [
        {"label": "signup", "category": "forms", "dom_id": "btn1"},
        [{"label": "signup", "category": "forms", "dom_id": "btn1"}, {"label": "home"}],
        {"events": [{"label": "signup", "category": "forms", "dom_id": "btn1"}, {"label": "home", "category": None}]},
    ],
    ids=["one event", "array", "batch"],
)
def test_json_one_event_an_array_or_a_batch(client: TestClient, publisher: FakePublisher, doc: object) -> None:
    response = client.post("/track/", json=doc)
    assert response.status_code == 202
    assert response.json() == {"accepted": len(publisher.published)}
    assert publisher.fields()[0] == ("signup", "forms", "btn1")
    assert publisher.fields()[1:] in ([], [("home", "", "")])


def test_batch_keeps_good_events_and_reports_each_bad_one(client: TestClient, publisher: FakePublisher) -> None:
    events = [{"label": "ok1"}, {"label": "bad label"}, "not an event", {"label": "ok2", "dom_id": 7}, {"label": "ok3"}]
    response = client.post("/track/", json={"events": events})
    assert response.status_code == 202
    assert response.headers["x-tally-dropped"] == "3"
    body = response.json()
    assert body["accepted"] == 2
    assert [(d["index"], d["reason"], d["field"]) for d in body["dropped"]] == [
        (1, "invalid", "events[1].label"),
        (2, "invalid", "events[2]"),
        (3, "invalid", "events[3].dom_id"),
    ]
    assert "only letters" in body["dropped"][0]["rule"]
    assert body["dropped"][2]["rule"] == "a string"
    assert publisher.fields() == [("ok1", "", ""), ("ok3", "", "")]


def test_batch_whose_every_event_is_bad_is_400_listing_them(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post("/track/", json={"events": [{"label": ""}, {"category": "x"}]})
    assert response.status_code == 400
    assert response.headers["x-tally-dropped"] == "2"
    body = response.json()
    assert (body["field"], body["rule"]) == ("events[0].label", "is required")
    assert [d["index"] for d in body["dropped"]] == [0, 1]
    assert publisher.published == []


@pytest.mark.parametrize(
    ("body", "field", "rule_part"),
    [
        ("{not json", "body", "a JSON document"),
        ('"signup"', "body", "a JSON object"),
        ('{"events": "signup"}', "events", "a list of events"),
        ('{"events": []}', "events", "at least one event"),
        ('{"label": "a", "ts": NaN}', "body", "a JSON document"),
        ('{"label": "a", "ts": 1e400}', "events[0].ts", "epoch milliseconds"),
        ('{"label": "a", "ts": true}', "events[0].ts", "epoch milliseconds"),
        ('{"label": "a", "ts": "1764000000000"}', "events[0].ts", "epoch milliseconds"),
        ("[" * 100_000, "body", "a JSON document"),
    ],
)
def test_malformed_json_is_400_naming_the_field(
    publisher: FakePublisher, body: str, field: str, rule_part: str
) -> None:
    settings = IngestSettings(limits=Limits(max_body_bytes=200_000))
    with running(publisher, settings) as client:
        response = client.post("/track/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert rule_part in response.json()["rule"]
    assert publisher.published == []


def test_json_declared_body_is_not_read_as_labels(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post("/track/", content="signup|home", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["field"] == "body"


def test_other_content_types_are_415(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post(
        "/track/", content="labels=signup", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    assert response.json()["field"] == "content-type"
    assert publisher.published == []


def test_too_many_events_in_a_batch_is_400(publisher: FakePublisher) -> None:
    with running(publisher, IngestSettings(limits=Limits(max_events_per_batch=3))) as client:
        response = client.post("/track/", json={"events": [{"label": "a"}] * 4})
    assert response.status_code == 400
    assert (response.json()["field"], response.json()["rule"]) == ("events", "at most 3 events per request")
    assert publisher.published == []


def test_body_over_the_limit_is_413_when_declared(publisher: FakePublisher) -> None:
    with running(publisher, IngestSettings(limits=Limits(max_body_bytes=100))) as client:
        response = client.post("/track/", content="a|" * 60, headers={"content-type": "text/plain"})
    assert response.status_code == 413
    assert (response.json()["field"], response.json()["rule"]) == ("body", "at most 100 bytes")
    assert publisher.published == []


def test_body_over_the_limit_is_413_while_streaming_without_a_length(publisher: FakePublisher) -> None:
    def chunks() -> Iterator[bytes]:  # sent chunked, no Content-Length: counted while read
        for _ in range(1000):
            yield b"a|" * 25

    with running(publisher, IngestSettings(limits=Limits(max_body_bytes=100))) as client:
        response = client.post("/track/", content=chunks(), headers={"content-type": "text/plain"})
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert publisher.published == []


def test_post_with_broker_down_is_503_with_retry_after(client: TestClient, publisher: FakePublisher) -> None:
    publisher.down = True
    response = client.post("/track/", json={"events": [{"label": "signup"}]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"


# -- CORS ---------------------------------------------------------------------


def test_json_preflight_from_any_origin_by_default(client: TestClient) -> None:
    response = client.options(
        "/track/",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()


def test_cross_origin_beacon_may_read_the_dropped_header(client: TestClient) -> None:
    response = client.post(
        "/track/", json=[{"label": "ok"}, {"label": "!"}], headers={"origin": "https://shop.example"}
    )
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == "*"
    assert "X-Tally-Dropped" in response.headers["access-control-expose-headers"]
    assert "X-Tally-Recorded" in response.headers["access-control-expose-headers"]


def test_allowed_origins_are_configurable(publisher: FakePublisher) -> None:
    settings = IngestSettings.from_env({"TALLY_INGEST_CORS_ORIGINS": "https://shop.example, https://blog.example"})
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    with running(publisher, settings) as client:
        allowed = client.options("/track/", headers={"origin": "https://blog.example", **preflight})
        refused = client.options("/track/", headers={"origin": "https://evil.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://blog.example"
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


# -- privacy --------------------------------------------------------------------


def test_no_cookie_is_set_and_no_ip_reaches_kafka(client: TestClient, publisher: FakePublisher) -> None:
    ip = "203.0.113.7"
    headers = {"x-forwarded-for": ip, "x-real-ip": ip, "cookie": "session=abc"}
    responses = [
        client.get("/track/", params={"labels": "signup"}, headers=headers),
        client.get("/track.gif", params={"labels": "signup"}, headers=headers),
        client.post("/track/", content="signup", headers=headers),
        client.post("/track/", json={"events": [{"label": "signup", "ip": ip}]}, headers=headers),
        client.get("/track/", params={"labels": "bad!"}, headers=headers),
    ]
    assert [r.status_code for r in responses] == [202, 200, 202, 202, 400]
    assert all("set-cookie" not in r.headers for r in responses)
    messages = [json.loads(encode(event)) for event in publisher.published]
    assert len(messages) == 4
    assert all(set(m) == {"v", "label", "category", "dom_id", "ts"} for m in messages)
    assert all(ip not in json.dumps(m) and "testclient" not in json.dumps(m) for m in messages)


def test_middleware_added_to_the_app_sees_every_beacon_request_and_answer(
    publisher: FakePublisher, reader: FakeReader
) -> None:
    seen: list[tuple[str, str, int]] = []

    class Stamping:
        """Records each request and the status of its answer, and stamps the answer with a header."""

        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return

            async def stamping(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen.append((scope["method"], scope["path"], message["status"]))
                    message["headers"] = [*message["headers"], (b"x-stamped", b"yes")]
                await send(message)

            await self.app(scope, receive, stamping)

    app = create_app(DEFAULTS, lambda _: publisher, lambda _: reader)
    app.add_middleware(Stamping)
    with TestClient(app) as client:
        answers = [
            client.get("/track/", params={"labels": "signup|home"}),
            client.get("/track.gif", params={"labels": "signup"}),
            client.post("/track/", content="signup", headers={"content-type": "text/plain"}),
            client.post("/track/", json=[{"label": "signup"}, {"label": "home"}]),
            client.get("/track/", params={"labels": "bad!label"}),
            client.get("/track.gif", params={"labels": "bad!label"}),
        ]
    assert seen == [
        ("GET", "/track/", 202),
        ("GET", "/track.gif", 200),
        ("POST", "/track/", 202),
        ("POST", "/track/", 202),
        ("GET", "/track/", 400),
        ("GET", "/track.gif", 400),
    ]
    assert [answer.headers.get("x-stamped") for answer in answers] == ["yes"] * len(answers)
    assert [answer.status_code for answer in answers] == [status for _, _, status in seen]
    assert len(publisher.published) == 6


def test_an_idempotency_key_reaches_the_publisher_from_every_way_to_send(
    client: TestClient, publisher: FakePublisher
) -> None:
    answers = [
        client.get("/track/", params={"labels": "a"}, headers={"Idempotency-Key": "k1"}),
        client.get("/track.gif", params={"labels": "a", "idempotency_key": "k2"}),
        client.post("/track/", params={"idempotency_key": "k3"}, content="a", headers={"content-type": "text/plain"}),
        client.post("/track/", json={"label": "a"}, headers={"Idempotency-Key": "k4"}),
        client.post(
            "/track/", params={"idempotency_key": "k5"}, json={"label": "a"}, headers={"Idempotency-Key": "k5"}
        ),
        client.get("/track/", params={"labels": "a"}),
    ]
    assert [r.status_code for r in answers] == [202, 200, 202, 202, 202, 202]
    assert publisher.keys == ["k1", "k2", "k3", "k4", "k5", None]


def test_a_repeat_gets_the_answer_the_first_send_got(client: TestClient, publisher: FakePublisher) -> None:
    batch = {"events": [{"label": "a"}, {"label": "bad label"}]}
    first, repeat = (client.post("/track/", json=batch, headers={"Idempotency-Key": "k"}) for _ in range(2))
    assert (first.status_code, first.json(), first.headers["x-tally-dropped"]) == (
        repeat.status_code,
        repeat.json(),
        repeat.headers["x-tally-dropped"],
    )
    assert publisher.keys == ["k", "k"]


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("labels=a&idempotency_key=", {}, "idempotency_key"),
        ("labels=a&idempotency_key=" + "k" * 65, {}, "idempotency_key"),
        ("labels=a&idempotency_key=a%2Fb", {}, "idempotency_key"),
        ("labels=a&idempotency_key=k&idempotency_key=k", {}, "idempotency_key"),
        ("labels=a", {"Idempotency-Key": ""}, "Idempotency-Key"),
        ("labels=a", {"Idempotency-Key": "k:1"}, "Idempotency-Key"),
        ("labels=a&idempotency_key=k", {"Idempotency-Key": "j"}, "Idempotency-Key, idempotency_key"),
    ],
)
def test_a_malformed_key_is_400_naming_its_field_and_nothing_is_published(
    client: TestClient, publisher: FakePublisher, query: str, headers: dict[str, str], field: str
) -> None:
    for path in ("/track/", "/track.gif"):
        response = client.get(f"{path}?{query}", headers=headers)
        assert response.status_code == 400
        error = response.json() if path == "/track/" else json.loads(response.headers["x-tally-error"])
        assert error["field"] == field, error
        assert error["rule"]
    response = client.post(f"/track/?{query}", json={"label": "a"}, headers=headers)
    assert (response.status_code, response.json()["field"]) == (400, field)
    assert publisher.published == []


def test_the_key_header_given_twice_is_400(client: TestClient, publisher: FakePublisher) -> None:
    response = client.get("/track/?labels=a", headers=[("Idempotency-Key", "k"), ("Idempotency-Key", "k")])
    assert (response.status_code, response.json()["field"], response.json()["rule"]) == (
        400,
        "Idempotency-Key",
        "given once",
    )
    assert publisher.published == []


def test_a_cross_origin_page_may_send_the_key_header(client: TestClient) -> None:
    response = client.options(
        "/track/",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, idempotency-key",
        },
    )
    assert response.status_code == 200
    assert "idempotency-key" in response.headers["access-control-allow-headers"].lower()
