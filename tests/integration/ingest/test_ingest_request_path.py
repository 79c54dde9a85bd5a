"""What ``tally ingest`` reads of a request, on the real process and the real broker: its headers and its body's
encoding.

A header past ``TALLY_MAX_HEADER_BYTES`` is refused (431) by the server's HTTP
protocol before the app sees it, so only the real process shows it. A
compressed batch is read like a plain one; what is on the topic is what the
answers said.
"""

import gzip
import http.client
import json
import socket
import urllib.parse
import urllib.request
import zlib
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.browser import BROWSER
from tests.support.kafka import on_topic
from tests.support.servers import Services

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

BATCH = {"events": [{"label": "signup", "category": "forms", "dom_id": f"btn{i % 4}"} for i in range(400)]}


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    connection.request("POST", "/track/", body=body, headers={**BROWSER, **headers})
    answer = connection.getresponse()
    status, doc = answer.status, json.loads(answer.read())
    connection.close()
    return status, doc


def requests_answered(url: str, status: int) -> float:
    """``tally_ingest_requests_total`` of one status, summed over routes and methods."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
        return sum(
            s.value
            for f in families
            for s in f.samples
            if s.name == "tally_ingest_requests_total" and s.labels["status"] == str(status)
        )


def test_a_200_kb_header_is_431_naming_the_limit_and_nothing_is_published(services: Services) -> None:
    services.start_ingest()
    with socket.create_connection(("127.0.0.1", services.ingest_port), timeout=10) as client:
        client.sendall(
            b"GET /track/?labels=signup HTTP/1.1\r\nHost: tally\r\nUser-Agent: Mozilla/5.0\r\nCookie: "
            + b"c" * 200_000
            + b"\r\n\r\n"
        )
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert json.loads(body) == {
        "error": "too_large",
        "field": "headers",
        "rule": "at most 16384 bytes of header fields",
        "message": "headers: at most 16384 bytes of header fields",
    }
    assert requests_answered(services.ingest_url, 431) == 1
    # The same process goes on serving, and the refused request put nothing on the topic.
    status, doc = post(services.ingest_url, b"home", {"content-type": "text/plain"})
    assert (status, doc) == (202, {"accepted": 1})
    assert on_topic(services.stack, services.topic) == Counter({("home", "", ""): 1})


def test_the_header_limit_is_a_setting(services: Services) -> None:
    services.start_ingest(TALLY_MAX_HEADER_BYTES="65536")
    status, doc = post(services.ingest_url, b"home", {"content-type": "text/plain", "cookie": "c" * 40_000})
    assert (status, doc) == (202, {"accepted": 1})


def test_gzip_and_deflate_batches_are_counted_like_plain_ones(services: Services) -> None:
    services.start_ingest()
    plain = json.dumps(BATCH).encode()
    json_type, text_type = {"content-type": "application/json"}, {"content-type": "text/plain"}
    answers = [
        post(services.ingest_url, plain, json_type),
        post(services.ingest_url, gzip.compress(plain), {**json_type, "content-encoding": "gzip"}),
        post(services.ingest_url, zlib.compress(plain), {**json_type, "content-encoding": "deflate"}),
        post(services.ingest_url, gzip.compress(b"home|home"), {**text_type, "content-encoding": "gzip"}),
    ]
    assert answers == [(202, {"accepted": 400})] * 3 + [(202, {"accepted": 2})]
    assert on_topic(services.stack, services.topic) == Counter(
        {
            **{("signup", "forms", f"btn{i}"): 300 for i in range(4)},
            ("home", "", ""): 2,
        }
    )


def test_a_bomb_is_413_and_another_encoding_415_and_nothing_is_published(services: Services) -> None:
    services.start_ingest()
    megabyte = gzip.compress(b" " * 1_000_000, compresslevel=9)
    bomb = gzip.compress(b"[") + megabyte * 50 + gzip.compress(b"]")  # 50 MB of JSON in 50 KB
    answers = [
        post(services.ingest_url, bomb, {"content-type": "application/json", "content-encoding": "gzip"}),
        post(services.ingest_url, b"\x1b\x03", {"content-type": "application/json", "content-encoding": "br"}),
        post(services.ingest_url, b"signup", {"content-type": "text/plain", "content-encoding": "gzip"}),
    ]
    assert [(status, doc["field"], doc["rule"]) for status, doc in answers] == [
        (413, "body", "at most 65536 bytes, inflated"),
        (415, "content-encoding", "gzip, deflate or identity, one of them; not br"),
        (400, "body", "gzip data, as Content-Encoding says"),
    ]
    assert on_topic(services.stack, services.topic) == Counter()
