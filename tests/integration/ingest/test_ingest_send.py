"""Every way a browser sends, on the real broker: what is on the topic is what the answers said.

Each test has its own topic. The events are read back from Kafka as the
worker reads them (``decode_record``), each counter's in its one partition
(:func:`tests.support.kafka.on_topic` checks that).
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
from tests.support.kafka import messages, on_topic, records

pytestmark = pytest.mark.kafka

CLIENT_IP = "203.0.113.7"


@pytest.fixture
def client(stack: Stack, topic: str) -> Iterator[TestClient]:
    settings = IngestSettings(kafka=KafkaSettings(bootstrap=stack.settings.kafka.bootstrap, topic=topic))
    with TestClient(create_app(settings), headers=BROWSER) as client:
        yield client


def test_every_way_to_send_lands_on_the_topic_in_its_counters_partition(
    client: TestClient, stack: Stack, topic: str
) -> None:
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

    assert on_topic(stack, topic) == Counter({("signup", "forms", "btn1"): 3, ("home", "", ""): 3})
    assert all(key is None and record.key is None for _, key, record in records(stack, topic))


KEY = "0b7e9f1c-5d0a-4c3e-9a57-2f6a1d8e4b21"


def test_every_way_to_send_carries_its_idempotency_key_and_a_repeat_the_same_records(
    client: TestClient, stack: Stack, topic: str
) -> None:
    labels = "|".join(f"l{n}:c:d{n}" for n in range(12))
    batch = {"events": [{"label": f"l{n}", "category": "c", "dom_id": f"d{n}"} for n in range(12)]}
    ways = {
        "get": lambda key: client.get("/track/", params={"labels": labels}, headers={"idempotency-key": key}),
        "pixel": lambda key: client.get("/track.gif", params={"labels": labels, "idempotency_key": key}),
        "beacon": lambda key: client.post(
            "/track/", params={"idempotency_key": key}, content=labels, headers={"content-type": "text/plain"}
        ),
        "batch": lambda key: client.post("/track/", json=batch, headers={"idempotency-key": key}),
        "both": lambda key: client.post(
            "/track/", params={"idempotency_key": key}, json=batch, headers={"idempotency-key": key}
        ),
    }
    for way, send in ways.items():
        first, repeat = send(f"{way}-{KEY}"), send(f"{way}-{KEY}")
        assert (first.status_code, first.content) == (repeat.status_code, repeat.content), way
        assert first.status_code in (200, 202), (way, first.text)

    by_key: dict[str, list[tuple[int, frozenset[tuple[str, str, str]]]]] = {}
    for partition, kafka_key, record in records(stack, topic):
        assert record.key is not None and kafka_key == record.key.encode()
        counters = frozenset((e.label, e.category, e.dom_id) for e in record.events)
        by_key.setdefault(record.key, []).append((partition, counters))
    assert set(by_key) == {f"{way}-{KEY}" for way in ways}
    twelve = {(f"l{n}", "c", f"d{n}") for n in range(12)}
    for key, placed in by_key.items():
        sends = sorted(placed)
        assert sends[0::2] == sends[1::2], key  # the repeat: the same records, partition by partition
        assert set().union(*(c for _, c in sends[0::2])) == twelve  # one record per partition, together the request
        assert len({p for p, _ in sends}) == len(sends) // 2
    assert on_topic(stack, topic) == Counter(dict.fromkeys(twelve, 2 * len(ways)))


@pytest.mark.parametrize(
    ("params", "headers", "field", "rule"),
    [
        ({"idempotency_key": ""}, {}, "idempotency_key", "is empty: 1 to 64 characters"),
        ({}, {"idempotency-key": "k" * 65}, "Idempotency-Key", "at most 64 characters"),
        ({}, {"idempotency-key": "a b"}, "Idempotency-Key", "only letters, digits, _ and -"),
        ({"idempotency_key": "a.b"}, {}, "idempotency_key", "only letters, digits, _ and -"),
        ([("idempotency_key", "a"), ("idempotency_key", "a")], {}, "idempotency_key", "given once"),
        ({"idempotency_key": "a"}, {"idempotency-key": "b"}, "Idempotency-Key, idempotency_key", "the same key"),
    ],
)
def test_a_malformed_idempotency_key_is_refused_naming_its_field(
    client: TestClient, stack: Stack, topic: str, params: object, headers: dict[str, str], field: str, rule: str
) -> None:
    answers = [
        client.get("/track/", params=[("labels", "signup"), *_pairs(params)], headers=headers),
        client.get("/track.gif", params=[("labels", "signup"), *_pairs(params)], headers=headers),
        client.post("/track/", params=_pairs(params), json={"label": "signup"}, headers=headers),
    ]
    for answer in answers[0::2]:
        assert answer.status_code == 400
        assert answer.json()["field"] == field
        assert answer.json()["rule"].startswith(rule)
    assert answers[1].status_code == 400 and answers[1].headers["content-type"] == "image/gif"
    assert json.loads(answers[1].headers["x-tally-error"])["field"] == field
    assert on_topic(stack, topic) == Counter()


def _pairs(params: object) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, dict) else list(params)  # type: ignore[arg-type]


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
    assert set(json.loads(message)) == {"v", "events"}
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
    assert on_topic(stack, topic) == Counter({("home", "", ""): 2, (OVERFLOW_LABEL, "", ""): 2})


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
