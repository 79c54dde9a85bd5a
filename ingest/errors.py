"""What can go wrong in ingest, mapped to HTTP in one place (:func:`answer_of`).

Each error carries its status, its JSON body and its headers; the answer's
form (JSON, or a GIF for the pixel route) is :mod:`ingest.answer`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from ingest.answer import Answer, refused
from ingest.outcome import Drop
from schema.errors import BrokenRule, ServiceError


class IngestError(ServiceError):
    """What can go wrong in ingest."""


class InvalidBeacon(BrokenRule, IngestError):
    """The request broke an input rule: 400, naming the field and the rule.

    ``dropped`` lists every bad event of a JSON body whose events were all bad.
    """

    status = 400
    code = "invalid"

    def __init__(self, field: str, rule: str, dropped: Sequence[Drop] = ()) -> None:
        super().__init__(field, rule)
        self.dropped = list(dropped)

    def body(self) -> dict[str, object]:
        body = super().body()
        if self.dropped:
            body["dropped"] = [drop.as_json() for drop in self.dropped]
        return body

    def headers(self) -> dict[str, str]:
        return {"X-Tally-Dropped": str(len(self.dropped))} if self.dropped else {}


class TooLarge(InvalidBeacon):
    status = 413
    code = "too_large"


class HeadersTooLarge(InvalidBeacon):
    """Header fields past ``TALLY_MAX_HEADER_BYTES``: 431, answered by the HTTP protocol (:mod:`ingest.protocol`)."""

    status = 431
    code = "too_large"


class UnsupportedMediaType(InvalidBeacon):
    status = 415
    code = "unsupported_media_type"


class BrokerUnavailable(IngestError):
    """Kafka did not take the events in time: 503, and try again later.

    ``cause`` is what metrics count it by: ``timeout`` (no ack in time),
    ``error`` (Kafka or the producer refused), ``full`` (too many events in flight) or
    ``down`` (Kafka failing lately: answered at once, see :class:`ingest.publish.Outage`).

    ``maybe_recorded`` says whether any of the events had been handed to the
    producer. If none had (Kafka unknown or away at the time of sending, too
    many events in flight), nothing was recorded and a retry is safe. If some
    had, Kafka may have taken them although it did not confirm in time (a
    produce request in flight when the wait ran out): a retry may count them
    twice. The answer says which (``recorded``: ``none`` or ``unknown``).
    """

    status = 503
    code = "unavailable"

    def __init__(self, reason: str, retry_after_s: int, cause: str = "error", maybe_recorded: bool = True) -> None:
        if maybe_recorded:
            super().__init__(f"events not confirmed by Kafka, some may have been recorded: {reason}")
        else:
            super().__init__(f"events not accepted, nothing was recorded: {reason}")
        self.retry_after_s = retry_after_s
        self.cause = cause
        self.maybe_recorded = maybe_recorded

    @property
    def recorded(self) -> str:
        return "unknown" if self.maybe_recorded else "none"

    def body(self) -> dict[str, object]:
        return {**super().body(), "recorded": self.recorded}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s), "X-Tally-Recorded": self.recorded}


def answer_of(exc: IngestError, path: str) -> Answer:
    """The answer to a request for ``path`` that raised ``exc``: its JSON, or a GIF on the pixel route (``*.gif``)."""
    return refused(exc.status, exc.body(), exc.headers(), as_pixel=path.endswith(".gif"))


async def as_response(request: Request, exc: Exception) -> Response:
    """The app's handler for IngestError (the beacon routes' own answers use :func:`answer_of` directly)."""
    assert isinstance(exc, IngestError)
    return answer_of(exc, request.url.path).response()
