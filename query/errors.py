"""What can go wrong in a read: each error carries its HTTP status, its JSON body and its headers.

The app's one handler for them is :func:`query.answer.error_response`.
"""

from __future__ import annotations

from schema.errors import BrokenRule, ServiceError


class QueryError(ServiceError):
    """What can go wrong in a read."""


class InvalidParameter(BrokenRule, QueryError):
    """A query parameter broke a rule: 400."""

    status = 400
    code = "invalid"


class Unauthorized(BrokenRule, QueryError):
    """A read without a valid bearer token (read scope): 401 with ``WWW-Authenticate``."""

    status = 401
    code = "unauthorized"

    def __init__(self, rule: str, token_given: bool) -> None:
        super().__init__("authorization", rule)
        self.token_given = token_given

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="tally", scope="read"'
        return {"WWW-Authenticate": challenge + (', error="invalid_token"' if self.token_given else "")}


class StoreUnavailable(QueryError):
    """ClickHouse did not answer a read: 503."""

    status = 503
    code = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}
