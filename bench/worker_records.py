"""The worker benchmark's backlog again, as v2 records (one request's events per partition), keyed or not.

The same events as the v1 backlog (``bench.worker_load.backlog``), in the
same order, grouped per partition into records of 10 to 50 events, as ingest
publishes a request's events whose counters fall in one partition
(``schema.event.encode_record``). Keyed: each record has an idempotency key
of its own (a UUID's 32 hex digits), so the dedupe stage looks every one up
and holds every key. Also: how much memory a key held costs a worker.
"""

from __future__ import annotations

import random
import tracemalloc
import uuid
from collections import deque
from dataclasses import dataclass, replace

from kafka.partitioner.default import murmur2

from bench.worker_load import Backlog, preload, topic_size
from bench.worker_runs import PARTITIONS, Bench
from schema.event import LabelEvent, decode, encode_record
from schema.keys import seen_key


@dataclass(frozen=True)
class RecordBacklog(Backlog):
    """v2 records; ``total`` is the events they hold (what the worker must count), not the records."""

    events_total: int = 0
    timestamps: tuple[int, ...] = ()
    partitions: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return self.events_total

    @property
    def records(self) -> int:
        return len(self.messages)


def as_records(backlog: Backlog, keyed: bool, seed: int = 5, sizes: tuple[int, int] = (10, 50)) -> RecordBacklog:
    rng = random.Random(seed)
    pending: dict[int, list[LabelEvent]] = {}
    target: dict[int, int] = {}
    messages: list[tuple[bytes | None, bytes]] = []
    stamps: list[int] = []
    chosen: list[int] = []

    def emit(partition: int, events: list[LabelEvent]) -> None:
        key = uuid.UUID(int=rng.getrandbits(128)).hex if keyed else None
        messages.append((None if key is None else key.encode(), encode_record(events, key)))
        stamps.append(max(e.ts_ms for e in events))
        chosen.append(partition)

    for kbytes, value in backlog.messages:
        partition = (murmur2(kbytes) & 0x7FFFFFFF) % PARTITIONS
        events = pending.setdefault(partition, [])
        events.append(decode(value))
        if len(events) >= target.setdefault(partition, rng.randint(*sizes)):
            emit(partition, events)
            pending[partition] = []
            target[partition] = rng.randint(*sizes)
    for partition, events in pending.items():
        if events:
            emit(partition, events)
    return RecordBacklog(messages, backlog.sent, backlog.total, tuple(stamps), tuple(chosen))


def records_bench(bench: Bench, backlog: RecordBacklog, kind: str) -> Bench:
    """``bench`` on a topic of its own holding ``backlog``."""
    topic = bench.new_topic(kind)
    preload(bench.bootstrap, topic, backlog.messages, backlog.timestamps, backlog.partitions)
    on_topic = topic_size(bench.bootstrap, topic)
    if on_topic != backlog.records:
        raise RuntimeError(f"pre-load: {on_topic} of {backlog.records} records on {topic}")
    return replace(bench, topic=topic, backlog=backlog)


def bytes_per_key(n: int = 200_000) -> float:
    """What one key held costs a worker with the memory store: the table's entry and the expiry queue's.

    The table's entry as the memory store keeps it (``seen:<partition>:<key>`` -> [offset, fingerprint,
    time]), and ``aggregator.dedupe``'s (time, key) in its queue; measured with tracemalloc.
    """
    rng = random.Random(1)
    keys = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table: dict[str, list[int]] = {}
    held: deque[tuple[int, str]] = deque()
    for i, key in enumerate(keys):
        table[seen_key(i % PARTITIONS, key)] = [10_000_000 + i, rng.getrandbits(63), 1_795_600_000_000 + i]
        held.append((1_795_600_000_000 + i, key))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The key strings themselves come with the records; held, they are kept (one copy in the queue).
    key_bytes = sum(len(k) + 49 for k in keys)
    return (after - before + key_bytes) / n
