"""uvicorn with ingest's one-write HTTP protocol, on a real socket: the same answers, whole, in order."""

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ingest.app import create_app
from ingest.protocol import ONE_WRITE_HTTP
from tests.support.fakes import DEFAULTS, FakePublisher, FakeReader

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"}


@contextmanager
def serving() -> Iterator[tuple[int, FakePublisher]]:
    publisher = FakePublisher()
    app = create_app(DEFAULTS, lambda _: publisher, lambda _: FakeReader())
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
