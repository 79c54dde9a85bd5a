"""uvicorn's HTTP protocol (httptools), writing each answer with one system call instead of two.

uvicorn writes an answer's head when the app sends ``http.response.start``
and its body at ``http.response.body``, and uvloop sends each write to the
socket at once: two ``send`` calls per answer, each a trip through the
kernel's TCP stack (on loopback, through the client's side too). Here the
writes of one event-loop step are gathered and go out together at the end
of the step (``call_soon``): what a beacon answers arrives whole in one
segment, a few microseconds later. The connection's other calls pass
through, a close or an EOF after what was gathered.

It also holds a request's header fields to ``TALLY_MAX_HEADER_BYTES``
(:class:`~ingest.validate.Limits`): httptools has no limit of its own and
keeps a header whole in memory, however long, before uvicorn sees it. Past
the limit the answer is a 431 with the JSON of every refusal (field
``headers``; a GIF on the pixel route), counted in
``tally_ingest_requests_total`` like the app's answers, and the connection
is closed: the app never sees the request. A head still arriving well past
the limit (the request line's allowance added) is refused before it is read
whole, so a client cannot make ingest hold more than about one read of it.

``tally ingest`` serves with it (``http=ONE_WRITE_HTTP``); so does the
ingest benchmark's floor (a).

uvicorn has no public API for either: this module subclasses its httptools
protocol and uses the names in :data:`HOOKED`, the only module of Tally
that names them. They hold only for the releases of :data:`PROVED` (pinned
in ``pyproject.toml``): :func:`check_versions` refuses any other when
ingest's app starts, and ``tests/unit/ingest/test_protocol.py`` holds a
contract test per name, failing with the name when an upgrade removes or
changes it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Mapping
from typing import Any, Final

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingest.answer import refused
from ingest.errors import HeadersTooLarge
from ingest.kafka_internals import UnprovedVersion
from ingest.metrics import IngestMetrics
from ingest.validate import Limits

ONE_WRITE_HTTP: Final = "ingest.protocol:OneWriteHttpToolsProtocol"
"""uvicorn's ``http`` setting (``--http``) that chooses this protocol."""
LINGER_S: Final = 1.0
"""How long a refused connection's further bytes are read and dropped before it is closed."""
REQUEST_LINE_ALLOWANCE: Final = 4096
"""Bytes of a request line besides its query string (method, path, version), for the guard on a head still arriving."""

PROVED: Final[Mapping[str, str]] = {"uvicorn": "0.54.0", "httptools": "0.9.0"}
"""The releases whose internals below are proved (the contract tests): the pins of pyproject.toml."""

HOOKED: Final[Mapping[str, str]] = {
    "HttpToolsProtocol": "uvicorn's httptools protocol (uvicorn.protocols.http.httptools_impl), subclassed here",
    "HttpToolsProtocol.connection_made": "overridden: given the GatheringTransport, which it keeps as its transport",
    "HttpToolsProtocol.data_received": "overridden: feeds httptools, whose callbacks below run within the call",
    "HttpToolsProtocol.on_headers_complete": "httptools' callback, where uvicorn starts the app: not on a refused head",
    "HttpToolsProtocol.on_body": "httptools' callback, handing the body to the app: not for a refused request",
    "HttpToolsProtocol.on_message_complete": "httptools' callback ending a request: where the next head may begin",
    "HttpToolsProtocol.on_response_complete": "uvicorn's call once an answer is written: the 431 waits its turn",
    "HttpToolsProtocol.headers": "the head's fields as received, (name, value) bytes: counted against the limit",
    "HttpToolsProtocol.url": "the request target as received (on_url): the refused request's path",
    "HttpToolsProtocol.parser": "its httptools.HttpRequestParser: the refused request's method (get_method)",
    "HttpToolsProtocol.pipeline": "the requests waiting their turn on the connection: the 431 comes after them",
    "HttpToolsProtocol.cycle": "the request being answered (RequestResponseCycle): the 431 comes after it",
    "RequestResponseCycle.response_complete": "whether that request's answer is written",
    "HttpToolsProtocol.app_state": "the lifespan's state: the pipeline (its Limits) and the metrics (the 431 counted)",
    "HttpToolsProtocol.server_state": "ServerState.default_headers: uvicorn's date and server fields, on the 431 too",
    "HttpToolsProtocol.loop": "the event loop: the gathered writes' flush, the refused connection's close",
    "HttpToolsProtocol.transport": "the transport it writes answers to: the 431 is written to it as well",
}
"""Each uvicorn name below its public API that ingest relies on, and why."""


def installed_versions() -> dict[str, str]:
    return {library: importlib.metadata.version(library) for library in PROVED}


def check_versions() -> None:
    """Refuse to run on a uvicorn or httptools other than :data:`PROVED`."""
    for library, found in installed_versions().items():
        proved = PROVED[library]
        if found != proved:
            raise UnprovedVersion(
                f"{library} {found} is installed, but ingest is proved with {library} {proved} only:"
                f" its HTTP protocol uses the library's internals (ingest/protocol.py); install {library}=={proved}"
            )


class GatheringTransport(asyncio.Transport):
    """A transport whose writes within one event-loop step reach the socket together."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._gathered: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._gathered:
            self._loop.call_soon(self.flush)
        self._gathered.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        if not self._gathered:
            return
        data = self._gathered[0] if len(self._gathered) == 1 else b"".join(self._gathered)
        self._gathered = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._gathered = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self._gathered)) + self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`GatheringTransport`, holding header fields to their limit."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheringTransport(transport, self.loop))
        pipeline = self.app_state.get("pipeline")
        limits: Limits = pipeline.limits if pipeline is not None else Limits()
        self._max_header_bytes = limits.max_header_bytes
        self._max_head_arriving = limits.max_header_bytes + limits.max_query_string + REQUEST_LINE_ALLOWANCE
        self._in_head = True  # the next bytes are a request's head
        self._read = 0  # bytes of the read being parsed
        self._head_bound = 0  # at least the bytes of the current head read so far (request line included)
        self._head_reads = 0  # bytes of the reads that were all head, for the current head: at most its bytes
        self._heads = 0  # heads read whole on this connection
        self._refused = False
        self._refusal: tuple[str, str] | None = None  # the refused request's path and method, until answered

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered and closing: nothing more is read
            return
        self._read = len(data)
        all_head, heads = self._in_head, self._heads
        if all_head:
            self._head_bound += self._read
        super().data_received(data)
        if self._refused or not (all_head and self._in_head and heads == self._heads):
            return
        # A head still arriving: refused once it is known to be too long, before it is read whole.
        self._head_reads += self._read
        if self._head_reads > self._max_head_arriving:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        # A head within the limit in all (the usual request) is not counted field by field.
        too_long = self._head_bound > self._max_header_bytes and _field_bytes(self.headers) > self._max_header_bytes
        self._head_bound = self._head_reads = 0
        if too_long and not self._refused:
            self._refuse_head()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bound = self._read  # the next head may begin within this read: all that is left of it, at most
        if not self._refused:
            super().on_message_complete()

    def _refuse_head(self) -> None:
        """Stop reading; answer 431 once the requests before this one on the connection are answered."""
        self._refused = True
        self._refusal = self._path_and_method()
        if self._answering():
            return  # answered by on_response_complete, in its turn
        self._answer_refusal()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and not self._answering():
            self._answer_refusal()

    def _answering(self) -> bool:
        """Whether an earlier request on this connection is still being answered, or waits its turn."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _answer_refusal(self) -> None:
        """The 431 (on the pixel route a GIF), counted; then the connection closes. Nothing reached the app."""
        assert self._refusal is not None
        path, method = self._refusal
        self._refusal = None
        exc = HeadersTooLarge("headers", f"at most {self._max_header_bytes} bytes of header fields")
        reply = refused(exc.status, exc.body(), exc.headers(), as_pixel=path.endswith(".gif"))
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [name + b": " + value + b"\r\n" for name, value in reply.headers]
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + reply.body)
        # Closed at once with the client still sending, the socket would answer its bytes with a reset, which
        # can reach the client before the 431 does: end our side, read and drop what still comes, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
        metrics: IngestMetrics | None = self.app_state.get("metrics")
        if metrics is not None:
            metrics.request(path, method, exc.status)

    def _path_and_method(self) -> tuple[str, str]:
        """The refused request's path and method, as far as they arrived (``""`` and ``other`` if not)."""
        url: bytes = getattr(self, "url", b"")  # uvicorn's, from the request line
        if not url:
            return "", "other"
        method = self.parser.get_method().decode("latin-1")
        try:
            return httptools.parse_url(url).path.decode("latin-1"), method
        except httptools.HttpParserInvalidURLError:
            return "", method


def _field_bytes(headers: list[tuple[bytes, bytes]]) -> int:
    """Bytes of header fields as sent: ``name: value\\r\\n`` each."""
    return sum(len(name) + len(value) + 4 for name, value in headers)
