"""A beacon's way into Kafka, assembled in one place.

Every way to send (``GET /track/``, ``GET /track.gif``, ``POST /track/``,
and the backend :mod:`ingest.client`) runs the same stages:

    parse     ingest.parse     the ``labels`` syntax, or a JSON body, into raw fields
    validate  ingest.validate  limits and field rules -> LabelEvents; refused whole
                               (labels syntax) or bad events dropped (JSON)
    guard     ingest.guard     bots, the label allow-list, the daily cap of new
                               labels -> events dropped or relabelled as overflow
    publish   ingest.publish   onto Kafka, returning only once every event is acked

:class:`Pipeline` runs the first three and hands back an
:class:`~ingest.outcome.Outcome`; the caller then publishes its events, by
awaiting (the HTTP routes, :class:`~ingest.client.AsyncTracker`) or by
blocking (:class:`~ingest.client.Tracker`), and answers with the outcome.
"""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from ingest.guard import Guard, Policy
from ingest.outcome import Outcome
from ingest.validate import Limits, events_from_body, events_from_labels, events_from_query
from schema.event import day_of


class Pipeline:
    def __init__(self, limits: Limits, policy: Policy, day_tz: ZoneInfo) -> None:
        self.limits = limits
        self.day_tz = day_tz
        self.guard = Guard(policy, limits.max_new_labels_per_day)

    def query(self, labels: str | None, query_string_len: int, user_agent: str | None) -> Outcome:
        """``GET /track/?labels=...`` and the pixel."""
        now_ms = _now_ms()
        events = events_from_query(labels, query_string_len, self.limits, now_ms)
        return self._guarded(Outcome.of(events), user_agent, now_ms)

    def body(self, body: bytes, json_declared: bool, user_agent: str | None) -> Outcome:
        """``POST /track/``: JSON (declared, or sniffed from ``{``/``[``), else the labels syntax."""
        now_ms = _now_ms()
        return self._guarded(events_from_body(body, json_declared, self.limits, now_ms), user_agent, now_ms)

    def labels(self, labels: str) -> Outcome:
        """A backend's ``incr_labels``: the labels syntax, no user agent."""
        now_ms = _now_ms()
        return self._guarded(Outcome.of(events_from_labels(labels, self.limits, now_ms)), None, now_ms)

    def _guarded(self, outcome: Outcome, user_agent: str | None, now_ms: int) -> Outcome:
        return self.guard.admit(outcome, user_agent, day_of(now_ms, self.day_tz))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
