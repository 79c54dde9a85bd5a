"""uvicorn with ingest's HTTP protocol, on a real socket: the same answers, whole, in order; header fields held to
their limit (a 431) before the app sees them."""

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ingest.app import create_app
from ingest.protocol import ONE_WRITE_HTTP
from ingest.settings import IngestSettings
from ingest.validate import Limits
from tests.support.fakes import DEFAULTS, FakePublisher, FakeReader

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"}


@contextmanager
def serving(settings: IngestSettings = DEFAULTS) -> Iterator[tuple[int, FakePublisher]]:
    publisher = FakePublisher()
    app = create_app(settings, lambda _: publisher, lambda _: FakeReader())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=ONE_WRITE_HTTP, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port, publisher
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_answers_on_one_kept_alive_connection_arrive_whole_and_in_order() -> None:
    with serving() as (port, publisher):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for n in range(1, 4):
            connection.request("GET", f"/track/?labels={'|'.join(f'l{i}' for i in range(n))}", headers=BROWSER)
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (202, b'{"accepted":%d}' % n)
        connection.request("POST", "/track/", body=b'[{"label":"a"},{"label":"b!"}]', headers=BROWSER)
        answer = connection.getresponse()
        assert answer.status == 202 and answer.getheader("x-tally-dropped") == "1"
        assert b'"accepted":1' in answer.read()
        connection.request("GET", "/track.gif?labels=bad%21", headers=BROWSER)
        answer = connection.getresponse()
        assert answer.status == 400 and answer.getheader("content-type") == "image/gif"
        answer.read()
        connection.request("GET", "/metrics")
        answer = connection.getresponse()
        assert answer.status == 200 and b"tally_ingest_requests_total" in answer.read()
        connection.close()
        assert len(publisher.fields()) == 1 + 2 + 3 + 1


def test_pipelined_requests_get_their_answers_in_order() -> None:
    with serving() as (port, _), socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        requests = b"".join(
            b"GET /track/?labels=p%d HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0\r\n\r\n" % n for n in range(5)
        )
        client.sendall(requests + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 202 Accepted") == 5
    assert received.endswith(b'{"status":"ok"}')


def answer_to(port: int, request: bytes) -> bytes:
    """Everything the server sends back to ``request`` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(request)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return received


def request_with_cookie(path: str, cookie_bytes: int) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\nCookie: %s\r\n\r\n" % (
        path.encode(),
        b"c" * cookie_bytes,
    )


def metric_line(port: int, needle: str) -> list[str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return [line for line in text.splitlines() if needle in line and not line.startswith("#")]


def test_a_200_kb_header_is_431_naming_the_limit_and_never_reaches_the_app() -> None:
    with serving() as (port, publisher):
        received = answer_to(port, request_with_cookie("/track/?labels=signup", 200_000))
        refused_total = metric_line(port, "requests_total{")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"content-type: application/json" in head and b"connection: close" in head
    assert json.loads(body) == {
        "error": "too_large",
        "field": "headers",
        "rule": "at most 16384 bytes of header fields",
        "message": "headers: at most 16384 bytes of header fields",
    }
    assert publisher.published == []
    assert refused_total == ['tally_ingest_requests_total{method="GET",route="/track/",status="431"} 1.0']


def test_header_fields_up_to_the_limit_are_read() -> None:
    fields = len(b"Host: x\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\nCookie: \r\n")
    with serving(IngestSettings(limits=Limits(max_header_bytes=4096))) as (port, publisher):
        at_limit = answer_to(port, request_with_cookie("/track/?labels=signup", 4096 - fields))
        past_it = answer_to(port, request_with_cookie("/track/?labels=signup", 4096 - fields + 1))
    assert at_limit.startswith(b"HTTP/1.1 202 ")
    assert past_it.startswith(b"HTTP/1.1 431 ")
    assert b'"rule":"at most 4096 bytes of header fields"' in past_it
    assert len(publisher.published) == 1


def test_the_pixel_refused_for_its_headers_is_still_an_image() -> None:
    with serving() as (port, _):
        received = answer_to(port, request_with_cookie("/track.gif?labels=signup", 20_000))
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and b"content-type: image/gif" in head
    assert b'x-tally-error: {"error":"too_large","field":"headers"' in head
    assert body.startswith(b"GIF89a")


def test_a_header_that_never_ends_is_refused_before_it_is_read_whole() -> None:
    with serving() as (port, publisher), socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"POST /track/ HTTP/1.1\r\nHost: x\r\nCookie: ")
        received = b""
        for _ in range(1000):  # a megabyte at most, a kilobyte at a time: the head never ends
            try:
                client.sendall(b"c" * 1000)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.001)
        while chunk := client.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 431 ")
    assert b'"field":"headers"' in received
    assert publisher.published == []


def test_a_pipelined_request_past_the_limit_is_431_after_the_one_before_it_is_answered() -> None:
    with serving() as (port, publisher):
        received = answer_to(
            port,
            b"GET /track/?labels=first HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0\r\n\r\n"
            + request_with_cookie("/track/?labels=second", 20_000),
        )
    first, _, second = received.partition(b'{"accepted":1}')
    assert first.startswith(b"HTTP/1.1 202 ")
    assert second.startswith(b"HTTP/1.1 431 ") and b'"field":"headers"' in second
    assert [e.label for e in publisher.published] == ["first"]
