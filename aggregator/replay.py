"""Rebuilding the counts of past days from the events topic (``tally replay``).

Stages, in order:

1. plan     which days; refuse open days (the live workers still write them) and
            days the topic no longer holds; start and end offsets by timestamp,
            and where to start reading so as to see the dedupe window before
2. read     every partition's range, with a progress bar
3. dedupe   aggregator.dedupe on fresh in-memory keys, seeded from the records of
            twice the dedupe window before the first day (see ``make_plan``)
4. count    aggregator.count on a fresh in-memory table: the same rules as the
            live worker, so a replay can never disagree with it
5. stage    the counts into ``daily_counts_replay`` / ``hourly_counts_replay``,
            tagged with this run's id
6. verify   what ClickHouse holds for the run equals what was counted
7. swap     day by day, one ``INSERT ... SELECT`` per table and day (one part,
            so readers see the old day or the new one, never half), with a
            version above every live one, and 0 for counters the topic no
            longer supports

A later replay gets a higher version than an earlier one, so running the same
range twice gives the same counts, and a run that crashed halfway is safe to
run again: days it did not swap keep their old counts.

Record timestamps are the events' own times or their arrival (ingest sets
them), so a day's events start at the first offset stamped at or after its
midnight, less how far ahead a client's clock may be: every earlier offset
is stamped before it. Reading starts twice the dedupe window earlier still
(``make_plan``). Where they end cannot be told the same
way (a client timestamp may lag its arrival), so the read goes on to the end
of the topic as it was when the replay started.
"""

from __future__ import annotations

import asyncio
import gc
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from itertools import islice, repeat
from operator import attrgetter, floordiv, lt
from typing import Any, NamedTuple, cast

from kafka import KafkaConsumer, TopicPartition

from aggregator.count import DictCountTable, Tally, Windows, count_batch
from aggregator.decode import Message, decode_messages
from aggregator.dedupe import Decided, Dedupe, DictSeenStore
from schema.event import UndecodableEvent, day_of, decode, encode
from schema.keys import SEP, CounterKey

# Replay versions sit above every Kafka offset a live worker writes as version.
REPLAY_VERSION_BASE = 1 << 62


class ReplayRefused(Exception):
    """The replay cannot run as asked; nothing was written. The message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    first_day: date
    last_day: date
    start: dict[int, int]
    """partition -> first offset to read"""
    end: dict[int, int]
    """partition -> offset to stop before"""
    window_ms: int = 0
    """TALLY_DEDUPE_WINDOW_S, in ms: how long keys are held (aggregator.dedupe)"""

    @property
    def total(self) -> int:
        return sum(self.end[p] - self.start[p] for p in self.start)

    @property
    def days(self) -> list[date]:
        n = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=i) for i in range(n)]


@dataclass
class Counted:
    table: DictCountTable
    events_read: int = 0
    events_per_day: Counter[date] = field(default_factory=Counter)
    undecodable: int = 0
    duplicates: int = 0
    """Records dropped as repeats of a keyed request (aggregator.dedupe)."""
    reused: int = 0
    """Records dropped as a key reused for other counters."""


def midnight_ms(day: date, tz: tzinfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def make_plan(
    consumer: KafkaConsumer,
    topic: str,
    first_day: date,
    last_day: date,
    *,
    tz: tzinfo,
    first_open_day: date,
    window_ms: int = 0,
) -> Plan:
    """Decide what to read, or refuse before anything is written.

    Reading starts at the first record stamped at or after midnight of the
    first day less twice the dedupe window (``window_ms``): every record
    before it is stamped earlier (Kafka's ``offsets_for_times``), so the
    partition's dedupe clock (aggregator.dedupe) is the same from there on in
    the replay as in the live worker, and every decision about a record
    stamped after midnight rests on keys of that read alone: a key held at
    such a decision is less than a window old, so it came from a record
    stamped after midnight less a window, whose own decision rested on keys
    less than a window older, all of them read. Every record read is
    decided; only the events of the days are counted.
    """
    if last_day < first_day:
        raise ReplayRefused(f"--to {last_day} is before --from {first_day}")
    if last_day >= first_open_day:
        raise ReplayRefused(
            f"{first_open_day} and later days are still open for live counting (TALLY_WORKER_WINDOW_DAYS): "
            f"replay days up to {first_open_day - timedelta(days=1)}; the live workers rewrite the counts "
            "of open days themselves after a restart"
        )
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ReplayRefused(f"topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    end_of_topic = consumer.end_offsets(tps)
    earliest = earliest_complete_day(consumer, topic, tz, lead_ms=2 * window_ms)
    if earliest is not None and first_day < earliest:
        raise ReplayRefused(
            f"the topic no longer holds all events of {first_day} (retention): the earliest complete day "
            f"is {earliest}; replay from there"
        )
    since = midnight_ms(first_day, tz) - 2 * window_ms
    starts = consumer.offsets_for_times({tp: since for tp in tps})
    start = {tp.partition: starts[tp].offset if starts[tp] else end_of_topic[tp] for tp in tps}
    # Read to the end: a record's place in the log follows its arrival, not its
    # event time, so events of the range may sit anywhere after the start.
    end = {tp.partition: end_of_topic[tp] for tp in tps}
    return Plan(first_day, last_day, start, end, window_ms)


def earliest_complete_day(consumer: KafkaConsumer, topic: str, tz: tzinfo, lead_ms: int = 0) -> date | None:
    """None if no partition has lost events to retention; else the first day no partition lost any of.

    With ``lead_ms``, neither any of the ``lead_ms`` before the day (what a replay reads for its dedupe keys).
    """
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    beginning = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    latest_first: int | None = None
    for tp, offset in beginning.items():
        if offset == 0 or offset >= end[tp]:
            continue
        consumer.assign([tp])
        consumer.seek(tp, offset)
        records = consumer.poll(timeout_ms=5000, max_records=1).get(tp, [])
        if records:
            first = records[0].timestamp
            latest_first = first if latest_first is None else max(latest_first, first)
    if latest_first is None:
        return None
    return day_of(latest_first + lead_ms, tz) + timedelta(days=1)


class Batch(NamedTuple):
    """Records of one partition, in offset order, as columns: no object per record."""

    partition: int
    offsets: list[int]
    values: list[bytes]
    timestamps: list[int] | None = None
    """The records' Kafka timestamps (None: not known, the events' times stand in)."""

    def messages(self) -> list[Message]:
        if self.timestamps is None:
            return [Message(self.partition, o, v) for o, v in zip(self.offsets, self.values, strict=True)]
        return [
            Message(self.partition, o, v, t) for o, v, t in zip(self.offsets, self.values, self.timestamps, strict=True)
        ]


def read(bootstrap: str, topic: str, plan: Plan, progress: Callable[[int], None]) -> Iterator[Batch]:
    """Every record of the plan's ranges, in batches, partition order kept.

    aiokafka, driven on a private event loop: its fetcher is several times as
    fast as kafka-python's on one core (bench/replay.py, docs/performance.md).
    """
    loop = asyncio.new_event_loop()
    batches = _batches(bootstrap, topic, plan)
    try:
        while True:
            try:
                batch = loop.run_until_complete(anext(batches))
            except StopAsyncIteration:
                return
            progress(len(batch.offsets))
            yield batch
    finally:
        loop.run_until_complete(batches.aclose())
        loop.close()


async def _batches(bootstrap: str, topic: str, plan: Plan) -> AsyncGenerator[Batch, None]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AioTP

    remaining = {AioTP(topic, p) for p, start in plan.start.items() if start < plan.end[p]}
    if not remaining:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
        client_id="tally-replay",
    )
    await consumer.start()
    try:
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, plan.start[tp.partition])
        while remaining:
            polled = await consumer.getmany(timeout_ms=1000, max_records=READ_MAX_RECORDS)
            for tp, records in polled.items():
                stop = plan.end[tp.partition]
                offsets = list(map(_OFFSET, records))
                values = list(map(_VALUE, records))
                stamps = list(map(_TIMESTAMP, records))
                if None in values:  # a tombstone: no event, refused as undecodable
                    values = [b"" if v is None else v for v in values]
                if offsets and offsets[-1] >= stop:
                    keep = bisect_left(offsets, stop)
                    del offsets[keep:], values[keep:], stamps[keep:]
                if offsets:
                    yield Batch(tp.partition, offsets, values, stamps)
                if records and records[-1].offset >= stop - 1:
                    remaining.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()


READ_MAX_RECORDS = 50_000
_OFFSET = attrgetter("offset")
_VALUE = attrgetter("value")
_TIMESTAMP = attrgetter("timestamp")

# The end of a value as ingest writes it (schema.event.encode: orjson, this
# key order, no spaces): the time, with no leading zero, last. Splitting a
# batch joined by newlines at each of these leaves each value's counter part.
_TIME_AT_END = re.compile(rb'"ts":(0|[1-9][0-9]{0,13})\}\n')
_TIME_FIELD = b'"ts":'

# Buckets of event time, coarsest first, within which every minute falls into
# the same day and hour: an hour in most zones, 15 minutes in the half- and
# quarter-hour ones; a minute always (Windows's own grain).
_BUCKETS_MS = (3_600_000, 900_000, 60_000)


class Recount:
    """``aggregator.count`` on a fresh table, a batch at a time, exactly, without an object per event.

    For a batch whose every value ends as ingest writes it (one regular
    expression over the joined batch splits each into its counter's part and
    its time), events are grouped in C by (counter's part, time bucket), and
    each counter's part is decoded once: ``decode(part + b'"ts":0}')``, which
    must give an event that ``encode`` turns back into those very bytes. Then
    ``part + b'"ts":' + digits + b"}"`` is ``encode`` of that counter at ``digits``,
    which ``decode`` accepts and reads back as that, so every event of the
    group decodes to what the live worker would count. The day and hour come
    from ``Windows`` as for the worker, once per bucket. Any other batch --
    a value that is not canonical or not valid, offsets not increasing, or a
    counter last counted from another partition or at or past the batch's
    first offset (seen again) -- goes through
    ``decode_messages`` and ``count_batch`` event by event, as the worker
    does. Both paths leave the table as ``count_batch`` would.

    Before counting, every record goes through ``aggregator.dedupe`` as in
    the worker: the fast path's values are v1 records, which hold no key and
    only move their partition's clock; any other goes the slow way.
    """

    def __init__(self, plan: Plan, tz: tzinfo) -> None:
        self.counted = Counted(DictCountTable())
        self.dedupe = Dedupe(DictSeenStore(), plan.window_ms)
        self.clocks: dict[int, int] = {}
        """partition -> its dedupe clock so far"""
        self.first_day = plan.first_day
        self.last_day = plan.last_day
        self.windows = Windows(tz)
        self.counters: dict[bytes, str | None] = {}
        """counter's part of a canonical value -> the counter (``label:category:dom_id``), None if invalid"""
        self.uniform: dict[tuple[int, int], tuple[str, str, date] | None] = {}
        """(bucket size, bucket) -> its windows if every minute in it has the same, else None"""
        self.fast_batches = self.slow_batches = 0

    def add(self, batch: Batch) -> None:
        self.counted.events_read += len(batch.offsets)
        if not (batch.offsets and self._add_fast(batch)):
            self._add_slowly(batch)

    def _decide(self, batch: Batch, dropped: list[Message]) -> Decided:
        """Dedupe ``batch``'s records as the worker does; hold the keys it counted."""
        partition = batch.partition
        records = decode_messages(batch.messages(), dropped)
        decided = self.dedupe.decide(partition, records, -1, self.clocks.get(partition, -1))
        self.dedupe.hold(partition, decided)
        self.clocks[partition] = decided.clock
        return decided

    def _add_slowly(self, batch: Batch) -> None:
        """What the live worker does, event by event."""
        self.slow_batches += 1
        counted, windows = self.counted, self.windows
        dropped: list[Message] = []
        decided = self._decide(batch, dropped)
        counted.duplicates += len(decided.duplicates)
        counted.reused += len(decided.reused)
        records = []
        for record in decided.kept:
            kept = []
            for event in record.events:
                day = windows.of(event.ts_ms)[2]
                if self.first_day <= day <= self.last_day:
                    kept.append(event)
                    counted.events_per_day[day] += 1
            if kept:
                records.append(record._replace(events=tuple(kept)))
        counted.undecodable += len(dropped)
        count_batch(counted.table, records, windows, self.first_day)

    def _add_fast(self, batch: Batch) -> bool:
        """Count ``batch`` if it qualifies (see the class); False, touching nothing, if it does not."""
        partition, offsets, values, _ = batch
        # Offsets increase within the batch, and (below) every counter it
        # touches was last counted from this partition, before the batch's
        # first offset: count_batch would count every event.
        if not all(map(lt, offsets, islice(offsets, 1, None))):
            return False
        joined = b"\n".join(values) + b"\n"
        if joined.count(b"\n") != len(values):  # a value holding a newline
            return False
        # A match ends a value (at its newline), so at most one a value: as
        # many pieces as two a value means every value ends with a time.
        pieces = _TIME_AT_END.split(joined)
        if len(pieces) != 2 * len(values) + 1:
            return False
        parts, digits = pieces[0:-1:2], pieces[1::2]
        counters = self._counters(set(parts))
        if counters is None:
            return False
        times = list(map(int, digits))
        for size in _BUCKETS_MS:
            buckets = list(map(floordiv, times, repeat(size)))
            windows = self._windows(size, set(buckets))
            if windows is not None:
                break
        else:  # pragma: no cover  # a minute is always uniform
            return False
        cells = list(zip(parts, buckets, strict=True))
        sizes = Counter(cells)
        last = dict(zip(cells, offsets, strict=True))  # the last offset of each cell, offsets increasing
        first_day, last_day = self.first_day, self.last_day
        per_day: Counter[date] = Counter()
        pending: dict[str, list[int]] = {}
        sep = SEP  # schema.keys.counter_key, inlined: two keys per counter and bucket
        for cell, n in sizes.items():
            daily, hourly, day = windows[cell[1]]
            if not first_day <= day <= last_day:
                continue
            per_day[day] += n
            counter = counters[cell[0]]
            offset = last[cell]
            for key in (f"{daily}{sep}{counter}", f"{hourly}{sep}{counter}"):
                entry = pending.get(key)
                if entry is None:
                    pending[key] = [n, offset]
                else:
                    entry[0] += n
                    if offset > entry[1]:
                        entry[1] = offset
        table = self.counted.table
        stored = {key: table.get(key) for key in pending}
        if any(tally is not None and (tally.partition != partition or tally.offset >= offsets[0])
               for tally in stored.values()):  # fmt: skip
            return False  # count_batch would skip some events as seen before: leave it to it
        for key, (n, offset) in pending.items():
            tally = stored[key]
            table.set(key, Tally(n if tally is None else tally.counter + n, offset, partition))
        self.counted.events_per_day.update(per_day)
        self.fast_batches += 1
        stamps = batch.timestamps or times
        clock = max(stamp if stamp >= 0 else ts for stamp, ts in zip(stamps, times, strict=True))
        if clock > self.clocks.get(partition, -1):
            self.clocks[partition] = clock
        return True

    def _counters(self, parts: set[bytes]) -> dict[bytes, str] | None:
        """Each canonical counter's part and its counter; None if one is not a valid event's."""
        known = self.counters
        for part in parts - known.keys():
            sample = part + _TIME_FIELD + b"0}"
            try:
                event = decode(sample)
            except UndecodableEvent:
                known[part] = None
            else:
                known[part] = event.counter_key if encode(event) == sample else None
        found = {part: known[part] for part in parts}
        if None in found.values():
            return None
        return cast("dict[bytes, str]", found)

    def _windows(self, size: int, buckets: set[int]) -> dict[int, tuple[str, str, date]] | None:
        """The windows of each bucket of ``size`` ms; None if a bucket straddles a day or hour."""
        found = {}
        for bucket in buckets:
            key = (size, bucket)
            if key not in self.uniform:
                first = bucket * size
                minutes = {self.windows.of(ms) for ms in range(first, first + size, 60_000)}
                self.uniform[key] = minutes.pop() if len(minutes) == 1 else None
            windows = self.uniform[key]
            if windows is None:
                return None
            found[bucket] = windows
        return found


# Python's cycle collector, left on, scans the batches in flight again and
# again (docs/performance.md, bench/replay.py); nothing here makes cycles, so
# it runs once every this many events instead.
COLLECT_EVERY = 2_000_000


def count(batches: Iterable[Batch], plan: Plan, tz: tzinfo) -> Counted:
    """The plan's days counted from scratch; events of other days are left out."""
    recount = Recount(plan, tz)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        collect_at = COLLECT_EVERY
        for batch in batches:
            recount.add(batch)
            if recount.counted.events_read >= collect_at:
                gc.collect()
                collect_at = recount.counted.events_read + COLLECT_EVERY
    finally:
        if was_enabled:
            gc.enable()
    return recount.counted


INSERT_DAILY = "INSERT INTO daily_counts_replay (replay_id, day, label, category, dom_id, counter) VALUES"
INSERT_HOURLY = "INSERT INTO hourly_counts_replay (replay_id, day, hour, label, category, dom_id, counter) VALUES"


def stage(client: Any, replay_id: int, counted: Counted, tz: tzinfo) -> None:
    daily, hourly = [], []
    for key, tally in counted.table.items():
        day, hour, label, category, dom_id = CounterKey.parse(key, tz)
        if hour is None:
            daily.append((replay_id, day, label, category, dom_id, tally.counter))
        else:
            hourly.append((replay_id, day, hour, label, category, dom_id, tally.counter))
    if daily:
        client.execute(INSERT_DAILY, daily)
    if hourly:
        client.execute(INSERT_HOURLY, hourly)


STAGED_PER_DAY = """
SELECT day, sum(counter), count()
FROM daily_counts_replay
WHERE replay_id = %(replay_id)s
GROUP BY day
"""
STAGED_HOURLY_PER_DAY = """
SELECT day, sum(counter)
FROM hourly_counts_replay
WHERE replay_id = %(replay_id)s
GROUP BY day
"""


def verify(client: Any, replay_id: int, counted: Counted) -> None:
    """What ClickHouse holds for this run is what was counted, per day, daily and hourly."""
    daily = {day: int(total) for day, total, _ in client.execute(STAGED_PER_DAY, {"replay_id": replay_id})}
    hourly = {day: int(total) for day, total in client.execute(STAGED_HOURLY_PER_DAY, {"replay_id": replay_id})}
    expected = {day: n for day, n in counted.events_per_day.items() if n}
    if daily != expected or hourly != expected:
        raise RuntimeError(f"staged counts differ from counted: daily {daily}, hourly {hourly}, counted {expected}")


SWAP_DAILY = """
INSERT INTO daily_counts (day, label, category, dom_id, counter, version, written_at)
SELECT day, label, category, dom_id, counter, %(version)s, now()
FROM (
    SELECT day, label, category, dom_id, counter
    FROM daily_counts_replay
    WHERE replay_id = %(replay_id)s AND day = %(day)s
    UNION ALL
    SELECT day, label, category, dom_id, toUInt64(0) AS counter
    FROM daily_stats
    WHERE day = %(day)s AND (label, category, dom_id) NOT IN (
        SELECT label, category, dom_id FROM daily_counts_replay WHERE replay_id = %(replay_id)s AND day = %(day)s
    )
)
"""
SWAP_HOURLY = """
INSERT INTO hourly_counts (day, hour, label, category, dom_id, counter, version, written_at)
SELECT day, hour, label, category, dom_id, counter, %(version)s, now()
FROM (
    SELECT day, hour, label, category, dom_id, counter
    FROM hourly_counts_replay
    WHERE replay_id = %(replay_id)s AND day = %(day)s
    UNION ALL
    SELECT day, hour, label, category, dom_id, toUInt64(0) AS counter
    FROM hourly_stats
    WHERE day = %(day)s AND (hour, label, category, dom_id) NOT IN (
        SELECT hour, label, category, dom_id FROM hourly_counts_replay
        WHERE replay_id = %(replay_id)s AND day = %(day)s
    )
)
"""
# One part per INSERT, however many counters a day has: readers see a day swapped whole.
ONE_PART = {"min_insert_block_size_rows": 1 << 40, "min_insert_block_size_bytes": 1 << 40}


def swap(client: Any, replay_id: int, day: date) -> None:
    params = {"replay_id": replay_id, "day": day, "version": REPLAY_VERSION_BASE + replay_id}
    client.execute(SWAP_DAILY, params, settings=ONE_PART)
    client.execute(SWAP_HOURLY, params, settings=ONE_PART)


def discard(client: Any, replay_id: int) -> None:
    """Drop this run's staged rows (its own partition of the shadow tables)."""
    for table in ("daily_counts_replay", "hourly_counts_replay"):
        client.execute(f"ALTER TABLE {table} DROP PARTITION {int(replay_id)}")


LIVE_PER_DAY = """
SELECT day, label, category, dom_id, counter
FROM daily_stats
WHERE day >= %(first)s AND day <= %(last)s
"""


@dataclass(frozen=True)
class DayReport:
    day: date
    events: int
    counters: int
    before: int
    after: int
    changed: int
    """counters whose count differs (including ones that appear or vanish)"""


def compare(client: Any, plan: Plan, counted: Counted, tz: tzinfo) -> list[DayReport]:
    """Per day: what the replay found against what readers see now."""
    live: dict[date, dict[tuple[str, str, str], int]] = {day: {} for day in plan.days}
    for day, label, category, dom_id, counter in client.execute(
        LIVE_PER_DAY, {"first": plan.first_day, "last": plan.last_day}
    ):
        live[day][(label, category, dom_id)] = int(counter)
    rebuilt: dict[date, dict[tuple[str, str, str], int]] = {day: {} for day in plan.days}
    for key, tally in counted.table.items():
        k = CounterKey.parse(key, tz)
        if k.hour is None:
            rebuilt[k.day][(k.label, k.category, k.dom_id)] = tally.counter
    reports = []
    for day in plan.days:
        before, after = live[day], rebuilt[day]
        changed = sum(1 for c in before.keys() | after.keys() if before.get(c, 0) != after.get(c, 0))
        reports.append(
            DayReport(day, counted.events_per_day[day], len(after), sum(before.values()), sum(after.values()), changed)
        )
    return reports


def new_replay_id() -> int:
    """Microseconds since the epoch: later runs get higher ids, hence higher versions."""
    return int(datetime.now(UTC).timestamp() * 1_000_000)


@dataclass(frozen=True)
class Outcome:
    replay_id: int
    plan: Plan
    counted: Counted
    reports: list[DayReport]
    swapped: bool


def replay(
    consumer: KafkaConsumer,
    client: Any,
    bootstrap: str,
    topic: str,
    first_day: date,
    last_day: date,
    *,
    tz: tzinfo,
    first_open_day: date,
    dry_run: bool,
    window_ms: int,
    on_plan: Callable[[Plan], None] = lambda plan: None,
    on_read: Callable[[int], None] = lambda n: None,
) -> Outcome:
    """Plan, read, dedupe, count; then, unless ``dry_run``, stage, verify and swap day by day.

    ``window_ms`` is the live workers' dedupe window (TALLY_DEDUPE_WINDOW_S).
    """
    plan = make_plan(consumer, topic, first_day, last_day, tz=tz, first_open_day=first_open_day, window_ms=window_ms)
    on_plan(plan)
    counted = count(read(bootstrap, topic, plan, on_read), plan, tz)
    reports = compare(client, plan, counted, tz)
    replay_id = new_replay_id()
    if dry_run:
        return Outcome(replay_id, plan, counted, reports, swapped=False)
    stage(client, replay_id, counted, tz)
    try:
        verify(client, replay_id, counted)
        for day in plan.days:
            swap(client, replay_id, day)
    finally:
        discard(client, replay_id)
    return Outcome(replay_id, plan, counted, reports, swapped=True)
