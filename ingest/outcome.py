"""What became of a request's events: the ones to publish, and the ones dropped, with why.

Drops are data. Every event a request carried is either published (under its
own label, or under the overflow label) or dropped for one of the reasons in
:class:`DropReason`; the answer reports both (``X-Tally-Dropped`` and the
body's ``dropped`` list), and the reasons are the names metrics count by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from schema.event import LabelEvent


class DropReason(StrEnum):
    """Why an event was not counted under its own label."""

    INVALID = "invalid"
    """A JSON batch's event broke a field rule: not published (the rest of the batch is)."""
    BOT = "bot"
    """The user agent is a known bot: not published; answered 2xx so that it does not retry."""
    NOT_ALLOWED = "not_allowed"
    """The label is not on TALLY_LABEL_ALLOWLIST: not published."""
    OVERFLOW = "overflow"
    """A new label past TALLY_MAX_NEW_LABELS_PER_DAY: published, counted under the overflow label."""


@dataclass(frozen=True, slots=True)
class Drop:
    index: int
    """The event's position in the request (``labels[i]`` or ``events[i]``)."""
    reason: DropReason
    field: str | None = None
    rule: str | None = None

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"index": self.index, "reason": self.reason.value}
        if self.field is not None:
            doc["field"] = self.field
        if self.rule is not None:
            doc["rule"] = self.rule
        return doc


@dataclass(frozen=True)
class Outcome:
    """A request's events after a stage: ``events[i]`` came from position ``positions[i]``."""

    events: list[LabelEvent]
    positions: list[int]
    drops: list[Drop] = field(default_factory=list)
    restamped: int = 0
    """Events whose client timestamp was out of bounds and was replaced by the server's time."""

    @classmethod
    def of(cls, events: list[LabelEvent]) -> Outcome:
        return cls(events, list(range(len(events))))

    @property
    def accepted(self) -> int:
        return len(self.events)

    def as_json(self) -> dict[str, object]:
        """The body of a 2xx answer: ``{"accepted": n}``, plus what was dropped or restamped, if any."""
        doc: dict[str, object] = {"accepted": self.accepted}
        if self.drops:
            doc["dropped"] = [drop.as_json() for drop in sorted(self.drops, key=lambda d: d.index)]
        if self.restamped:
            doc["restamped"] = self.restamped
        return doc

    def headers(self) -> dict[str, str]:
        return {"X-Tally-Dropped": str(len(self.drops))} if self.drops else {}
