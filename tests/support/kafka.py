"""Reading a test's topic back from Kafka: what ingest or a publisher put there."""

from __future__ import annotations

import time
from collections import Counter

from kafka import KafkaConsumer, TopicPartition

from schema.event import decode
from stack.stack import Stack
from tests.support.servers import PARTITIONS


def read_all(bootstrap: str, topic: str, partitions: int = 6) -> list[tuple[int, bytes, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    messages = [(m.partition, m.key, m.value) for m in consumer]
    consumer.close()
    return messages


def messages(stack: Stack, topic: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of every message on ``topic``: read up to the end offsets, no idle wait.

    An acked message (acks=all) is below the high watermark, so it is read.
    """
    consumer = KafkaConsumer(bootstrap_servers=stack.settings.kafka.bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    end = consumer.end_offsets(partitions)
    found: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    while any(consumer.position(p) < end[p] for p in partitions):
        assert time.monotonic() < deadline, "could not read the topic to its end"
        for records in consumer.poll(timeout_ms=500).values():
            found += [(record.key, record.value) for record in records]
    consumer.close()
    return found


def on_topic(stack: Stack, topic: str) -> Counter[tuple[bytes, str, str, str]]:
    """(key, label, category, dom_id) of every message on ``topic``, counted."""
    found: Counter[tuple[bytes, str, str, str]] = Counter()
    for key, value in messages(stack, topic):
        event = decode(value)
        found[(key, event.label, event.category, event.dom_id)] += 1
    return found
