"""Each keyed request counts once per partition: repeats dropped, reused keys dropped, re-reads after a crash
neither dropped as repeats nor counted twice, keys expired past the window -- and the state restored from any
prefix of the changelog gives the counts a worker that never crashed gives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.batch import count_partition
from aggregator.count import DictCountTable, Tally, Windows, as_tally
from aggregator.decode import PositionedRecord
from aggregator.dedupe import Dedupe, DictSeenStore, Seen, as_seen
from schema.event import LabelEvent
from schema.keys import CounterKey, seen_key, seen_prefix, through_key

T0 = int(datetime(2026, 11, 25, 9, tzinfo=UTC).timestamp() * 1000)
OPEN = date(2026, 11, 20)
WINDOW_MS = 60_000
WINDOWS = Windows(UTC)


def rec(offset: int, key: str | None, *labels: str, at: int = 0, partition: int = 0) -> PositionedRecord:
    events = tuple(LabelEvent(label, "c", "", T0 + at) for label in labels)
    return PositionedRecord(partition, offset, key, events, T0 + at)


def daily(table: DictCountTable) -> dict[str, int]:
    keys = ((CounterKey.parse(k, UTC), t) for k, t in table.items())
    return {k.label: t.counter for k, t in keys if k.hour is None}


def run(records: list[PositionedRecord], window_ms: int = WINDOW_MS) -> tuple[DictCountTable, Dedupe, list[object]]:
    counts, dedupe = DictCountTable(), Dedupe(DictSeenStore(), window_ms)
    decided, _ = count_partition(counts, dedupe, 0, records, -1, -1, WINDOWS, OPEN)
    return counts, dedupe, [decided]


def test_a_repeat_of_a_keyed_request_is_dropped_and_an_unkeyed_one_counts() -> None:
    counts, dedupe = DictCountTable(), Dedupe(DictSeenStore(), WINDOW_MS)
    first = [rec(0, "k1", "a", "a", "b"), rec(1, None, "a"), rec(2, "k1", "a", "b", "a", at=5_000)]
    decided, result = count_partition(counts, dedupe, 0, first, -1, -1, WINDOWS, OPEN)
    assert [r.offset for r in decided.duplicates] == [2]
    assert daily(counts) == {"a": 3, "b": 1}
    # In a later batch too, and repeats of repeats.
    later = [rec(3, None, "a", at=6_000), rec(4, "k1", "b", "a", "a", at=50_000), rec(5, "k2", "b", at=50_000)]
    decided, result = count_partition(counts, dedupe, 0, later, 2, decided.clock, WINDOWS, OPEN)
    assert [r.offset for r in decided.duplicates] == [4]
    assert result.counted == 2
    assert daily(counts) == {"a": 4, "b": 2}


def test_a_key_reused_for_other_counters_is_dropped_as_reused() -> None:
    counts, _, (decided,) = run([rec(0, "k", "a"), rec(1, "k", "b"), rec(2, "k", "a", "a")])
    assert [r.offset for r in decided.reused] == [1, 2]  # type: ignore[attr-defined]
    assert daily(counts) == {"a": 1}


def test_a_repeat_past_the_window_counts_again_and_is_reported() -> None:
    records = [rec(0, "k", "a"), rec(1, None, "b", at=WINDOW_MS + 1), rec(2, "k", "a", at=WINDOW_MS + 2)]
    counts, _, (decided,) = run(records)
    assert decided.past_window == 1  # type: ignore[attr-defined]
    assert daily(counts) == {"a": 2, "b": 1}


def test_the_window_runs_on_the_partitions_clock_not_on_a_records_own_time() -> None:
    # A record stamped back in time (a client's clock) does not bring an expired key back.
    records = [rec(0, "k", "a"), rec(1, None, "b", at=WINDOW_MS + 10), rec(2, "k", "a", at=10)]
    counts, _, (decided,) = run(records)
    assert decided.past_window == 1  # type: ignore[attr-defined]
    assert daily(counts) == {"a": 2, "b": 1}


def test_records_read_again_are_passed_over_not_dropped_as_repeats() -> None:
    counts, dedupe = DictCountTable(), Dedupe(DictSeenStore(), WINDOW_MS)
    log = [rec(0, "k", "a"), rec(1, "k", "a"), rec(2, "j", "b")]
    decided, _ = count_partition(counts, dedupe, 0, log, -1, -1, WINDOWS, OPEN)
    # Read again from offset 0, the table through 1: offsets 0 and 1 were applied; 2's key is held at 2.
    again, result = count_partition(counts, dedupe, 0, log, 1, decided.clock, WINDOWS, OPEN)
    assert [r.offset for r in again.already] == [0, 1, 2]
    assert (again.duplicates, again.reused, result.counted) == ([], [], 0)
    assert daily(counts) == {"a": 1, "b": 1}


def test_keys_past_the_window_are_deleted_and_the_state_size_is_told() -> None:
    store = DictSeenStore()
    counts, dedupe = DictCountTable(), Dedupe(store, WINDOW_MS)
    decided, _ = count_partition(
        counts, dedupe, 0, [rec(o, f"k{o}", "a", at=o * 1_000) for o in range(10)], -1, -1, WINDOWS, OPEN
    )
    assert dedupe.keys_held([0]) == 10
    assert dedupe.oldest_age_s([0], now_s=T0 / 1000 + 100) == 100
    later = [rec(10, None, "a", at=WINDOW_MS + 4_500)]  # keys k0..k4 are more than a window behind
    count_partition(counts, dedupe, 0, later, 9, decided.clock, WINDOWS, OPEN)
    assert sorted(key for (_, key) in store.data) == [f"k{o}" for o in range(5, 10)]
    assert dedupe.keys_held([0]) == 5
    # What is kept in memory is read again from the store after a rebalance.
    dedupe.forget()
    assert dedupe.keys_held([0]) == 0
    count_partition(counts, dedupe, 0, [], 10, WINDOW_MS + 4_500, WINDOWS, OPEN)
    assert dedupe.keys_held([0]) == 5


def test_stored_values_are_json_lists_after_a_restore() -> None:
    assert as_seen([3, 7, 11]) == Seen(3, 7, 11)
    assert as_seen(None) is None
    assert seen_key(3, "abc").startswith(seen_prefix(3))
    assert not seen_key(3, "abc").startswith(seen_prefix(33))


# --- The whole log, with kill -9 at any point ---------------------------------------------------------------


class Changelogged:
    """One events partition's table as the worker keeps it: counters, keys, position; every write logged in order.

    A restore is the state after any prefix of the log (Kafka holds a prefix of what was sent).
    """

    def __init__(self, log: list[tuple[str, object]] | None = None) -> None:
        self.log: list[tuple[str, object]] = []
        self.data: dict[str, object] = {}
        for key, value in log or ():
            self._write(key, value)

    def _write(self, key: str, value: object) -> None:
        self.log.append((key, value))
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    # CountTable
    def get(self, key: str) -> Tally | None:
        return as_tally(self.data.get(key))

    def set(self, key: str, tally: Tally) -> None:
        self._write(key, list(tally))

    def items(self) -> Iterable[tuple[str, Tally]]:
        return [(k, t) for k, v in self.data.items() if k[0] in "dh" and (t := as_tally(v))]

    # SeenStore
    def get_seen(self, partition: int, key: str) -> Seen | None:
        return as_seen(self.data.get(seen_key(partition, key)))

    def set_seen(self, partition: int, key: str, seen: Seen) -> None:
        self._write(seen_key(partition, key), list(seen))

    def delete_seen(self, partition: int, key: str) -> None:
        self._write(seen_key(partition, key), None)

    def seen_items(self, partition: int) -> list[tuple[str, Seen]]:
        prefix = seen_prefix(partition)
        return [(k[len(prefix) :], s) for k, v in self.data.items() if k.startswith(prefix) and (s := as_seen(v))]

    # position
    def position(self) -> tuple[int, int]:
        value = self.data.get(through_key(0))
        return (-1, -1) if value is None else tuple(value)  # type: ignore[return-value, arg-type]

    def set_through(self, offset: int, clock: int) -> None:
        self._write(through_key(0), [offset, clock])


# A request: (key, its labels); sent 1-3 times, the copies spread over the log.
requests = st.lists(
    st.tuples(st.lists(st.sampled_from("abc"), min_size=1, max_size=4), st.integers(1, 3), st.booleans()),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(requests, st.data())
def test_counts_are_those_of_the_distinct_requests_through_any_crash(
    sent: list[tuple[list[str], int, bool]], data: st.DataObject
) -> None:
    # The log: every copy of every request, shuffled; time moves 1 s a record, the window is far away.
    copies = [(i, labels, keyed) for i, (labels, times, keyed) in enumerate(sent) for _ in range(times)]
    order = data.draw(st.permutations(copies))
    log = [rec(o, f"req{i}" if keyed else None, *labels, at=o * 1_000) for o, (i, labels, keyed) in enumerate(order)]
    truth: Counter[str] = Counter()
    for labels, times, keyed in sent:
        for _ in range(1 if keyed else times):
            truth.update(labels)

    table = Changelogged()
    committed = confirmed = 0  # the group's committed offset (the next to read); the changelog it covers
    crashes = data.draw(st.integers(0, 3))
    for attempt in range(crashes + 1):
        dedupe = Dedupe(table, 3_600_000)  # a worker starts: nothing in memory
        position = committed
        last = attempt == crashes
        stop_at = len(log) if last else data.draw(st.integers(position, len(log)))
        while position < stop_at:
            batch = log[position : position + data.draw(st.integers(1, 5))]
            if data.draw(st.integers(0, 4)) == 0:  # delivered twice, as after a seek back
                batch = batch + batch
            through, clock = table.position()
            decided, _ = count_partition(table, dedupe, 0, batch, through, clock, WINDOWS, OPEN)
            table.set_through(max(through, max(r.offset for r in batch)), decided.clock)
            position = max(r.offset for r in batch) + 1
            if data.draw(st.booleans()):  # Kafka confirmed the changelog; the offsets are committed
                committed, confirmed = position, len(table.log)
        if not last:  # kill -9: Kafka holds a prefix of the changelog, at least what the commit covers
            table = Changelogged(table.log[: data.draw(st.integers(confirmed, len(table.log)))])
    counted = {CounterKey.parse(k, UTC).label: t.counter for k, t in table.items() if k[0] == "d"}
    assert counted == dict(truth)


# --- tally replay takes the same decisions ------------------------------------------------------------------


def replayed_day(log: list[PositionedRecord], read_from_ms: int, day: date, window_ms: int) -> dict[str, int]:
    """What Recount counts for ``day`` from the log, reading from the first record stamped ``read_from_ms``."""
    from aggregator.replay import Batch, Plan, Recount
    from schema.event import encode_record

    start = next(r.offset for r in log if r.time_ms >= read_from_ms)
    recount = Recount(Plan(day, day, {0: start}, {0: len(log)}, window_ms), UTC)
    for i in range(start, len(log), 7):
        chunk = log[i : i + 7]
        values = [encode_record(r.events, r.key) for r in chunk]
        recount.add(Batch(0, [r.offset for r in chunk], values, [r.time_ms for r in chunk]))
    return {CounterKey.parse(k, UTC).label: t.counter for k, t in recount.counted.table.items() if k[0] == "d"}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_replayed_day_equals_the_live_one(data: st.DataObject) -> None:
    window = 600_000
    midnight = int(datetime(2026, 11, 25, tzinfo=UTC).timestamp() * 1000)
    # Requests around midnight, each sent 1-3 times within about two windows; the log in arrival order.
    sends = []
    for i in range(data.draw(st.integers(1, 40))):
        first = midnight + data.draw(st.integers(-3 * window, 2 * window))
        labels = data.draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3))
        for _ in range(data.draw(st.integers(1, 3))):
            sends.append((first + data.draw(st.integers(0, 2 * window)), f"r{i}", labels))
    sends.sort()
    log = [
        PositionedRecord(0, o, key, tuple(LabelEvent(label, "c", "", at) for label in labels), at)
        for o, (at, key, labels) in enumerate(sends)
    ]
    if not any(r.time_ms >= midnight for r in log):
        return
    live_table, live = DictCountTable(), Dedupe(DictSeenStore(), window)
    count_partition(live_table, live, 0, log, -1, -1, WINDOWS, date(2026, 11, 1))
    live_day = {CounterKey.parse(k, UTC).label: t.counter for k, t in live_table.items() if k.startswith("d2026-11-25")}
    assert replayed_day(log, midnight - 2 * window, date(2026, 11, 25), window) == live_day


def test_a_replay_that_did_not_read_the_window_before_would_count_a_repeat_again() -> None:
    window = 600_000
    midnight = int(datetime(2026, 11, 25, tzinfo=UTC).timestamp() * 1000)
    day = date(2026, 11, 25)
    log = [
        PositionedRecord(0, 0, None, (LabelEvent("z", "c", "", midnight - 5 * window),), midnight - 5 * window),
        # One request, its events stamped by the client just after midnight, sent just before and again after.
        PositionedRecord(0, 1, "r", (LabelEvent("a", "c", "", midnight + 1),), midnight - 1_000),
        PositionedRecord(0, 2, "r", (LabelEvent("a", "c", "", midnight + 1),), midnight + 1_000),
    ]
    assert replayed_day(log, midnight - 2 * window, day, window) == {"a": 1}
    # Read from midnight, the replay would miss the first send and count its repeat.
    assert replayed_day(log, midnight, day, window) == {"a": 1}
    log[2] = log[2]._replace(events=(LabelEvent("b", "c", "", midnight + 1),))  # the key reused: dropped
    assert replayed_day(log, midnight - 2 * window, day, window) == {"a": 1}
    assert replayed_day(log, midnight, day, window) == {"b": 1}
