"""The wire format: what ingest writes is what the aggregator reads, and junk is refused."""

from datetime import date
from zoneinfo import ZoneInfo

import orjson
import pytest

from schema.event import (
    EventRecord,
    InvalidField,
    LabelEvent,
    UndecodableEvent,
    check_idempotency_key,
    day_of,
    decode,
    decode_record,
    encode,
    encode_key,
    encode_record,
    fingerprint,
    record_of,
    row_head,
    row_of,
)


def test_the_wire_format_is_compact_json_with_the_time_last() -> None:
    # Replay finds a counter's events by the bytes before the time (aggregator.replay).
    for event in (LabelEvent("signup", "forms", "btn1", 1_764_000_000_123), LabelEvent("a/b.c-d", "", "", 0)):
        fields = {"v": 1, "label": event.label, "category": event.category, "dom_id": event.dom_id, "ts": event.ts_ms}
        assert encode(event) == orjson.dumps(fields)
        assert encode(event).endswith(b',"ts":%d}' % event.ts_ms)


def test_round_trip() -> None:
    event = LabelEvent("signup", "forms", "btn1", 1_764_072_000_000)
    assert decode(encode(event)) == event
    assert encode_key(event) == b"signup:forms:btn1"


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"{}",
        b'{"v":2,"label":"a","category":"","dom_id":"","ts":1}',
        b'{"v":1,"label":"a b","category":"","dom_id":"","ts":1}',
        b'{"v":1,"label":"a","category":"","dom_id":"","ts":"soon"}',
        b'{"v":1,"label":"a","category":"","dom_id":"","ts":-5}',
    ],
)
def test_decode_refuses_what_ingest_would_never_write(value: bytes) -> None:
    with pytest.raises(UndecodableEvent):
        decode(value)


def test_event_enforces_field_rules() -> None:
    with pytest.raises(InvalidField) as caught:
        LabelEvent("ok", "", "has space", 0)
    assert caught.value.field == "dom_id"


def test_an_event_is_immutable_and_every_way_of_making_one_checks_the_rules() -> None:
    event = LabelEvent("signup", "forms", "btn1", 1)
    with pytest.raises(AttributeError):
        event.label = "other"  # type: ignore[misc]
    assert event._replace(ts_ms=5) == LabelEvent("signup", "forms", "btn1", 5)
    with pytest.raises(InvalidField):
        event._replace(label="two words")
    with pytest.raises(InvalidField):
        LabelEvent._make(["signup", "", "", -1])


def test_day_boundary_follows_the_configured_zone() -> None:
    ts = 1_764_027_000_000  # 2025-11-24T23:30:00Z
    assert day_of(ts) == date(2025, 11, 24)
    assert day_of(ts, ZoneInfo("Europe/Paris")) == date(2025, 11, 25)


# -- v2: one record per request and partition -------------------------------------------------------------------


def test_a_v2_record_carries_its_events_and_the_requests_idempotency_key() -> None:
    events = (LabelEvent("signup", "forms", "btn1", 1_764_000_000_123), LabelEvent("home", "", "", 1_764_000_000_124))
    value = encode_record(events, "req-1_a")
    assert orjson.loads(value) == {
        "v": 2,
        "key": "req-1_a",
        "events": [["signup", "forms", "btn1", 1_764_000_000_123], ["home", "", "", 1_764_000_000_124]],
    }
    assert decode_record(value) == EventRecord("req-1_a", events)
    assert decode_record(encode_record(events)) == EventRecord(None, events)
    assert b'"key"' not in encode_record(events)


def test_a_v1_record_reads_as_one_event_without_a_key() -> None:
    event = LabelEvent("signup", "forms", "btn1", 1_764_072_000_000)
    assert decode_record(encode(event)) == EventRecord(None, (event,))


def test_a_field_a_later_version_adds_is_no_reason_to_refuse_a_record() -> None:
    value = b'{"v":2,"site":"shop","events":[["a","","",1]]}'
    assert decode_record(value) == EventRecord(None, (LabelEvent("a", "", "", 1),))


@pytest.mark.parametrize(
    "value",
    [
        b'{"v":3,"events":[["a","","",1]]}',
        b'{"v":2,"events":[]}',
        b'{"v":2,"events":"a"}',
        b'{"v":2,"events":[["a","",""]]}',
        b'{"v":2,"events":[["a b","","",1]]}',
        b'{"v":2,"key":"has space","events":[["a","","",1]]}',
        b'{"v":2,"key":"","events":[["a","","",1]]}',
    ],
)
def test_decode_record_refuses_what_ingest_would_never_write(value: bytes) -> None:
    with pytest.raises(UndecodableEvent):
        decode_record(value)


@pytest.mark.parametrize("key", ["a", "A-z_09", "0" * 64, "6f1c7c1e-4c49-4a36-9d0b-7e6c2f1a9b10"])
def test_idempotency_keys_of_one_to_64_safe_characters_are_valid(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize(
    ("key", "rule"),
    [("", "is empty"), ("0" * 65, "at most 64"), ("a b", "only letters"), ("a+b", "only letters"), ("é", "only")],
)
def test_a_malformed_idempotency_key_names_the_field_and_the_rule(key: str, rule: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_idempotency_key(key)
    assert caught.value.field == "idempotency_key"
    assert caught.value.rule.startswith(rule)


def test_every_send_of_one_request_has_one_fingerprint_whatever_its_times_and_order() -> None:
    first = [LabelEvent("a", "c", "d", 1), LabelEvent("b", "", "", 1), LabelEvent("a", "c", "d", 1)]
    again = [LabelEvent("b", "", "", 9), LabelEvent("a", "c", "d", 9), LabelEvent("a", "c", "d", 7)]
    assert fingerprint(first) == fingerprint(again)
    assert fingerprint(first) != fingerprint(first[:2])
    assert fingerprint(first) != fingerprint([*first, LabelEvent("e", "", "", 1)])


@pytest.mark.parametrize("key", [None, "0b7e9f1c-5d0a-4c3e-9a57-2f6a1d8e4b21", "k"])
def test_a_v2_record_is_the_compact_json_of_its_document(key: str | None) -> None:
    """Ingest writes records from cached row heads; what it writes is the JSON document the format names."""
    events = [
        LabelEvent("signup", "forms", "btn1", 1_764_000_000_000),
        LabelEvent("page/view.x", "", "", 0),
        LabelEvent("a_b-c", "c.at/x", "d_o-m.1", 99),
    ]
    for n in range(1, len(events) + 1):
        rows = [[e.label, e.category, e.dom_id, e.ts_ms] for e in events[:n]]
        doc = {"v": 2, "key": key, "events": rows} if key else {"v": 2, "events": rows}
        assert encode_record(events[:n], key) == orjson.dumps(doc)
        assert record_of([row_of(row_head(*e[:3]), e.ts_ms) for e in events[:n]], key) == orjson.dumps(doc)
