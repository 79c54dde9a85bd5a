"""A label event: its fields, the rules each field obeys, and its wire format.

Ingest encodes, the aggregator decodes; neither defines its own. Every event
of one counter (``label:category:dom_id``) lands in one partition, in order:
the aggregator relies on that to count each event exactly once (see
:mod:`aggregator.count`). Two wire versions are on the topic:

- **v1**, one event per record (:func:`encode`, :func:`decode`), its Kafka
  key the counter, so that Kafka's partitioner puts it in its counter's
  partition.
- **v2**, one record per request and partition (:func:`encode_record`,
  :func:`decode_record`): the events of one request whose counters fall in
  one partition, and the request's idempotency key, if it has one. Ingest
  chooses the partition itself from the counters (they all share it); the
  Kafka key is the idempotency key, or none. A record is the unit the
  worker deduplicates: a repeat of a keyed request becomes, in each
  partition, a record with the same key and the same counters
  (:func:`fingerprint`).

``decode_record`` reads both versions, so records written before v2 keep
counting. A later version may add a field (such as a site) to the v2 record;
a reader of this version refuses no record for a field it does not know.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any, Final, NamedTuple

import orjson

WIRE_VERSION: Final = 1
"""The version of one-event records (:func:`encode`)."""
RECORD_VERSION: Final = 2
"""The version of one-request-per-partition records (:func:`encode_record`)."""

# Field rules. ASCII only, so a label is the same string in every system it
# passes through, and junk (URLs, JSON, free text) is refused at the door.
LABEL_RULE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")
CATEGORY_RULE: Final = re.compile(r"[A-Za-z0-9_.\-/]*")
DOM_ID_RULE: Final = re.compile(r"[A-Za-z0-9_.\-]*")
MAX_LABEL_LEN: Final = 64
MAX_CATEGORY_LEN: Final = 64
MAX_DOM_ID_LEN: Final = 128

RULES: Final = {
    "label": (LABEL_RULE, 1, MAX_LABEL_LEN, "letters, digits and _ . - /, starting with a letter, digit or _"),
    "category": (CATEGORY_RULE, 0, MAX_CATEGORY_LEN, "letters, digits and _ . - /"),
    "dom_id": (DOM_ID_RULE, 0, MAX_DOM_ID_LEN, "letters, digits and _ . -"),
}


IDEMPOTENCY_KEY_RULE: Final = re.compile(r"[A-Za-z0-9_\-]+")
MAX_IDEMPOTENCY_KEY_LEN: Final = 64
IDEMPOTENCY_KEY_CHARS: Final = "letters, digits, _ and -"


class InvalidField(ValueError):
    """A field broke its rule; ``field`` and ``rule`` say which and how."""

    def __init__(self, field: str, rule: str, value: str) -> None:
        super().__init__(f"{field}: {rule} (got {value[:80]!r})")
        self.field = field
        self.rule = rule
        self.value = value


def check_field(name: str, value: str) -> str:
    """Return ``value`` if it obeys the rule of field ``name``, else raise InvalidField."""
    pattern, min_len, max_len, chars = RULES[name]
    if len(value) < min_len:
        raise InvalidField(name, "is required", value)
    if len(value) > max_len:
        raise InvalidField(name, f"at most {max_len} characters", value)
    if not pattern.fullmatch(value):
        raise InvalidField(name, f"only {chars}", value)
    return value


def check_idempotency_key(value: str, field: str = "idempotency_key") -> str:
    """Return ``value`` if it is a valid idempotency key (1-64 of A-Z a-z 0-9 _ -), else raise InvalidField."""
    if not value:
        raise InvalidField(field, "is empty: 1 to 64 characters", value)
    if len(value) > MAX_IDEMPOTENCY_KEY_LEN:
        raise InvalidField(field, f"at most {MAX_IDEMPOTENCY_KEY_LEN} characters", value)
    if not IDEMPOTENCY_KEY_RULE.fullmatch(value):
        raise InvalidField(field, f"only {IDEMPOTENCY_KEY_CHARS}", value)
    return value


@functools.lru_cache(maxsize=65_536)
def check_counter(label: str, category: str, dom_id: str) -> None:
    """All three field rules; remembered, since a site's counters repeat (failures are not)."""
    check_field("label", label)
    check_field("category", category)
    check_field("dom_id", dom_id)


class _Fields(NamedTuple):
    label: str
    category: str
    dom_id: str
    ts_ms: int


class LabelEvent(_Fields):
    """One counted action. ``ts_ms`` is stamped by ingest (epoch milliseconds, UTC).

    Immutable, and valid once made: every way of making one checks the field
    rules. A tuple rather than a frozen dataclass, whose ``__init__`` sets
    each field through ``object.__setattr__``: made twice as fast (0.37
    against 0.66 µs), and ingest and the worker each make one per event.
    """

    __slots__ = ()

    def __new__(cls, label: str, category: str, dom_id: str, ts_ms: int) -> LabelEvent:
        check_counter(label, category, dom_id)
        if ts_ms < 0:
            raise InvalidField("ts", "epoch milliseconds, not negative", str(ts_ms))
        return tuple.__new__(cls, (label, category, dom_id, ts_ms))

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> LabelEvent:  # type: ignore[override]  # the checks, not a new API
        return cls(*iterable)

    def _replace(self, **changes: Any) -> LabelEvent:
        return LabelEvent(**{**self._asdict(), **changes})

    @property
    def counter_key(self) -> str:
        """What one counter is about; also the Kafka message key."""
        return f"{self.label}:{self.category}:{self.dom_id}"


def encode(event: LabelEvent) -> bytes:
    """The Kafka message value of ``event``: ``{"v":1,"label":...,"category":...,"dom_id":...,"ts":...}``.

    Compact JSON, its keys in that order, the time last, so that every event
    of one counter starts with the same bytes (:func:`value_head`); replay
    reads a day's events by that layout (:mod:`aggregator.replay`).
    """
    return value_of(value_head(event.label, event.category, event.dom_id), event.ts_ms)


@functools.lru_cache(maxsize=65_536)
def value_head(label: str, category: str, dom_id: str) -> bytes:
    """The start of the message value of every event of one counter: all of it but the time and the ``}``."""
    fields = orjson.dumps({"v": WIRE_VERSION, "label": label, "category": category, "dom_id": dom_id})
    return fields[:-1] + b',"ts":'


def value_of(head: bytes, ts_ms: int) -> bytes:
    """The message value of an event of the counter whose value starts with ``head``, stamped ``ts_ms``."""
    return head + b"%d}" % ts_ms


def encode_key(event: LabelEvent) -> bytes:
    """The Kafka message key of ``event``: one counter, one partition."""
    return event.counter_key.encode()


class UndecodableEvent(ValueError):
    """A message on the topic that is not a valid event of a known version."""


def decode(value: bytes) -> LabelEvent:
    """Parse a Kafka message value, applying the same field rules as ingest."""
    try:
        doc = orjson.loads(value)
        if doc["v"] != WIRE_VERSION:
            raise UndecodableEvent(f"unknown wire version {doc['v']!r}")
        return LabelEvent(doc["label"], doc["category"], doc["dom_id"], int(doc["ts"]))
    except UndecodableEvent:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise UndecodableEvent(str(exc)) from exc


class EventRecord(NamedTuple):
    """What one record on the topic holds: its events, and the idempotency key of the request they came in.

    A v1 record is one event without a key.
    """

    key: str | None
    events: tuple[LabelEvent, ...]


def encode_record(events: Sequence[LabelEvent], key: str | None = None) -> bytes:
    """The value of a v2 record: ``{"v":2,"key":KEY,"events":[[label,category,dom_id,ts],...]}``.

    ``events`` are the events of one request whose counters fall in one
    partition (the caller groups them); ``"key"`` is left out when the
    request has no idempotency key. Compact JSON (as ``orjson.dumps`` writes
    it), the events in the order given. Built from :func:`row_head`,
    :func:`row_of` and :func:`record_of`, which ingest uses directly.
    """
    return record_of([row_of(row_head(e.label, e.category, e.dom_id), e.ts_ms) for e in events], key)


@functools.lru_cache(maxsize=65_536)
def row_head(label: str, category: str, dom_id: str) -> bytes:
    """The start of the row of every event of one counter in a v2 record: ``["label","category","dom_id",``."""
    return orjson.dumps([label, category, dom_id])[:-1] + b","


def row_of(head: bytes, ts_ms: int) -> bytes:
    """The row of an event of the counter whose rows start with ``head``, stamped ``ts_ms``."""
    return head + b"%d]" % ts_ms


_RECORD_START: Final = b'{"v":%d,' % RECORD_VERSION


def record_of(rows: Sequence[bytes], key: str | None = None) -> bytes:
    """The value of a v2 record holding ``rows`` (:func:`row_of`), keyed by ``key`` (or not)."""
    if key:
        return b"".join((_RECORD_START, b'"key":', orjson.dumps(key), b',"events":[', b",".join(rows), b"]}"))
    return b"".join((_RECORD_START, b'"events":[', b",".join(rows), b"]}"))


def decode_record(value: bytes) -> EventRecord:
    """The events and key of a record of either version, with the same field rules as ingest."""
    try:
        doc = orjson.loads(value)
        version = doc["v"]
        if version == WIRE_VERSION:
            return EventRecord(None, (LabelEvent(doc["label"], doc["category"], doc["dom_id"], int(doc["ts"])),))
        if version != RECORD_VERSION:
            raise UndecodableEvent(f"unknown wire version {version!r}")
        key = doc.get("key")
        if key is not None:
            check_idempotency_key(key, "key")
        rows = doc["events"]
        if not isinstance(rows, list) or not rows:
            raise UndecodableEvent("a v2 record holds a non-empty list of events")
        events = tuple(LabelEvent(label, category, dom_id, int(ts)) for label, category, dom_id, ts in rows)
        return EventRecord(key, events)
    except UndecodableEvent:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise UndecodableEvent(str(exc)) from exc


def fingerprint(events: Iterable[LabelEvent]) -> int:
    """What every send of one request shares: its counters, each as often as it occurs, in any order.

    Times are left out: ingest stamps each arrival anew. Two requests with
    one idempotency key but different fingerprints are two requests (the
    client reused a key), not a repeat. A 64-bit digest, the same in every
    process (not Python's salted ``hash``).
    """
    counters = sorted(e.counter_key for e in events)
    return int.from_bytes(hashlib.blake2b("\n".join(counters).encode(), digest_size=8).digest(), "big")


def day_of(ts_ms: int, tz: tzinfo = UTC) -> date:
    """The calendar day, in ``tz``, that an event stamped ``ts_ms`` counts towards."""
    return datetime.fromtimestamp(ts_ms / 1000, tz).date()
