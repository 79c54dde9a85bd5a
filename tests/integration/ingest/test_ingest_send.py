"""Every way a browser sends, on the real broker: what is on the topic is what the answers said.

Each test has its own topic. The events are read back from Kafka with
their keys: one counter (``label:category:dom_id``) per key.
"""

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ingest.app import create_app
from ingest.guard import OVERFLOW_LABEL
from ingest.settings import IngestSettings
from ingest.validate import Limits
from schema.settings import KafkaSettings
from stack.ports import free_port
from stack.stack import Stack
from tests.support.browser import BROWSER
from tests.support.kafka import messages, on_topic

pytestmark = pytest.mark.kafka

CLIENT_IP = "203.0.113.7"


@pytest.fixture
def client(stack: Stack, topic: str) -> Iterator[TestClient]:
    settings = IngestSettings(kafka=KafkaSettings(bootstrap=stack.settings.kafka.bootstrap, topic=topic))
    with TestClient(create_app(settings), headers=BROWSER) as client:
        yield client


def test_every_way_to_send_lands_on_the_topic_keyed_by_counter(client: TestClient, stack: Stack, topic: str) -> None:
    batch = {"events": [{"label": "signup", "category": "forms", "dom_id": "btn1"}, {"label": "bad label"}]}
    answers = [
        client.get("/track/", params={"labels": "signup:forms:btn1|home"}),
        client.get("/track.gif", params={"labels": "home"}),
        client.post("/track/", content="signup+forms+btn1", headers={"content-type": "text/plain;charset=UTF-8"}),
        client.post("/track/", content=json.dumps([{"label": "home"}]), headers={"content-type": "text/plain"}),
        client.post("/track/", json=batch),
    ]
    assert [r.status_code for r in answers] == [202, 200, 202, 202, 202]
    assert answers[4].headers["x-tally-dropped"] == "1"

    assert on_topic(stack, topic) == Counter(
        {(b"signup:forms:btn1", "signup", "forms", "btn1"): 3, (b"home::", "home", "", ""): 3}
    )


def test_refused_and_dropped_events_never_reach_the_topic(client: TestClient, stack: Stack, topic: str) -> None:
    bot = {"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
    answers = [
        client.get("/track/", params={"labels": "good|bad!"}),
        client.get("/track.gif", params={"labels": "a:b:c:d"}),
        client.post("/track/", json={"events": [{"label": ""}, {"label": "x" * 65}]}),
        client.post("/track/", content="x|" * 40_000, headers={"content-type": "text/plain"}),
        client.get("/track/", params={"labels": "crawled"}, headers=bot),
    ]
    assert [r.status_code for r in answers] == [400, 400, 400, 413, 202]
    assert on_topic(stack, topic) == Counter()


def test_no_ip_and_no_cookie(client: TestClient, stack: Stack, topic: str) -> None:
    headers = {"x-forwarded-for": CLIENT_IP, "x-real-ip": CLIENT_IP}
    answer = client.post("/track/", json={"label": "signup", "ip": CLIENT_IP}, headers=headers)
    assert answer.status_code == 202
    assert "set-cookie" not in answer.headers
    ((_, message),) = messages(stack, topic)
    assert set(json.loads(message)) == {"v", "label", "category", "dom_id", "ts"}
    assert CLIENT_IP.encode() not in message and b"testclient" not in message


def test_new_labels_past_the_cap_are_one_overflow_counter(stack: Stack, topic: str) -> None:
    settings = IngestSettings(
        kafka=KafkaSettings(bootstrap=stack.settings.kafka.bootstrap, topic=topic),
        limits=Limits(max_new_labels_per_day=1),
    )
    with TestClient(create_app(settings), headers=BROWSER) as client:
        answer = client.get("/track/", params={"labels": "home|junk1:c:d|junk2|home"})
    assert answer.status_code == 202
    assert answer.headers["x-tally-dropped"] == "2"
    overflow_key = f"{OVERFLOW_LABEL}::".encode()
    assert on_topic(stack, topic) == Counter(
        {(b"home::", "home", "", ""): 2, (overflow_key, OVERFLOW_LABEL, "", ""): 2}
    )


def test_no_broker_means_an_honest_503_for_every_way_to_send(stack: Stack, topic: str) -> None:
    settings = IngestSettings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic=topic))
    with TestClient(create_app(settings), headers=BROWSER) as client:
        answers = {
            "get": client.get("/track/", params={"labels": "signup"}),
            "pixel": client.get("/track.gif", params={"labels": "signup"}),
            "beacon": client.post("/track/", content="signup", headers={"content-type": "text/plain"}),
            "batch": client.post("/track/", json={"events": [{"label": "signup"}, {"label": "home"}]}),
        }
    assert {way: r.status_code for way, r in answers.items()} == dict.fromkeys(answers, 503)
    assert all(int(r.headers["retry-after"]) > 0 for r in answers.values())
    assert answers["batch"].json()["error"] == "unavailable"
    assert answers["pixel"].headers["content-type"] == "image/gif"
    assert on_topic(stack, topic) == Counter()
