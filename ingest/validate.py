"""Request limits and field rules: raw fields into LabelEvents, or a 4xx.

Every limit is named in :class:`Limits` (field rules themselves are the
contract, in :mod:`schema.event`). Two acceptance rules, by syntax:

- the ``labels`` syntax (``GET /track/``, ``GET /track.gif``, a ``text/plain``
  body) is accepted whole or refused whole: one bad label refuses the
  request, and nothing of it is published;
- a JSON body keeps its good events: each bad one is dropped and reported
  (:attr:`DropReason.INVALID`, with its index, field and rule); only a body
  whose every event is bad is refused.

A client timestamp (``ts``, JSON only) outside ``[now - past, now + future]``
is replaced by the server's time: the event is counted, on the day it
arrived, rather than lost to a wrong clock.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

from ingest.errors import InvalidBeacon, TooLarge
from ingest.outcome import Drop, DropReason, Outcome
from ingest.parse import MalformedBody, RawLabel, TooManyFields, looks_like_json, parse_json, parse_labels
from schema.event import InvalidField, LabelEvent, check_counter

REMEMBERED_LABELS: Final = 4096
"""Distinct ``labels`` values whose checked counters are remembered."""
REMEMBERED_LABELS_LEN: Final = 512
"""The longest ``labels`` value remembered (longer ones are checked every time)."""


@dataclass(frozen=True)
class Limits:
    """Every request limit, by name, each read from ``TALLY_<NAME>``. Field rules are in schema.event."""

    max_labels_per_request: int = 50
    """TALLY_MAX_LABELS_PER_REQUEST: labels in one ``labels=`` value or text body; more is a 400."""
    max_query_string: int = 8192
    """TALLY_MAX_QUERY_STRING: bytes of a request's query string; more is a 413."""
    max_body_bytes: int = 65536
    """TALLY_MAX_BODY_BYTES: bytes of a POST body, counted while reading it and again once inflated
    (``Content-Encoding: gzip`` or ``deflate``); more is a 413."""
    max_header_bytes: int = 16384
    """TALLY_MAX_HEADER_BYTES: bytes of a request's header fields (each ``name: value`` line); more is a 431,
    answered by ``tally ingest``'s HTTP protocol (:mod:`ingest.protocol`) before the app sees the request."""
    max_events_per_batch: int = 500
    """TALLY_MAX_EVENTS_PER_BATCH: events in one JSON body; more is a 400."""
    max_client_ts_past_s: int = 86400
    """TALLY_MAX_CLIENT_TS_PAST_S: how old a client ``ts`` may be; older is replaced by the server's time."""
    max_client_ts_future_s: int = 300
    """TALLY_MAX_CLIENT_TS_FUTURE_S: how far ahead a client ``ts`` may be; further is replaced likewise."""
    max_new_labels_per_day: int = 10000
    """TALLY_MAX_NEW_LABELS_PER_DAY: distinct labels one ingest process counts per day; more go to overflow."""


def events_from_query(labels: str | None, query_string_len: int, limits: Limits, ts_ms: int) -> list[LabelEvent]:
    """The events of ``GET /track/?labels=...``."""
    if query_string_len > limits.max_query_string:
        raise TooLarge("query", f"at most {limits.max_query_string} bytes")
    if labels is None:
        raise InvalidBeacon("labels", "is required, e.g. labels=signup:forms:btn1|home")
    return events_from_labels(labels, limits, ts_ms)


def events_from_labels(labels: str, limits: Limits, ts_ms: int) -> list[LabelEvent]:
    """The events of one ``labels`` value, all or none."""
    checked = _remembered_counters if len(labels) <= REMEMBERED_LABELS_LEN else counters_of
    return [LabelEvent(*counter, ts_ms) for counter in checked(labels, limits.max_labels_per_request)]


def counters_of(labels: str, max_labels: int) -> tuple[RawLabel, ...]:
    """The counters of one ``labels`` value, each checked against the field rules; or InvalidBeacon."""
    try:
        raw = parse_labels(labels)
    except TooManyFields as exc:
        raise InvalidBeacon(f"labels[{exc.index}]", "at most 3 fields, label:category:dom_id") from exc
    if not raw:
        raise InvalidBeacon("labels", "at least one label")
    if len(raw) > max_labels:
        raise InvalidBeacon("labels", f"at most {max_labels} labels per request")
    for index, (label, category, dom_id) in enumerate(raw):
        try:
            check_counter(label, category, dom_id)
        except InvalidField as exc:
            raise InvalidBeacon(f"labels[{index}].{exc.field}", exc.rule) from exc
    return tuple(raw)


# A page sends the same ``labels`` with every view: parsing and checking it
# again would cost a GET more than the rest of its validation. Refusals
# raise, so they are never remembered; long values are not remembered at all
# (the cache's memory stays under REMEMBERED_LABELS x REMEMBERED_LABELS_LEN).
_remembered_counters = functools.lru_cache(maxsize=REMEMBERED_LABELS)(counters_of)


def events_from_body(body: bytes, json_declared: bool, limits: Limits, now_ms: int) -> Outcome:
    """The events of a POST body: JSON if declared or sniffed (``{``/``[``), else the labels syntax."""
    if json_declared or looks_like_json(body):
        return events_from_json(body, limits, now_ms)
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise InvalidBeacon("body", "UTF-8 text") from exc
    return Outcome.of(events_from_labels(text, limits, now_ms))


def events_from_json(body: bytes, limits: Limits, now_ms: int) -> Outcome:
    """The good events of a JSON body; the bad ones dropped with their field and rule."""
    try:
        items = parse_json(body)
    except MalformedBody as exc:
        raise InvalidBeacon(exc.field, exc.rule) from exc
    if not items:
        raise InvalidBeacon("events", "at least one event")
    if len(items) > limits.max_events_per_batch:
        raise InvalidBeacon("events", f"at most {limits.max_events_per_batch} events per request")
    lowest = now_ms - limits.max_client_ts_past_s * 1000
    highest = now_ms + limits.max_client_ts_future_s * 1000
    events: list[LabelEvent] = []
    positions: list[int] = []
    drops: list[Drop] = []
    restamped = 0
    for index, item in enumerate(items):
        try:
            event, was_restamped = _event_from_item(item, now_ms, lowest, highest)
        except InvalidField as exc:
            field = f"events[{index}]" if exc.field == "event" else f"events[{index}].{exc.field}"
            drops.append(Drop(index, DropReason.INVALID, field, exc.rule))
            continue
        events.append(event)
        positions.append(index)
        restamped += was_restamped
    if not events:
        first = drops[0]
        assert first.field is not None and first.rule is not None
        raise InvalidBeacon(first.field, first.rule, dropped=drops)
    return Outcome(events, positions, drops, restamped)


def _event_from_item(item: object, now_ms: int, lowest: int, highest: int) -> tuple[LabelEvent, bool]:
    if not isinstance(item, dict):
        raise InvalidField("event", 'an object, e.g. {"label": "signup", "category": "forms", "dom_id": "btn1"}', "")
    get = item.get
    label, category, dom_id = get("label", ""), get("category", ""), get("dom_id", "")
    if type(label) is not str or type(category) is not str or type(dom_id) is not str:  # null, or an error
        label, category, dom_id = _text(item, "label"), _text(item, "category"), _text(item, "dom_id")
    ts = _client_ts(get("ts"), now_ms)
    if lowest <= ts <= highest:
        return LabelEvent(label, category, dom_id, ts), False
    return LabelEvent(label, category, dom_id, now_ms), True


def _text(item: dict[object, object], name: str) -> str:
    value = item.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidField(name, "a string", repr(value))
    return value


def _client_ts(value: object, now_ms: int) -> int:
    if value is None:
        return now_ms
    if type(value) is int:  # the usual case, first
        return value
    # bool is an int to Python, not to a client; 1e400 parses as inf.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidField("ts", "epoch milliseconds, a number", repr(value))
    return int(value)
