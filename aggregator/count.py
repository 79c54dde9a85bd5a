"""Counting each event exactly once, per (day, label, category, dom_id).

The day is part of the table key: a tumbling daily window on event time,
with the window explicit in the key rather than hidden in Faust's windowed
tables (whose close callback gets no data and fires per partition).

Why it is exact: every event of one counter comes from one partition, in
offset order (the Kafka key is ``label:category:dom_id``). The table value
keeps, beside the count, the offset of the last event counted into it, and
both reach the changelog in one record. After a crash, Faust restores the
table from the changelog and resumes from the last committed offset, which
may be behind: events at or below a counter's stored offset are then already
in its count and are skipped. Faust flushes the changelog before it commits
source offsets, so the table is never behind the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, tzinfo
from typing import NamedTuple, Protocol, cast

from aggregator.decode import Positioned
from schema.event import day_of


class CounterKey(NamedTuple):
    day: date
    label: str
    category: str
    dom_id: str

    def encode(self) -> str:
        return f"{self.day.isoformat()}:{self.label}:{self.category}:{self.dom_id}"

    @classmethod
    def parse(cls, key: str) -> CounterKey:
        # A day has no ':', and no field may contain one (schema.event's rules).
        day, label, category, dom_id = key.split(":")
        return cls(date.fromisoformat(day), label, category, dom_id)


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
    """Events already in a count: seen again after a crash or rebalance."""


class _Pending:
    __slots__ = ("added", "base", "floor", "last_offset", "partition")

    def __init__(self, stored: Tally | None, partition: int) -> None:
        self.base = 0 if stored is None else stored.counter
        self.floor = -1 if stored is None else stored.offset
        self.added = 0
        self.last_offset = self.floor
        self.partition = partition


def count_batch(table: CountTable, events: Iterable[Positioned], tz: tzinfo) -> BatchResult:
    """Add a batch of events to ``table``, one update per changed counter."""
    pending: dict[str, _Pending] = {}
    counted = skipped = 0
    for partition, offset, event in events:
        key = CounterKey(day_of(event.ts_ms, tz), event.label, event.category, event.dom_id).encode()
        entry = pending.get(key)
        if entry is None:
            entry = pending[key] = _Pending(table.get(key), partition)
        if offset <= entry.floor:
            skipped += 1
            continue
        entry.added += 1
        entry.last_offset = offset
        counted += 1
    changed = {}
    for key, entry in pending.items():
        if entry.added:
            tally = Tally(entry.base + entry.added, entry.last_offset, entry.partition)
            table.set(key, tally)
            changed[key] = tally
    return BatchResult(changed, counted, skipped)


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


def changed_since(items: Iterable[tuple[str, Tally]], first_day: date) -> Mapping[str, Tally]:
    """The counters of days from ``first_day`` on: what to rewrite after a recovery."""
    return {key: tally for key, tally in items if CounterKey.parse(key).day >= first_day}
