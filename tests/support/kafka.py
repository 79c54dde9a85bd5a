"""Reading a test's topic back from Kafka: what ingest or a publisher put there."""

from __future__ import annotations

import time
from collections import Counter

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner import murmur2

from schema.event import EventRecord, decode_record, encode_key
from stack.stack import Stack
from tests.support.servers import PARTITIONS


def read_all(bootstrap: str, topic: str, partitions: int = 6) -> list[tuple[int, bytes, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    messages = [(m.partition, m.key, m.value) for m in consumer]
    consumer.close()
    return messages


def messages(stack: Stack, topic: str) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of every message on ``topic``."""
    return [(key, value) for _, key, value in placed_messages(stack, topic)]


def placed_messages(stack: Stack, topic: str) -> list[tuple[int, bytes | None, bytes]]:
    """(partition, key, value) of every message on ``topic``: read up to the end offsets, no idle wait.

    An acked message (acks=all) is below the high watermark, so it is read.
    """
    consumer = KafkaConsumer(bootstrap_servers=stack.settings.kafka.bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    end = consumer.end_offsets(partitions)
    found: list[tuple[int, bytes | None, bytes]] = []
    deadline = time.monotonic() + 30
    while any(consumer.position(p) < end[p] for p in partitions):
        assert time.monotonic() < deadline, "could not read the topic to its end"
        for records in consumer.poll(timeout_ms=500).values():
            found += [(record.partition, record.key, record.value) for record in records]
    consumer.close()
    return found


def records(stack: Stack, topic: str) -> list[tuple[int, bytes | None, EventRecord]]:
    """(partition, Kafka key, decoded record) of every record on ``topic``."""
    return [(partition, key, decode_record(value)) for partition, key, value in placed_messages(stack, topic)]


def on_topic(stack: Stack, topic: str) -> Counter[tuple[str, str, str]]:
    """(label, category, dom_id) of every event on ``topic``, counted.

    Also checks what every reader relies on: a record's Kafka key is its
    idempotency key (or none), and every event of a counter is in the one
    partition kafka-python's default partitioner gives the counter as a key.
    """
    found: Counter[tuple[str, str, str]] = Counter()
    partition_of: dict[tuple[str, str, str], int] = {}
    for partition, key, record in records(stack, topic):
        assert key == (record.key.encode() if record.key else None), (key, record)
        for event in record.events:
            counter = (event.label, event.category, event.dom_id)
            found[counter] += 1
            assert partition_of.setdefault(counter, partition) == partition, f"{counter} in two partitions"
            expected = (murmur2(encode_key(event)) & 0x7FFFFFFF) % PARTITIONS  # DefaultPartitioner's choice
            assert partition == expected, f"{counter} in partition {partition}, its key's is {expected}"
    return found
