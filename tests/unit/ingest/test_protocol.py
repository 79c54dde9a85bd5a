"""uvicorn with ingest's HTTP protocol, on a real socket: the same answers, whole, in order; header fields held to
their limit (a 431) before the app sees them."""

import asyncio
import http.client
import inspect
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httptools
import pytest
import uvicorn
from starlette.testclient import TestClient
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ingest import protocol
from ingest.app import create_app
from ingest.kafka_internals import UnprovedVersion
from ingest.protocol import HOOKED, ONE_WRITE_HTTP, PROVED, OneWriteHttpToolsProtocol, check_versions
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


# uvicorn's names below its public API that ingest.protocol relies on (ingest.protocol.HOOKED): one contract each.
# An upgrade that removes or changes one fails its test, named for it; and ingest refuses another release.


class RecordingTransport(asyncio.Transport):
    """A socket's transport, as far as uvicorn's protocol uses it: what is written, whether it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """uvicorn's own HttpToolsProtocol (not ingest's), on a recording transport, with an app that answers 204."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        self.config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server_state = ServerState()
        self.server_state.default_headers = [(b"server", b"uvicorn")]
        self.app_state: dict[str, Any] = {"pipeline": None}
        self.loop = loop
        self.protocol = self.made(HttpToolsProtocol)
        self.transport = RecordingTransport()

    def made(self, cls: type[HttpToolsProtocol]) -> Any:
        """A protocol of ``cls`` on this connection (httptools binds the callbacks when the parser is made)."""
        self.protocol = cls(self.config, self.server_state, self.app_state, _loop=self.loop)
        return self.protocol

    def answer(self) -> None:
        """Run the event loop until the requests fed are answered."""
        for _ in range(20):
            self.loop.run_until_complete(asyncio.sleep(0))


Check = Callable[[Connection], None]
CONTRACTS: dict[str, Check] = {}
REQUEST = b"GET /track/?labels=a HTTP/1.1\r\nHost: t\r\nX-Long: vvvv\r\n\r\n"


def contract(name: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        CONTRACTS[name] = check
        return check

    return register


def params(method: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(method).parameters)


@pytest.fixture
def connection() -> Iterator[Connection]:
    loop = asyncio.new_event_loop()
    try:
        yield Connection(loop)
    finally:
        pending = asyncio.all_tasks(loop)  # the requests' tasks, answered or cancelled
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


@contract("HttpToolsProtocol")
def _protocol(c: Connection) -> None:
    assert issubclass(OneWriteHttpToolsProtocol, HttpToolsProtocol) and issubclass(HttpToolsProtocol, asyncio.Protocol)
    assert params(HttpToolsProtocol.__init__) == ["self", "config", "server_state", "app_state", "_loop"]


@contract("HttpToolsProtocol.connection_made")
def _connection_made(c: Connection) -> None:
    assert params(HttpToolsProtocol.connection_made) == ["self", "transport"]
    c.protocol.connection_made(c.transport)
    assert c.protocol.transport is c.transport


@contract("HttpToolsProtocol.data_received")
def _data_received(c: Connection) -> None:
    assert params(HttpToolsProtocol.data_received) == ["self", "data"]
    c.protocol.connection_made(c.transport)
    c.protocol.data_received(REQUEST)
    assert c.protocol.cycle is not None, "the parser's callbacks ran within the call"


@contract("HttpToolsProtocol.on_headers_complete")
def _on_headers_complete(c: Connection) -> None:
    assert params(HttpToolsProtocol.on_headers_complete) == ["self"]
    started: list[bool] = []

    class Hooked(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            started.append(True)

    c.made(Hooked).connection_made(c.transport)
    c.protocol.data_received(REQUEST)
    assert started == [True] and c.protocol.cycle is None, "no request is started without it"


@contract("HttpToolsProtocol.on_body")
def _on_body(c: Connection) -> None:
    assert params(HttpToolsProtocol.on_body) == ["self", "body"]
    bodies: list[bytes] = []

    class Hooked(HttpToolsProtocol):
        def on_body(self, body: bytes) -> None:
            bodies.append(body)

    c.made(Hooked).connection_made(c.transport)
    c.protocol.data_received(b"POST /track/ HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd")
    assert bodies == [b"abcd"]


@contract("HttpToolsProtocol.on_message_complete")
def _on_message_complete(c: Connection) -> None:
    assert params(HttpToolsProtocol.on_message_complete) == ["self"]
    ends: list[int] = []

    class Hooked(HttpToolsProtocol):
        def on_message_complete(self) -> None:
            ends.append(len(self.headers))

    c.made(Hooked).connection_made(c.transport)
    c.protocol.data_received(REQUEST + REQUEST[:20])
    assert ends == [2], "called once a request is whole, before the next head's bytes are parsed"


@contract("HttpToolsProtocol.on_response_complete")
def _on_response_complete(c: Connection) -> None:
    assert params(HttpToolsProtocol.on_response_complete) == ["self"]
    c.protocol.connection_made(c.transport)
    answered: list[bool] = []
    theirs = c.protocol.on_response_complete

    def complete() -> None:
        answered.append(c.protocol.cycle.response_complete)
        theirs()

    c.protocol.on_response_complete = complete  # type: ignore[method-assign]
    c.protocol.data_received(REQUEST)
    c.answer()
    assert answered == [True], "called once per answer, written whole"


@contract("HttpToolsProtocol.headers")
def _headers(c: Connection) -> None:
    class Hooked(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            pass

    c.made(Hooked).connection_made(c.transport)
    c.protocol.data_received(REQUEST)
    assert c.protocol.headers == [(b"host", b"t"), (b"x-long", b"vvvv")]


@contract("HttpToolsProtocol.url")
def _url(c: Connection) -> None:
    c.protocol.connection_made(c.transport)
    c.protocol.data_received(REQUEST[:12])
    c.protocol.data_received(REQUEST[12:25])
    assert c.protocol.url == b"/track/?labels=a", "the target so far, once the request line is read"


@contract("HttpToolsProtocol.parser")
def _parser(c: Connection) -> None:
    c.protocol.connection_made(c.transport)
    assert isinstance(c.protocol.parser, httptools.HttpRequestParser)
    c.protocol.data_received(REQUEST[:25])
    assert c.protocol.parser.get_method() == b"GET"


@contract("HttpToolsProtocol.pipeline")
def _pipeline(c: Connection) -> None:
    c.protocol.connection_made(c.transport)
    assert isinstance(c.protocol.pipeline, deque) and not c.protocol.pipeline
    c.protocol.data_received(REQUEST * 2)
    assert len(c.protocol.pipeline) == 1, "the second request waits for the first's answer"
    c.answer()
    assert not c.protocol.pipeline and len(b"".join(c.transport.written).split(b"204 No Content")) == 3


@contract("HttpToolsProtocol.cycle")
def _cycle(c: Connection) -> None:
    c.protocol.connection_made(c.transport)
    assert c.protocol.cycle is None
    c.protocol.data_received(REQUEST)
    assert isinstance(c.protocol.cycle, RequestResponseCycle)


@contract("RequestResponseCycle.response_complete")
def _response_complete(c: Connection) -> None:
    c.protocol.connection_made(c.transport)
    c.protocol.data_received(REQUEST)
    cycle = c.protocol.cycle
    assert cycle.response_complete is False
    c.answer()
    assert cycle.response_complete is True


@contract("HttpToolsProtocol.app_state")
def _app_state(c: Connection) -> None:
    assert c.protocol.app_state is c.app_state, "the lifespan's state itself"


@contract("HttpToolsProtocol.server_state")
def _server_state(c: Connection) -> None:
    assert c.protocol.server_state is c.server_state
    c.protocol.connection_made(c.transport)
    c.protocol.data_received(REQUEST)
    c.answer()
    assert b"\r\nserver: uvicorn\r\n" in b"".join(c.transport.written), "default_headers go on every answer"


@contract("HttpToolsProtocol.loop")
def _loop(c: Connection) -> None:
    assert c.protocol.loop is c.loop


@contract("HttpToolsProtocol.transport")
def _transport(c: Connection) -> None:
    c.protocol.connection_made(c.transport)
    c.protocol.data_received(REQUEST)
    c.answer()
    assert b"".join(c.transport.written).startswith(b"HTTP/1.1 204 No Content\r\n"), "answers are written to it"


@pytest.mark.parametrize("name", list(HOOKED))
def test_each_hooked_uvicorn_name_still_does_what_ingest_relies_on(name: str, connection: Connection) -> None:
    check = CONTRACTS.get(name)
    assert check is not None, f"{name}: hooked, but no contract test"
    try:
        check(connection)
    except Exception as exc:
        pytest.fail(f"uvicorn's {name} changed ({HOOKED[name]}): {exc!r}")


def test_every_uvicorn_contract_is_of_a_hooked_name() -> None:
    assert set(CONTRACTS) == set(HOOKED)


def test_the_installed_uvicorn_and_httptools_are_the_proved_ones() -> None:
    check_versions()
    assert protocol.installed_versions() == PROVED == {"uvicorn": "0.54.0", "httptools": "0.9.0"}


@pytest.mark.parametrize("library", ["uvicorn", "httptools"])
def test_ingest_refuses_to_start_on_another_uvicorn_or_httptools(library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "installed_versions", lambda: {**PROVED, library: "9.9.9"})
    with pytest.raises(UnprovedVersion) as refused:
        check_versions()
    message = str(refused.value)
    assert f"{library} 9.9.9 is installed" in message and f"{library} {PROVED[library]} only" in message
    app = create_app(DEFAULTS, lambda _: FakePublisher(), lambda _: FakeReader())
    with pytest.raises(UnprovedVersion, match=f"{library} 9.9.9"), TestClient(app):  # at startup, as tally ingest
        pass
