"""``tally replay`` counts a batch at a time without decoding every event, and gets what the worker gets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given
from hypothesis import strategies as st

from aggregator.count import DictCountTable, Windows, count_batch
from aggregator.decode import Message, decode_messages
from aggregator.replay import Batch, Counted, Plan, Recount, count
from schema.event import LabelEvent, encode, encode_record

ZONES = [UTC, *map(ZoneInfo, ("Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns"))]
FIRST, LAST = date(2026, 3, 28), date(2026, 3, 30)  # Paris and St John's change clocks on the 29th
START_MS = int(datetime(2026, 3, 27, 12, tzinfo=UTC).timestamp() * 1000)
SPAN_MS = 5 * 86_400_000
COUNTERS = [("signup", "forms", "btn1"), ("home", "", ""), ("a/b.c-d_e", "x/y", "z.1-2_3"), ("page_view_7", "nav", "")]


def reference(batches: list[Batch], first: date, last: date, tz: tzinfo) -> Counted:
    """What ``count`` did before: the live worker's decode and count_batch, event by event."""
    counted = Counted(DictCountTable())
    windows = Windows(tz)
    for batch in batches:
        counted.events_read += len(batch.offsets)
        dropped: list[Message] = []
        records = []
        for record in decode_messages(batch.messages(), dropped):
            kept = []
            for event in record.events:
                day = windows.of(event.ts_ms)[2]
                if first <= day <= last:
                    kept.append(event)
                    counted.events_per_day[day] += 1
            if kept:
                records.append(record._replace(events=tuple(kept)))
        counted.undecodable += len(dropped)
        count_batch(counted.table, records, windows, first)
    return counted


def recount(batches: list[Batch], first: date, last: date, tz: tzinfo) -> Recount:
    r = Recount(Plan(first, last, {}, {}), tz)
    for batch in batches:
        r.add(batch)
    return r


def assert_same(got: Counted, want: Counted) -> None:
    assert got.table.data == want.table.data
    assert got.events_per_day == want.events_per_day
    assert (got.events_read, got.undecodable) == (want.events_read, want.undecodable)


def canonical(counter: tuple[str, str, str], ts: int) -> bytes:
    return encode(LabelEvent(*counter, ts))


def doc(counter: tuple[str, str, str], ts: object, **extra: object) -> dict[str, object]:
    label, category, dom_id = counter
    return {"v": 1, "label": label, "category": category, "dom_id": dom_id, "ts": ts, **extra}


# Values the worker refuses, or accepts in another spelling than ingest's.
def odd_values(counter: tuple[str, str, str], ts: int) -> list[bytes]:
    good = canonical(counter, ts)
    return [
        b"",
        b"junk",
        good[:-1],
        good + b" ",
        good + b"\n",
        good.replace(b'"ts":', b'"ts": '),
        good.replace(b'"ts":', b'"ts":0'),  # a leading zero: not JSON
        good.replace(b'"ts":', b'"ts":-'),
        good.replace(b'"v":1', b'"v":2'),
        good + b'"ts":1}',
        good[:-1] + b',"ts":1}',
        b'"ts":1}',
        good.replace(b"}", b".5}"),
        good.replace(str(ts).encode(), b"100000000000000"),  # 15 digits: year 5138
        orjson.dumps(doc(counter, ts), option=orjson.OPT_SORT_KEYS),
        orjson.dumps(doc(counter, str(ts))),
        orjson.dumps(doc(("bad label", *counter[1:]), ts)),
        orjson.dumps(doc(("x:y", *counter[1:]), ts)),
        orjson.dumps(doc(counter, ts, extra=1)),
        b'{"v":1,"label":"a","category":"","dom_id":"","ts":1,"ts":' + str(ts).encode() + b"}",
        b'{"v":1,"label":"a\\u0062","category":"","dom_id":"","ts":' + str(ts).encode() + b"}",
    ]


ODD = len(odd_values(COUNTERS[0], 0))
# (counter, or None for the partition's own; time; None, or which odd value)
record = st.tuples(
    st.one_of(st.none(), st.sampled_from(COUNTERS)),
    st.integers(0, SPAN_MS),
    st.one_of(st.none(), st.integers(0, 8 * ODD - 1).map(lambda n: n if n < ODD else None)),
)


@st.composite
def logs(draw: st.DrawFn) -> list[Batch]:
    """Batches as the reader yields them, mostly increasing offsets, sometimes not."""
    next_offset = {p: 0 for p in range(3)}
    batches = []
    for _ in range(draw(st.integers(1, 8))):
        partition = draw(st.integers(0, 2))
        records = draw(st.lists(record, min_size=1, max_size=20))
        if draw(st.integers(0, 3)) == 0:  # seen again, as after a seek back
            next_offset[partition] = max(next_offset[partition] - draw(st.integers(1, 40)), 0)
        offsets, values = [], []
        for chosen, ts, odd in records:
            counter = COUNTERS[partition] if chosen is None else chosen
            next_offset[partition] += draw(st.integers(1, 2))  # gaps, as compaction leaves
            offsets.append(next_offset[partition])
            ts += START_MS
            values.append(canonical(counter, ts) if odd is None else odd_values(counter, ts)[odd])
        batches.append(Batch(partition, offsets, values))
    return batches


@given(logs(), st.sampled_from(ZONES), st.integers(0, 2), st.integers(0, 2))
def test_the_same_counts_as_the_worker_for_any_records(batches: list[Batch], tz: tzinfo, a: int, b: int) -> None:
    first, last = FIRST + timedelta(days=min(a, b)), FIRST + timedelta(days=max(a, b))
    assert_same(recount(batches, first, last, tz).counted, reference(batches, first, last, tz))


def tick(partition: int, n: int, start: int) -> bytes:
    """Event ``n`` of a partition: its own two counters, about every 5.6 minutes."""
    return canonical(COUNTERS[n % 2 + 2 * partition], start + n * 337_001 + partition)


def test_canonical_batches_are_counted_without_decoding_each_event() -> None:
    for tz in [*ZONES, ZoneInfo("Africa/Monrovia")]:  # Monrovia: UTC-0:44:30 until 1972
        for start in (START_MS, int(datetime(1971, 6, 1, tzinfo=UTC).timestamp() * 1000)):
            batches = [
                Batch(p, list(range(i, i + 500)), [tick(p, i + j, start) for j in range(500)])
                for p in range(2)
                for i in range(0, 2000, 500)
            ]
            first = datetime.fromtimestamp(start / 1000, tz).date()
            last = first + timedelta(days=4)
            got = recount(batches, first, last, tz)
            assert (got.fast_batches, got.slow_batches) == (8, 0), tz
            assert_same(got.counted, reference(batches, first, last, tz))
            assert sum(got.counted.events_per_day.values()) > 0


def test_a_batch_with_one_odd_value_is_counted_event_by_event() -> None:
    good = [canonical(COUNTERS[0], START_MS + i * 60_000) for i in range(10)]
    for odd in odd_values(COUNTERS[1], START_MS):
        batches = [Batch(0, list(range(11)), [*good[:5], odd, *good[5:]])]
        got = recount(batches, FIRST, LAST, UTC)
        assert (got.fast_batches, got.slow_batches) == (0, 1), odd
        assert_same(got.counted, reference(batches, FIRST, LAST, UTC))


def test_a_counter_met_in_two_partitions_is_left_to_count_batch() -> None:
    values = [canonical(COUNTERS[0], START_MS + 86_400_000 + i) for i in range(5)]
    batches = [Batch(0, [10, 11, 12, 13, 14], values), Batch(1, [3, 4, 5, 12, 20], values)]
    got = recount(batches, FIRST, LAST, UTC)
    assert (got.fast_batches, got.slow_batches) == (1, 1)
    assert_same(got.counted, reference(batches, FIRST, LAST, UTC))


def test_count_leaves_the_cycle_collector_as_it_found_it() -> None:
    import gc

    assert gc.isenabled()
    batches = [Batch(0, [0], [canonical(COUNTERS[0], START_MS + 86_400_000)])]
    counted = count(iter(batches), Plan(FIRST, LAST, {}, {}), UTC)
    assert gc.isenabled()
    assert_same(counted, reference(batches, FIRST, LAST, UTC))


def test_events_seen_again_after_a_seek_back_count_once() -> None:
    k, other = (canonical(COUNTERS[0], START_MS + 86_400_000 + i) for i in range(2))
    batches = [Batch(0, [10, 20], [k, k]), Batch(0, [5], [other]), Batch(0, [6, 7], [k, k])]
    assert_same(recount(batches, FIRST, LAST, UTC).counted, reference(batches, FIRST, LAST, UTC))


def test_v2_records_are_read_with_every_event_they_hold() -> None:
    day = START_MS + 86_400_000
    events = [LabelEvent(*COUNTERS[0], day + i) for i in range(3)] + [LabelEvent(*COUNTERS[1], day)]
    v2 = [encode_record(events), encode_record(events[:2], "req-1"), canonical(COUNTERS[0], day)]
    batches = [Batch(0, [0, 1, 2], v2), Batch(0, [2, 3], [v2[2], encode_record(events[3:])])]
    got = recount(batches, FIRST, LAST, UTC)
    assert_same(got.counted, reference(batches, FIRST, LAST, UTC))
    daily = {key: tally.counter for key, tally in got.counted.table.items() if key.startswith("d")}
    assert daily == {"d2026-03-28:signup:forms:btn1": 6, "d2026-03-28:home::": 2}
