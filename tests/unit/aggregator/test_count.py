"""Exactly-once counting: batches, days and hours, late events, events seen again after a crash."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from aggregator.count import (
    DictCountTable,
    Tally,
    Windows,
    as_tally,
    count_batch,
    expired,
    first_open_day,
    since,
)
from aggregator.decode import Message, PositionedRecord, decode_messages
from schema.event import LabelEvent, encode, encode_record
from schema.keys import CounterKey

DAY1 = int(datetime(2026, 11, 24, 12, 30, tzinfo=UTC).timestamp() * 1000)
DAY2 = int(datetime(2026, 11, 25, 9, 15, tzinfo=UTC).timestamp() * 1000)
OPEN = date(2026, 11, 20)
UTC_WINDOWS = Windows(UTC)


def at(partition: int, offset: int, label: str = "signup", dom_id: str = "btn1", ts: int = DAY2) -> PositionedRecord:
    """A one-event record (v1, or a request of one event)."""
    return PositionedRecord(partition, offset, None, (LabelEvent(label, "forms", dom_id, ts),))


def record(partition: int, offset: int, *labels: str, ts: int = DAY2, key: str | None = None) -> PositionedRecord:
    """A v2 record: one request's events (one per label given, repeats allowed) at one offset."""
    return PositionedRecord(partition, offset, key, tuple(LabelEvent(label, "forms", "btn1", ts) for label in labels))


def daily(table: DictCountTable) -> dict[tuple[date, str], int]:
    keys = ((CounterKey.parse(k, UTC), t) for k, t in table.items())
    return {(k.day, k.label): t.counter for k, t in keys if k.hour is None}


def hourly(table: DictCountTable, tz: ZoneInfo | None = None) -> dict[tuple[datetime, str], int]:
    keys = ((CounterKey.parse(k, tz or UTC), t) for k, t in table.items())
    return {(k.hour, k.label): t.counter for k, t in keys if k.hour is not None}


def test_one_update_per_counter_per_batch() -> None:
    table = DictCountTable()
    result = count_batch(table, [at(0, 0), at(0, 1), at(1, 0, "home", ""), at(0, 2)], UTC_WINDOWS, OPEN)
    assert result.counted == 4
    hour = int(datetime(2026, 11, 25, 9, tzinfo=UTC).timestamp())
    assert result.changed == {
        "d2026-11-25:signup:forms:btn1": Tally(3, 2, 0),
        f"h{hour}:signup:forms:btn1": Tally(3, 2, 0),
        "d2026-11-25:home:forms:": Tally(1, 0, 1),
        f"h{hour}:home:forms:": Tally(1, 0, 1),
    }


def test_events_fall_into_their_own_day_and_hour() -> None:
    table = DictCountTable()
    count_batch(table, [at(0, 0, ts=DAY1), at(0, 1, ts=DAY2), at(0, 2, ts=DAY2)], UTC_WINDOWS, OPEN)
    assert daily(table) == {(date(2026, 11, 24), "signup"): 1, (date(2026, 11, 25), "signup"): 2}
    assert hourly(table) == {
        (datetime(2026, 11, 24, 12, tzinfo=UTC), "signup"): 1,
        (datetime(2026, 11, 25, 9, tzinfo=UTC), "signup"): 2,
    }


def test_day_boundary_is_midnight_in_the_configured_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    midnight = int(datetime(2026, 11, 25, tzinfo=paris).timestamp() * 1000)  # 2026-11-24T23:00Z
    table = DictCountTable()
    count_batch(
        table, [at(0, 0, ts=midnight - 1), at(0, 1, ts=midnight), at(0, 2, ts=midnight + 1)], Windows(paris), OPEN
    )
    assert {CounterKey.parse(k, paris).day: t.counter for k, t in table.items() if k[0] == "d"} == {
        date(2026, 11, 24): 1,
        date(2026, 11, 25): 2,
    }
    assert hourly(table, paris) == {
        (datetime(2026, 11, 24, 22, tzinfo=UTC), "signup"): 1,
        (datetime(2026, 11, 24, 23, tzinfo=UTC), "signup"): 2,
    }


def test_hours_of_a_half_hour_zone_start_on_its_half_hours() -> None:
    kolkata = Windows(ZoneInfo("Asia/Kolkata"))
    _, hourly_key, _ = kolkata.of(int(datetime(2026, 11, 25, 9, 40, tzinfo=UTC).timestamp() * 1000))
    assert hourly_key == f"h{int(datetime(2026, 11, 25, 9, 30, tzinfo=UTC).timestamp())}"


def test_events_seen_again_after_a_crash_are_not_counted_twice() -> None:
    table = DictCountTable()
    count_batch(table, [at(0, o) for o in range(10)], UTC_WINDOWS, OPEN)
    # The worker died after the changelog write but before committing offset 10:
    # it resumes from the last committed offset, 4, and sees 4..14.
    result = count_batch(table, [at(0, o) for o in range(4, 15)], UTC_WINDOWS, OPEN)
    assert (result.counted, result.skipped) == (5, 6)
    assert daily(table) == {(date(2026, 11, 25), "signup"): 15}


def test_replaying_the_whole_log_gives_the_same_table() -> None:
    # Every counter lives in one partition (the Kafka key is the counter).
    log = [at(p, o, label=f"p{p}-l{o % 3}", ts=DAY1 + o * 600_000) for p in range(2) for o in range(30)]
    once = DictCountTable()
    count_batch(once, log, UTC_WINDOWS, OPEN)
    twice = DictCountTable()
    count_batch(twice, log[:17], UTC_WINDOWS, OPEN)
    count_batch(twice, log, UTC_WINDOWS, OPEN)
    assert twice.data == once.data


def test_events_for_closed_days_are_refused_not_counted() -> None:
    table = DictCountTable()
    result = count_batch(table, [at(0, 0, ts=DAY1), at(0, 1, ts=DAY2)], UTC_WINDOWS, date(2026, 11, 25))
    assert [p.offset for p in result.late] == [0]
    assert daily(table) == {(date(2026, 11, 25), "signup"): 1}


def test_window_bookkeeping() -> None:
    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert first_open_day(now, 3) == date(2026, 11, 23)
    table = DictCountTable()
    count_batch(table, [at(0, 0, ts=DAY1), at(0, 1, ts=DAY2)], UTC_WINDOWS, OPEN)
    recent = since(table.items(), date(2026, 11, 25), UTC)
    old = expired(table.items(), date(2026, 11, 25), UTC)
    assert {CounterKey.parse(k, UTC).day for k in recent} == {date(2026, 11, 25)}
    assert {CounterKey.parse(k, UTC).day for k, _ in old} == {date(2026, 11, 24)}
    assert len(recent) + len(old) == len(table.data)


def test_keys_round_trip() -> None:
    paris = ZoneInfo("Europe/Paris")
    for key in (
        CounterKey(date(2026, 11, 25), None, "a", "", "x"),
        CounterKey(date(2026, 11, 25), datetime(2026, 11, 24, 23, tzinfo=UTC), "a/b", "c", ""),
    ):
        assert CounterKey.parse(key.encode(), paris) == key


def test_recovered_values_are_json_lists() -> None:
    assert as_tally([3, 7, 1]) == Tally(3, 7, 1)
    assert as_tally(None) is None


def test_undecodable_messages_are_dropped_not_counted() -> None:
    good = encode(LabelEvent("a", "", "", DAY2))
    dropped: list[Message] = []
    decoded = list(decode_messages([Message(0, 0, good), Message(0, 1, b"junk"), Message(0, 2, good)], dropped))
    assert [(p.partition, p.offset) for p in decoded] == [(0, 0), (0, 2)]
    assert dropped == [Message(0, 1, b"junk")]


def test_an_event_delivered_twice_in_one_batch_counts_once() -> None:
    # During a rebalance the consumer may seek back while events are buffered.
    table = DictCountTable()
    result = count_batch(table, [at(0, 5), at(0, 6), at(0, 5), at(0, 6), at(0, 7)], UTC_WINDOWS, OPEN)
    assert (result.counted, result.skipped) == (3, 2)
    assert daily(table) == {(date(2026, 11, 25), "signup"): 3}


def test_every_event_of_a_record_counts_though_they_share_its_offset() -> None:
    # Three clicks on one button and one elsewhere, in one request: one record, one offset.
    table = DictCountTable()
    result = count_batch(table, [record(0, 0, "signup", "signup", "home", "signup"), at(0, 1)], UTC_WINDOWS, OPEN)
    assert (result.counted, result.skipped) == (5, 0)
    assert daily(table) == {(date(2026, 11, 25), "signup"): 4, (date(2026, 11, 25), "home"): 1}
    assert hourly(table) == {(datetime(2026, 11, 25, 9, tzinfo=UTC), "signup"): 4,
                             (datetime(2026, 11, 25, 9, tzinfo=UTC), "home"): 1}  # fmt: skip


def test_a_record_seen_again_after_a_crash_is_skipped_whole() -> None:
    table = DictCountTable()
    log = [record(0, o, "signup", "signup", "home") for o in range(6)]
    count_batch(table, log[:4], UTC_WINDOWS, OPEN)
    result = count_batch(table, log[2:], UTC_WINDOWS, OPEN)  # resumed from offset 2
    assert (result.counted, result.skipped) == (6, 6)
    assert daily(table) == {(date(2026, 11, 25), "signup"): 12, (date(2026, 11, 25), "home"): 6}


def test_a_record_delivered_twice_in_one_batch_counts_once() -> None:
    table = DictCountTable()
    twice = record(0, 3, "signup", "signup")
    result = count_batch(table, [twice, twice, record(0, 4, "signup")], UTC_WINDOWS, OPEN)
    assert (result.counted, result.skipped) == (3, 2)
    assert daily(table) == {(date(2026, 11, 25), "signup"): 3}


def test_a_record_whose_day_counter_is_restored_but_not_its_hour_counts_the_hour_only() -> None:
    # A crash between two changelog records of one batch: the day's counter holds offset 0, the hour's not.
    table = DictCountTable()
    count_batch(table, [record(0, 0, "signup", "signup")], UTC_WINDOWS, OPEN)
    hour_key = next(k for k in table.data if k.startswith("h"))
    del table.data[hour_key]
    result = count_batch(table, [record(0, 0, "signup", "signup")], UTC_WINDOWS, OPEN)
    assert (result.counted, result.skipped) == (0, 2)
    assert daily(table) == {(date(2026, 11, 25), "signup"): 2}
    assert hourly(table) == {(datetime(2026, 11, 25, 9, tzinfo=UTC), "signup"): 2}


def test_a_records_events_of_closed_days_are_refused_and_the_rest_counted() -> None:
    table = DictCountTable()
    result = count_batch(table, [record(0, 0, "signup", ts=DAY1), record(0, 1, "a", "b", ts=DAY2)],
                         UTC_WINDOWS, date(2026, 11, 25))  # fmt: skip
    assert [(p.offset, p.event.label) for p in result.late] == [(0, "signup")]
    assert result.counted == 2


def test_v1_and_v2_records_decode_alike_and_v2_keeps_its_key() -> None:
    one = LabelEvent("a", "", "", DAY2)
    messages = [
        Message(0, 0, encode(one), 7),
        Message(0, 1, encode_record([one, one]), 8),
        Message(0, 2, encode_record([one], "req-1")),  # no record time: its latest event's
    ]
    decoded = list(decode_messages(messages))
    assert decoded == [
        PositionedRecord(0, 0, None, (one,), 7),
        PositionedRecord(0, 1, None, (one, one), 8),
        PositionedRecord(0, 2, "req-1", (one,), DAY2),
    ]
    table = DictCountTable()
    assert count_batch(table, decoded, UTC_WINDOWS, OPEN).counted == 4
