"""How a service says what went wrong: the shape of every error answer, for ingest and the read side alike.

A client reads one JSON body whatever the route: ``{"error": code, "message": ...}``,
and, where the request broke a rule, the ``field`` at fault and the ``rule``
it broke. Each service keeps its own hierarchy below :class:`ServiceError`
(``ingest.errors``, ``query.errors``) and maps it to HTTP in one place.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error answered over HTTP: its status, its JSON body and its headers."""

    status = 500
    code = "internal"

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": str(self)}

    def headers(self) -> dict[str, str]:
        return {}


class BrokenRule(ServiceError):
    """A request that broke a rule: the body names the field at fault (a parameter, a header, the body) and the rule."""

    status = 400
    code = "invalid"

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    def body(self) -> dict[str, object]:
        return {"error": self.code, "field": self.field, "rule": self.rule, "message": str(self)}
