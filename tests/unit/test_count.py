"""Exactly-once counting: batches, days, and events seen again after a crash."""

from datetime import UTC, date, datetime

from aggregator.count import CounterKey, DictCountTable, Tally, as_tally, changed_since, count_batch
from aggregator.decode import Message, Positioned, decode_messages
from schema.event import LabelEvent, encode

DAY1 = int(datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp() * 1000)
DAY2 = int(datetime(2026, 11, 25, 9, tzinfo=UTC).timestamp() * 1000)


def at(partition: int, offset: int, label: str = "signup", dom_id: str = "btn1", ts: int = DAY2) -> Positioned:
    return Positioned(partition, offset, LabelEvent(label, "forms", dom_id, ts))


def counts(table: DictCountTable) -> dict[CounterKey, int]:
    return {CounterKey.parse(k): t.counter for k, t in table.items()}


def test_one_update_per_counter_per_batch() -> None:
    table = DictCountTable()
    result = count_batch(table, [at(0, 0), at(0, 1), at(1, 0, "home", ""), at(0, 2)], UTC)
    assert result.counted == 4
    assert result.changed == {
        "2026-11-25:signup:forms:btn1": Tally(3, 2, 0),
        "2026-11-25:home:forms:": Tally(1, 0, 1),
    }


def test_events_fall_into_their_own_day() -> None:
    table = DictCountTable()
    count_batch(table, [at(0, 0, ts=DAY1), at(0, 1, ts=DAY2), at(0, 2, ts=DAY2)], UTC)
    assert counts(table) == {
        CounterKey(date(2026, 11, 24), "signup", "forms", "btn1"): 1,
        CounterKey(date(2026, 11, 25), "signup", "forms", "btn1"): 2,
    }


def test_events_seen_again_after_a_crash_are_not_counted_twice() -> None:
    table = DictCountTable()
    count_batch(table, [at(0, o) for o in range(10)], UTC)
    # The worker died after the changelog write but before committing offset 10:
    # it resumes from the last committed offset, 4, and sees 4..14.
    result = count_batch(table, [at(0, o) for o in range(4, 15)], UTC)
    assert (result.counted, result.skipped) == (5, 6)
    assert counts(table) == {CounterKey(date(2026, 11, 25), "signup", "forms", "btn1"): 15}


def test_replaying_the_whole_log_gives_the_same_table() -> None:
    # Every counter lives in one partition (the Kafka key is the counter).
    log = [at(p, o, label=f"p{p}-l{o % 3}") for p in range(2) for o in range(30)]
    once = DictCountTable()
    count_batch(once, log, UTC)
    twice = DictCountTable()
    count_batch(twice, log[:17], UTC)
    count_batch(twice, log, UTC)
    assert twice.data == once.data


def test_recovered_values_are_json_lists() -> None:
    assert as_tally([3, 7, 1]) == Tally(3, 7, 1)
    assert as_tally(None) is None


def test_changed_since_picks_recent_days() -> None:
    table = DictCountTable()
    count_batch(table, [at(0, 0, ts=DAY1), at(0, 1, ts=DAY2)], UTC)
    assert list(changed_since(table.items(), date(2026, 11, 25))) == ["2026-11-25:signup:forms:btn1"]


def test_undecodable_messages_are_dropped_not_counted() -> None:
    good = encode(LabelEvent("a", "", "", DAY2))
    dropped: list[Message] = []
    decoded = list(decode_messages([Message(0, 0, good), Message(0, 1, b"junk"), Message(0, 2, good)], dropped))
    assert [(p.partition, p.offset) for p in decoded] == [(0, 0), (0, 2)]
    assert dropped == [Message(0, 1, b"junk")]
