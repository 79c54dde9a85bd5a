"""The beacon routes: every way a browser sends, through one :class:`~ingest.pipeline.Pipeline`.

- ``GET /track/?labels=...``  the seed's call: 202 ``{"accepted": n}``
- ``GET /track.gif?labels=...`` a 1x1 GIF for ``<img>`` and no-JS pages: 200, an image on errors too
- ``POST /track/``            ``text/plain`` (what ``navigator.sendBeacon`` sends: the labels
                              syntax, or JSON sniffed from ``{``/``[``) or ``application/json``
                              (one event, an array of events, or ``{"events": [...]}``): 202

Each answers only once Kafka has acked every published event (or 503).
Any of them may name the request with an idempotency key (:func:`idempotency_key`):
every send of one keyed request counts once (docs/exactness.md).

The handlers are plain ASGI, and are served two ways with one behaviour.
:class:`Beacons`, the app's first middleware, answers ``GET`` and ``POST``
of these paths itself, doing what the ``Observed`` and CORS middlewares
after it would: the layers it skips (those middlewares, Starlette's
exception layer and routing, ``Request``, ``Response``) cost a GET about
as much CPU as the rest of its trip (docs/performance.md). Anything else on
these paths (``HEAD``, a preflight ``OPTIONS``, a 405) goes through
Starlette, whose routes serve the same handlers (:class:`Served`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest import answer
from ingest.answer import Answer
from ingest.errors import BrokerUnavailable, IngestError, InvalidBeacon, TooLarge, UnsupportedMediaType, answer_of
from ingest.metrics import IngestMetrics
from ingest.observe import observed
from ingest.outcome import Outcome
from ingest.pipeline import Pipeline
from ingest.publish import Publisher
from ingest.validate import REMEMBERED_LABELS, REMEMBERED_LABELS_LEN
from schema.event import InvalidField, check_idempotency_key

Handler = Callable[[Scope, Receive], Awaitable[Answer]]


async def track(scope: Scope, receive: Receive) -> Answer:
    return answer.accepted(await _query(scope))


async def track_pixel(scope: Scope, receive: Receive) -> Answer:
    return answer.pixel(await _query(scope))


async def track_post(scope: Scope, receive: Receive) -> Answer:
    state = scope["state"]
    pipeline: Pipeline = state["pipeline"]
    query_string: bytes = scope.get("query_string", b"")
    key = idempotency_key(scope, _key_in(query_string) if query_string else None)
    json_declared = _is_json(header(scope, b"content-type"))
    body = await read_body(scope, receive, pipeline.limits.max_body_bytes)
    try:
        outcome = pipeline.body(body, json_declared, header(scope, b"user-agent"))
    except InvalidBeacon as refused:  # a JSON body whose every event was bad: each one a drop
        _metrics(state).dropped(refused.dropped)
        raise
    await _publish(state, outcome, key)
    return answer.accepted(outcome)


ROUTES: Final[Mapping[tuple[str, str], Handler]] = {
    ("GET", "/track/"): track,
    ("GET", "/track.gif"): track_pixel,
    ("POST", "/track/"): track_post,
}
"""What :class:`Beacons` answers itself: (method, path) -> handler."""


async def answered(handler: Handler, scope: Scope, receive: Receive) -> Answer:
    """The handler's answer, or the refusal it raised."""
    try:
        return await handler(scope, receive)
    except IngestError as exc:
        return answer_of(exc, scope["path"])


async def send_answer(send: Send, reply: Answer) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
    await send({"type": "http.response.body", "body": reply.body})


class Served:
    """One handler as an ASGI app, for a Starlette ``Route`` (inside the middleware and error layers)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_answer(send, await answered(self.handler, scope, receive))


class Beacons:
    """Middleware: answers the beacon routes' GET and POST itself; passes on everything else.

    The first entry of the app's middleware list (:func:`ingest.app.create_app`),
    so inside Starlette's ``ServerErrorMiddleware`` (which answers an
    unexpected error with a plain 500) and under any middleware added with
    ``app.add_middleware``. Does for its answers what the middleware after it
    would: counts and (if asked) logs each answer like
    ``ingest.observe.Observed`` (an unexpected error as a 500, raised on),
    and adds the CORS headers of Starlette's ``CORSMiddleware``, built from
    the same ``cors`` arguments.
    """

    def __init__(self, app: ASGIApp, cors: Mapping[str, Any], access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self._cors = CORSMiddleware(app, **cors)
        self._simple_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self._cors.simple_headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = ROUTES.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        metrics: IngestMetrics | None = scope.get("state", {}).get("metrics") if handler is not None else None
        if handler is None or metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer is made: an unexpected error
        try:
            reply = await answered(handler, scope, receive)
            status = reply.status
            self._add_cors(scope, reply.headers)
            await send_answer(send, reply)
        finally:
            observed(metrics, scope, status, started, self.access_log)

    def _add_cors(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
        """What ``CORSMiddleware.send`` adds to a simple (not preflight) answer."""
        origin = header(scope, b"origin")
        if origin is not None:
            cors = self._cors
            headers += self._simple_headers
            if (cors.allow_all_origins and cors.allow_credentials) or (
                not cors.allow_all_origins and cors.is_allowed_origin(origin=origin)
            ):
                headers[:] = [h for h in headers if h[0] != b"access-control-allow-origin"]
                headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
        headers.append((b"vary", b"Origin"))  # with an Origin or without, as CORSMiddleware does


def header(scope: Scope, name: bytes) -> str | None:
    """The request's first header ``name`` (lower case), as Starlette's ``Headers.get`` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _query(scope: Scope) -> Outcome:
    state = scope["state"]
    pipeline: Pipeline = state["pipeline"]
    query_string: bytes = scope.get("query_string", b"")
    labels, key_in_query = _query_fields(query_string)
    key = idempotency_key(scope, key_in_query)
    outcome = pipeline.query(labels, len(query_string), header(scope, b"user-agent"))
    await _publish(state, outcome, key)
    return outcome


NO_FIELDS: Final = (None, None)


def _query_fields(query_string: bytes) -> tuple[str | None, str | None]:
    """The query string's ``labels`` and ``idempotency_key``; either given twice, the request is refused."""
    if not query_string:
        return NO_FIELDS
    if len(query_string) <= REMEMBERED_LABELS_LEN:  # a page sends the same query with every view
        return _remembered_fields(query_string)
    return _fields_in(query_string)


def _fields_in(query_string: bytes) -> tuple[str | None, str | None]:
    labels = key = None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "labels":
            if labels is not None:
                raise InvalidBeacon("labels", "given once: join the labels with |")
            labels = value
        elif name == KEY_PARAMETER:
            if key is not None:
                raise InvalidBeacon(KEY_PARAMETER, "given once")
            key = value
    return labels, key


_remembered_fields: Final = functools.lru_cache(maxsize=REMEMBERED_LABELS)(_fields_in)


def _key_in(query_string: bytes) -> str | None:
    """A POST's ``idempotency_key`` (its other parameters are not read)."""
    key = None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == KEY_PARAMETER:
            if key is not None:
                raise InvalidBeacon(KEY_PARAMETER, "given once")
            key = value
    return key


KEY_HEADER: Final = "Idempotency-Key"
"""The header that names a request (the IETF httpapi draft's name)."""
KEY_PARAMETER: Final = "idempotency_key"
"""The query parameter that names a request where no header can be set (sendBeacon, the pixel, a link)."""
_KEY_HEADER_NAME: Final = KEY_HEADER.lower().encode("latin-1")


def idempotency_key(scope: Scope, in_query: str | None) -> str | None:
    """The request's idempotency key, checked (schema.event.check_idempotency_key), or None.

    The ``Idempotency-Key`` header, or ``in_query`` (the ``idempotency_key``
    parameter); each given once, and the same key when both are.
    """
    in_header = None
    for name, value in scope["headers"]:
        if name == _KEY_HEADER_NAME:
            if in_header is not None:
                raise InvalidBeacon(KEY_HEADER, "given once")
            in_header = value.decode("latin-1")
    if in_header is None and in_query is None:
        return None
    try:
        if in_header is not None:
            check_idempotency_key(in_header, KEY_HEADER)
        if in_query is not None:
            check_idempotency_key(in_query, KEY_PARAMETER)
    except InvalidField as exc:
        raise InvalidBeacon(exc.field, exc.rule) from exc
    if in_header is not None and in_query is not None and in_header != in_query:
        raise InvalidBeacon(f"{KEY_HEADER}, {KEY_PARAMETER}", "the same key in both, or only one of them")
    return in_header if in_header is not None else in_query


async def _publish(state: Mapping[str, Any], outcome: Outcome, key: str | None) -> None:
    """Publish the outcome's events under ``key``; count them, and its drops, once the answer is a 2xx."""
    metrics = _metrics(state)
    if outcome.events:
        publisher: Publisher = state["publisher"]
        started = time.perf_counter()
        try:
            await publisher.publish(outcome.events, key)
        except BrokerUnavailable as unavailable:
            metrics.publish_failed(unavailable.cause)
            raise
        metrics.published(outcome.events, time.perf_counter() - started)
    if outcome.drops:
        metrics.dropped(outcome.drops)


def _metrics(state: Mapping[str, Any]) -> IngestMetrics:
    metrics: IngestMetrics = state["metrics"]
    return metrics


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The body, refused with a 413 as soon as it is known to be larger than ``max_bytes``.

    Starlette's own body limit answers a plain-text 413 (and replaces any
    answer when Content-Length is over); ours names the field and the rule.
    """
    declared = header(scope, b"content-length") or ""
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge("body", f"at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # a page closing mid-upload: nothing to count, nobody to answer
            raise InvalidBeacon("body", "sent whole; the client went away first")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge("body", f"at most {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _is_json(content_type: str | None) -> bool:
    """Whether the body is declared JSON; text/plain (or nothing) is sniffed, anything else refused."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return True
    if media_type in ("", "text/plain"):
        return False
    raise UnsupportedMediaType("content-type", "text/plain (the labels syntax, or JSON) or application/json")
