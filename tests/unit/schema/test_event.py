"""The wire format: what ingest writes is what the aggregator reads, and junk is refused."""

from datetime import date
from zoneinfo import ZoneInfo

import orjson
import pytest

from schema.event import InvalidField, LabelEvent, UndecodableEvent, day_of, decode, encode, encode_key


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
