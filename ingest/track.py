"""The beacon routes: every way a browser sends, through one :class:`~ingest.pipeline.Pipeline`.

- ``GET /track/?labels=...``  the seed's call: 202 ``{"accepted": n}``
- ``GET /track.gif?labels=...`` a 1x1 GIF for ``<img>`` and no-JS pages: 200, an image on errors too
- ``POST /track/``            ``text/plain`` (what ``navigator.sendBeacon`` sends: the labels
                              syntax, or JSON sniffed from ``{``/``[``) or ``application/json``
                              (one event, an array of events, or ``{"events": [...]}``): 202

Each answers only once Kafka has acked every published event (or 503).
"""

from __future__ import annotations

import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ingest import answer
from ingest.errors import BrokerUnavailable, InvalidBeacon, TooLarge, UnsupportedMediaType
from ingest.metrics import IngestMetrics
from ingest.outcome import Outcome
from ingest.pipeline import Pipeline
from ingest.publish import Publisher


async def track(request: Request) -> Response:
    return answer.accepted(await _query(request))


async def track_pixel(request: Request) -> Response:
    return answer.pixel(await _query(request))


async def track_post(request: Request) -> Response:
    pipeline: Pipeline = request.state.pipeline
    json_declared = _is_json(request.headers.get("content-type"))
    body = await read_body(request, pipeline.limits.max_body_bytes)
    try:
        outcome = pipeline.body(body, json_declared, request.headers.get("user-agent"))
    except InvalidBeacon as refused:  # a JSON body whose every event was bad: each one a drop
        _metrics(request).dropped(refused.dropped)
        raise
    await _publish(request, outcome)
    return answer.accepted(outcome)


async def _query(request: Request) -> Outcome:
    pipeline: Pipeline = request.state.pipeline
    outcome = pipeline.query(
        request.query_params.get("labels"),
        len(request.scope.get("query_string", b"")),
        request.headers.get("user-agent"),
    )
    await _publish(request, outcome)
    return outcome


async def _publish(request: Request, outcome: Outcome) -> None:
    """Publish the outcome's events; count them, and its drops, once the answer is a 2xx."""
    metrics = _metrics(request)
    if outcome.events:
        publisher: Publisher = request.state.publisher
        started = time.perf_counter()
        try:
            await publisher.publish(outcome.events)
        except BrokerUnavailable as unavailable:
            metrics.publish_failed(unavailable.cause)
            raise
        metrics.published(outcome.events, time.perf_counter() - started)
    if outcome.drops:
        metrics.dropped(outcome.drops)


def _metrics(request: Request) -> IngestMetrics:
    metrics: IngestMetrics = request.state.metrics
    return metrics


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with a 413 as soon as it is known to be larger than ``max_bytes``.

    Starlette's own body limit answers a plain-text 413 (and replaces any
    answer when Content-Length is over); ours names the field and the rule.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge("body", f"at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge("body", f"at most {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:  # a page closing mid-upload: nothing to count, nobody to answer
        raise InvalidBeacon("body", "sent whole; the client went away first") from exc
    return b"".join(chunks)


def _is_json(content_type: str | None) -> bool:
    """Whether the body is declared JSON; text/plain (or nothing) is sniffed, anything else refused."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return True
    if media_type in ("", "text/plain"):
        return False
    raise UnsupportedMediaType("content-type", "text/plain (the labels syntax, or JSON) or application/json")
