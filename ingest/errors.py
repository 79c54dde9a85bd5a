"""What can go wrong in ingest, mapped to HTTP in one place (:func:`as_response`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class IngestError(Exception):
    status = 500
    code = "internal"

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": str(self)}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidBeacon(IngestError):
    """The request broke an input rule: 400, naming the field and the rule."""

    status = 400
    code = "invalid"

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    def body(self) -> dict[str, object]:
        return {"error": self.code, "field": self.field, "rule": self.rule, "message": str(self)}


class TooLarge(InvalidBeacon):
    status = 413
    code = "too_large"


class BrokerUnavailable(IngestError):
    """Kafka did not take the events in time: 503, and try again later."""

    status = 503
    code = "unavailable"

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(f"events not accepted, nothing was recorded: {reason}")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class StoreUnavailable(IngestError):
    """ClickHouse did not answer a stats query: 503."""

    status = 503
    code = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


async def as_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IngestError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())
