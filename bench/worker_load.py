"""A realistic backlog of label events for the worker benchmark, and a fast way onto a topic.

Keys: about 2,000 distinct (label, category, dom_id) counters whose
popularity follows a Zipf-like law (a few buttons get most clicks), stamped
today in time order over the last hours, as a backlog left by a worker
that was away would be. Messages are the real wire format and key
(``schema.event``), so they land in the partitions ingest would pick.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schema.event import LabelEvent, encode, encode_key

Key = tuple[str, str, str]

LABELS = (
    "page_view",
    "signup_clicked",
    "add_to_cart",
    "checkout/step1",
    "checkout/step2",
    "search",
    "video_play",
    "newsletter_opened",
    "share",
    "login",
)
ZIPF_S = 1.1


def counter_keys(n: int, seed: int = 1) -> list[Key]:
    """``n`` distinct counters, most popular first."""
    rng = random.Random(seed)
    keys: dict[Key, None] = {}
    while len(keys) < n:
        label = f"{rng.choice(LABELS)}_{rng.randrange(n // 10 or 1)}"
        category = rng.choice(("", "forms", "nav", "footer", "promo", "email"))
        dom_id = rng.choice(("", f"btn{rng.randrange(500)}", f"link-{rng.randrange(500)}"))
        keys[(label, category, dom_id)] = None
    return list(keys)


@dataclass(frozen=True)
class Backlog:
    """The messages to pre-load, and how many events each counter got (the truth)."""

    messages: list[tuple[bytes, bytes]]
    sent: Counter[Key]

    @property
    def total(self) -> int:
        return len(self.messages)


def zipf_picker(keys: Sequence[Key], seed: int) -> Iterator[Key]:
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1 / (rank**ZIPF_S) for rank in range(1, len(keys) + 1)))
    while True:
        yield from rng.choices(keys, cum_weights=cum, k=10_000)


def backlog(n: int, distinct: int = 2000, seed: int = 1, span_s: float = 6 * 3600) -> Backlog:
    """``n`` events over the last ``span_s`` seconds of today (UTC), in time order."""
    now_ms = time.time_ns() // 1_000_000
    midnight_ms = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    start_ms = max(midnight_ms, now_ms - int(span_s * 1000))
    step = (now_ms - start_ms) / n
    picks = zipf_picker(counter_keys(distinct, seed), seed)
    encoded_keys: dict[Key, bytes] = {}
    messages: list[tuple[bytes, bytes]] = []
    sent: Counter[Key] = Counter()
    for i in range(n):
        key = next(picks)
        event = LabelEvent(*key, start_ms + int(i * step))
        kbytes = encoded_keys.get(key)
        if kbytes is None:
            kbytes = encoded_keys[key] = encode_key(event)
        messages.append((kbytes, encode(event)))
        sent[key] += 1
    return Backlog(messages, sent)


def preload(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes]],
    timestamps: Sequence[int] | None = None,
    partitions: Sequence[int] | None = None,
) -> float:
    """Put ``messages`` on ``topic`` as fast as Python can; return the seconds it took.

    ``timestamps`` (epoch ms, one per message) become the records' timestamps, as
    ingest sets them; without them Kafka stamps the send time. ``partitions``
    (one per message) put each where ingest put it (v2 records, whose Kafka key
    is an idempotency key or none); without them, the partition of the key.

    aiokafka's batch builder (C-accelerated) with full batches sent straight to
    each partition's leader, acks from the leader only: loading speed is not
    what the benchmark measures, only that every message is there, in the
    partition ingest would have picked (kafka-python's murmur2 of the key).
    """
    return asyncio.run(_preload(bootstrap, topic, messages, timestamps, partitions))


async def _preload(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes]],
    timestamps: Sequence[int] | None,
    chosen: Sequence[int] | None,
) -> float:
    from aiokafka import AIOKafkaProducer
    from kafka.partitioner.default import murmur2  # what ingest's producer (kafka-python) partitions by

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks=1, max_batch_size=1 << 20, client_id="tally-bench-preload"
    )
    await producer.start()
    started = time.perf_counter()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        by_key: dict[bytes, int] = {}
        batches: dict[int, Any] = {}
        sends: list[asyncio.Future[Any]] = []
        for i, (key, value) in enumerate(messages):
            timestamp = None if timestamps is None else timestamps[i]
            if chosen is not None:
                partition = chosen[i]
            else:
                assert key is not None
                partition = by_key.get(key)
                if partition is None:
                    partition = by_key[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=timestamp) is None:
                sends.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=timestamp)
        for partition, batch in batches.items():
            sends.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages on ``topic`` (sum of end offsets minus beginnings)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), client_id="tally-bench-size")
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(parts)
        begins = consumer.beginning_offsets(parts)
        return sum(ends[tp] - begins[tp] for tp in parts)
    finally:
        consumer.close()
