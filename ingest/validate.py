"""Request limits and field rules: raw labels into LabelEvents, or a 4xx.

A request is accepted whole or refused whole: one bad label refuses the
request, and nothing of it is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.errors import InvalidBeacon, TooLarge
from ingest.parse import RawLabel, TooManyFields, parse_labels
from schema.event import InvalidField, LabelEvent


@dataclass(frozen=True)
class Limits:
    """Every request limit, by name. Field rules are in schema.event."""

    max_labels_per_request: int = 50
    """TALLY_MAX_LABELS_PER_REQUEST"""
    max_query_string: int = 8192
    """TALLY_MAX_QUERY_STRING: bytes of a request's query string."""


def events_from_query(labels: str | None, query_string_len: int, limits: Limits, ts_ms: int) -> list[LabelEvent]:
    """The events of ``GET /track/?labels=...``."""
    if query_string_len > limits.max_query_string:
        raise TooLarge("query", f"at most {limits.max_query_string} bytes")
    if labels is None:
        raise InvalidBeacon("labels", "is required, e.g. labels=signup:forms:btn1|home")
    try:
        raw = parse_labels(labels)
    except TooManyFields as exc:
        raise InvalidBeacon(f"labels[{exc.index}]", "at most 3 fields, label:category:dom_id") from exc
    return to_events(raw, limits, ts_ms)


def to_events(raw: Sequence[RawLabel], limits: Limits, ts_ms: int) -> list[LabelEvent]:
    if not raw:
        raise InvalidBeacon("labels", "at least one label")
    if len(raw) > limits.max_labels_per_request:
        raise InvalidBeacon("labels", f"at most {limits.max_labels_per_request} labels per request")
    events = []
    for index, (label, category, dom_id) in enumerate(raw):
        try:
            events.append(LabelEvent(label, category, dom_id, ts_ms))
        except InvalidField as exc:
            raise InvalidBeacon(f"labels[{index}].{exc.field}", exc.rule) from exc
    return events
