"""Each keyed request counts once: repeats of an idempotency key in a partition are dropped before counting.

A client that got no answer sends its request again with the same
``Idempotency-Key``; ingest puts each copy, like the first, in the partitions
its counters hash to (schema.event, v2 records). So, per events partition, a
repeat is a record with a key the partition already counted at a lower
offset. This stage sits between decode and count (aggregator.batch), and
holds, per partition, the keys it counted within ``window_ms``: for each,
the offset of the record that counted it, its fingerprint (the request's
counters in this partition, schema.event.fingerprint) and its time.

The rule, for a keyed record R at offset o, in a partition whose clock
(below) at R is C(R), and the entry E its key holds, if any:

- no entry, or C(R) - E.time > window: R counts, and its key now holds
  (o, fingerprint(R), C(R)) -- a first send, or a repeat past the window,
  which counts again (``past_window``, in the metrics: docs/limits.md);
- E.offset < o, same fingerprint: a repeat, dropped (``duplicate``);
- E.offset < o, another fingerprint: the key reused for another request
  (the client's bug), dropped (``key_reused``);
- E.offset >= o: R is read again after a crash, and its partition's state
  is already past it: skipped as counted (below).

Unkeyed records count as they always did. The clock of a partition is the
highest record time (the Kafka record's timestamp, else its latest event's)
read in it so far: time only goes forward, and it is a function of the log,
so a replay of the log takes the same decisions as the worker did. An entry
whose time is more than a window behind the clock can never match again:
it is deleted, whenever (``expire``), without changing any decision.

Why it is exact after a ``kill -9``. The state is kept in the worker's table
beside the counts (aggregator.table: ``seen:<partition>:<key>``), in the
events partition's changelog partition, in this order per batch: the
counters (aggregator.count), then the keys the batch added, then the
partition's ``through`` together with its clock. The commit policy
(aggregator.commit) commits nothing Kafka has not confirmed, and a restore
gives the state after some prefix of those writes. So:

- a record at or below the restored ``through`` was decided and applied
  before: it is passed over whole (``already``), not decided again -- its
  decision rested on the clock of its own time;
- a record above it is decided again from the restored clock, which is the
  clock at ``through`` exactly (written with it), so with the same clock
  as the first time; and if its key's entry is there at its own offset or a
  later one, the counters of its batch reached the changelog before that
  entry, so it is skipped as counted.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, cast

from aggregator.decode import PositionedRecord
from schema.event import LabelEvent, fingerprint


class Seen(NamedTuple):
    """What a partition holds for a key: the record that counted it, its fingerprint and its clock time."""

    offset: int
    fingerprint: int
    time_ms: int


def as_seen(value: object) -> Seen | None:
    """A Seen from what a store holds (a JSON list after changelog recovery)."""
    if value is None:
        return None
    if isinstance(value, Seen):
        return value
    offset, digest, time_ms = cast("list[int]", value)
    return Seen(int(offset), int(digest), int(time_ms))


class SeenStore(Protocol):
    """Where a partition's keys live: the worker's table (aggregator.table), a dict in replay and tests."""

    def get_seen(self, partition: int, key: str) -> Seen | None: ...

    def set_seen(self, partition: int, key: str, seen: Seen) -> None: ...

    def delete_seen(self, partition: int, key: str) -> None: ...

    def seen_items(self, partition: int) -> Iterable[tuple[str, Seen]]:
        """Every key ``partition`` holds, with its entry."""


class DictSeenStore:
    """A SeenStore in a dict: for replay and tests."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, str], Seen] = {}

    def get_seen(self, partition: int, key: str) -> Seen | None:
        return self.data.get((partition, key))

    def set_seen(self, partition: int, key: str, seen: Seen) -> None:
        self.data[(partition, key)] = seen

    def delete_seen(self, partition: int, key: str) -> None:
        self.data.pop((partition, key), None)

    def seen_items(self, partition: int) -> list[tuple[str, Seen]]:
        return [(key, seen) for (p, key), seen in self.data.items() if p == partition]


@dataclass
class Decided:
    """What the stage made of one partition's records."""

    kept: list[PositionedRecord]
    """To count, in offset order."""
    duplicates: list[PositionedRecord] = field(default_factory=list)
    reused: list[PositionedRecord] = field(default_factory=list)
    already: list[PositionedRecord] = field(default_factory=list)
    """Read again after a crash or rebalance, already applied: not counted again."""
    past_window: int = 0
    """Keyed records whose key the partition counted more than a window before: counted again."""
    added: dict[str, Seen] = field(default_factory=dict)
    """Keys to hold after the batch (written by ``hold``, after the counters)."""
    clock: int = -1
    """The partition's clock after the batch."""


class Dedupe:
    """The dedupe stage of a worker (or a replay): per partition, the keys counted within the window."""

    def __init__(self, store: SeenStore, window_ms: int) -> None:
        self.store = store
        self.window_ms = window_ms
        self._held: dict[int, deque[tuple[int, str]]] = {}
        """Per partition: (time, key) of every key held, oldest first -- the order expiry takes them in."""

    def forget(self) -> None:
        """Drop what is kept in memory about partitions (after a rebalance): read again from the store."""
        self._held.clear()

    def decide(self, partition: int, records: Iterable[PositionedRecord], through: int, clock: int) -> Decided:
        """Decide each of ``partition``'s records after ``through``, from the partition's ``clock`` at ``through``.

        Touches no store entry: ``hold`` writes the keys once the batch's counters are set.
        """
        decided = Decided([], clock=clock)
        kept, added, window = decided.kept, decided.added, self.window_ms
        get = self.store.get_seen
        for record in records:
            offset = record.offset
            if offset <= through:
                decided.already.append(record)
                continue
            if record.time_ms > clock:
                clock = record.time_ms
            key = record.key
            if key is None:
                kept.append(record)
                continue
            seen = added.get(key) or get(partition, key)
            if seen is None or clock - seen.time_ms > window:
                if seen is not None:
                    decided.past_window += 1
                added[key] = Seen(offset, digest(record.events), clock)
                kept.append(record)
            elif seen.offset >= offset:
                decided.already.append(record)
            elif seen.fingerprint == digest(record.events):
                decided.duplicates.append(record)
            else:
                decided.reused.append(record)
        decided.clock = clock
        return decided

    def hold(self, partition: int, decided: Decided) -> None:
        """Write the keys the batch added (after its counters), and expire the keys past the window."""
        held = self._held_in(partition)
        for key, seen in decided.added.items():
            self.store.set_seen(partition, key, seen)
            held.append((seen.time_ms, key))
        self.expire(partition, decided.clock)

    def expire(self, partition: int, clock: int) -> int:
        """Delete the partition's keys more than a window behind ``clock``; return how many."""
        held = self._held_in(partition)
        oldest = clock - self.window_ms
        deleted = 0
        while held and held[0][0] < oldest:
            time_ms, key = held.popleft()
            seen = self.store.get_seen(partition, key)
            if seen is not None and seen.time_ms == time_ms:  # not held again since
                self.store.delete_seen(partition, key)
                deleted += 1
        return deleted

    def _held_in(self, partition: int) -> deque[tuple[int, str]]:
        held = self._held.get(partition)
        if held is None:
            entries = sorted((seen.time_ms, key) for key, seen in self.store.seen_items(partition))
            held = self._held[partition] = deque(entries)
        return held

    def keys_held(self, partitions: Iterable[int]) -> int:
        """How many keys ``partitions`` hold (those whose state is in memory)."""
        return sum(len(self._held[p]) for p in partitions if p in self._held)

    def oldest_age_s(self, partitions: Iterable[int], now_s: float | None = None) -> float:
        """How old, in seconds of wall-clock time, the oldest key ``partitions`` hold is (0 if none)."""
        oldest = [self._held[p][0][0] for p in partitions if self._held.get(p)]
        if not oldest:
            return 0.0
        now = time.time() if now_s is None else now_s
        return max(0.0, now - min(oldest) / 1000)


def events_in(records: Sequence[PositionedRecord]) -> int:
    return sum(len(record.events) for record in records)


def digest(events: Iterable[LabelEvent]) -> int:
    """schema.event.fingerprint in 63 bits: a signed 64-bit integer in every JSON library the changelog meets."""
    return fingerprint(events) >> 1
