"""Counting each event exactly once, per window and (label, category, dom_id).

Every event counts towards two tumbling windows on event time, in the
configured zone: its day, and its hour (for the shape of a day on a
dashboard). The window is part of the table key (schema.keys) rather than
hidden in Faust's windowed tables, whose close callback receives no data and
fires per partition.

Why it is exact: every event of one counter comes from one partition, in
offset order (ingest puts a record in the partition its counters hash to,
schema.event). The table value keeps, beside the count, the offset of the
last record counted into it, and both reach the changelog in one record.
After a crash, Faust restores the table from the changelog and resumes from
the last committed offset, which may be behind: records at or below a
counter's stored offset are then already in its count and are skipped -- as
are records delivered twice in one batch, which a consumer seeking back
during a rebalance can do.

The rule holds per record, not per event: a v2 record carries several events
at one offset, several of them possibly of one counter (three clicks on one
button in one request). A record's events are first summed per table key,
and each key's sum is then added once, if the record's offset is above the
key's stored offset. A batch's offsets
are acknowledged to Faust only after Kafka confirmed its changelog records
(``aggregator.commit``), so the table restored from the changelog is never
behind the committed offset.

Windows stay open for ``window_days``; an event for an older day is refused
(counted as late, never silently): its counter may already have expired from
the table, and counting it from zero would overwrite the real count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import NamedTuple, Protocol, cast

from aggregator.decode import Positioned, PositionedRecord
from schema.keys import SEP, CounterKey, day_window, hour_window


class Windows:
    """The (daily, hourly) window prefixes of a timestamp, cached per minute.

    Every zone's hours start on a whole minute, so one lookup per minute of
    event time replaces two datetime conversions per event.
    """

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._cache: dict[int, tuple[str, str, date]] = {}

    def of(self, ts_ms: int) -> tuple[str, str, date]:
        minute = ts_ms // 60_000
        found = self._cache.get(minute)
        if found is None:
            local = datetime.fromtimestamp(minute * 60, self.tz)
            hour_start = local.replace(minute=0, second=0, microsecond=0)
            found = (day_window(local.date()), hour_window(hour_start), local.date())
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[minute] = found
        return found


class Tally(NamedTuple):
    """A counter's value: the count, and the offset (and partition) of the last event in it."""

    counter: int
    offset: int
    partition: int


class CountTable(Protocol):
    """Where counts live: a Faust table in the worker, a dict in unit tests."""

    def get(self, key: str) -> Tally | None: ...

    def set(self, key: str, tally: Tally) -> None:
        """Store ``tally`` and make it durable (the changelog, for Faust)."""

    def items(self) -> Iterable[tuple[str, Tally]]: ...


@dataclass
class BatchResult:
    changed: dict[str, Tally]
    counted: int
    skipped: int
    """Events already in a count: their record seen again after a crash or rebalance."""
    late: list[Positioned]
    """Events for a day whose window has closed: refused, not counted."""


class _Pending:
    __slots__ = ("added", "base", "last_offset", "partition")

    def __init__(self, stored: Tally | None, partition: int) -> None:
        self.base = 0 if stored is None else stored.counter
        self.added = 0
        self.last_offset = -1 if stored is None else stored.offset
        self.partition = partition


def count_batch(
    table: CountTable, records: Iterable[PositionedRecord], windows: Windows, first_open_day: date
) -> BatchResult:
    """Add a batch of records' events to ``table``: one update per changed counter.

    ``counted`` and ``skipped`` count events; an event is skipped when one of
    its two counters (day, hour) already held its record.
    """
    pending: dict[str, _Pending] = {}
    counted = skipped = 0
    late: list[Positioned] = []
    sep = SEP  # schema.keys.counter_key, inlined: two keys per event
    for partition, offset, _key, events, _time in records:
        if len(events) == 1:  # a v1 record, or a request of one event: no sum to make
            event = events[0]
            daily, hourly, day = windows.of(event.ts_ms)
            if day < first_open_day:
                late.append(Positioned(partition, offset, event))
                continue
            counter = event.counter_key
            fresh = True
            for key in (f"{daily}{sep}{counter}", f"{hourly}{sep}{counter}"):
                entry = pending.get(key)
                if entry is None:
                    entry = pending[key] = _Pending(table.get(key), partition)
                if offset <= entry.last_offset:  # already counted: before a restart, or delivered twice
                    fresh = False
                    continue
                entry.added += 1
                entry.last_offset = offset
            if fresh:
                counted += 1
            else:
                skipped += 1
            continue
        sums: dict[str, int] = {}
        keyed: list[tuple[str, str]] = []
        for event in events:
            daily, hourly, day = windows.of(event.ts_ms)
            if day < first_open_day:
                late.append(Positioned(partition, offset, event))
                continue
            counter = event.counter_key
            pair = (f"{daily}{sep}{counter}", f"{hourly}{sep}{counter}")
            keyed.append(pair)
            for key in pair:
                sums[key] = sums.get(key, 0) + 1
        stale: set[str] = set()
        for key, n in sums.items():
            entry = pending.get(key)
            if entry is None:
                entry = pending[key] = _Pending(table.get(key), partition)
            if offset <= entry.last_offset:  # the record is in this count already
                stale.add(key)
                continue
            entry.added += n
            entry.last_offset = offset
        if stale:
            fresh_events = sum(1 for day_key, hour_key in keyed if day_key not in stale and hour_key not in stale)
            counted += fresh_events
            skipped += len(keyed) - fresh_events
        else:
            counted += len(keyed)
    changed = {}
    for key, entry in pending.items():
        if entry.added:
            tally = Tally(entry.base + entry.added, entry.last_offset, entry.partition)
            table.set(key, tally)
            changed[key] = tally
    return BatchResult(changed, counted, skipped, late)


def first_open_day(now: datetime, window_days: int) -> date:
    """The oldest day whose window is still open at ``now`` (a zone-aware time)."""
    return now.date() - timedelta(days=window_days - 1)


class DictCountTable:
    """A CountTable in a dict: for tests, and the reference the Faust one must match."""

    def __init__(self) -> None:
        self.data: dict[str, Tally] = {}

    def get(self, key: str) -> Tally | None:
        return self.data.get(key)

    def set(self, key: str, tally: Tally) -> None:
        self.data[key] = tally

    def items(self) -> Iterable[tuple[str, Tally]]:
        return list(self.data.items())


def as_tally(value: object) -> Tally | None:
    """A Tally from what a store holds (a JSON list after changelog recovery)."""
    if value is None:
        return None
    if isinstance(value, Tally):
        return value
    counter, offset, partition = cast("list[int]", value)  # a JSON list after recovery
    return Tally(int(counter), int(offset), int(partition))


def since(items: Iterable[tuple[str, Tally]], first_day: date, tz: tzinfo) -> Mapping[str, Tally]:
    """The counters of days from ``first_day`` on: what to rewrite after a recovery."""
    return {key: tally for key, tally in items if CounterKey.parse(key, tz).day >= first_day}


def expired(items: Iterable[tuple[str, Tally]], first_open: date, tz: tzinfo) -> list[tuple[str, Tally]]:
    """The counters of days whose window has closed: to delete from the table."""
    return [(key, tally) for key, tally in items if CounterKey.parse(key, tz).day < first_open]
