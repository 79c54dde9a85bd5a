"""The partition of a counter's events: kafka-python's DefaultPartitioner's, by either way of sending."""

from typing import Any

import pytest
from kafka.cluster import ClusterMetadata
from kafka.partitioner import DefaultPartitioner

from ingest import partition
from ingest.partition import RememberingPartitioner
from schema.event import LabelEvent, encode, encode_key, value_of


def cluster_with(topic: str, partitions: int) -> Any:
    class Cluster(ClusterMetadata):
        def partitions_for_topic(self, name: str) -> set[int] | None:
            return set(range(partitions)) if name == topic else None

        def available_partitions_for_topic(self, name: str) -> set[int]:
            return set(range(partitions))

        def topics(self, exclude_internal_topics: bool = True) -> set[str]:
            return {topic}

    return Cluster()


def counters(n: int) -> list[LabelEvent]:
    """Counters of many shapes: short and long labels, with and without category and dom id."""
    return [
        LabelEvent(f"label{i}" + "x" * (i % 41), f"cat{i % 3}" if i % 4 else "", f"btn{i % 7}" if i % 5 else "", 1)
        if i % 11
        else LabelEvent(f"page/{i}.viewed-{i % 13}", "", "", 1)
        for i in range(n)
    ]


@pytest.mark.parametrize("partitions", [1, 2, 3, 6, 7, 12, 64])
def test_the_remembering_partitioner_chooses_what_kafka_pythons_default_would(partitions: int) -> None:
    cluster = cluster_with("t", partitions)
    ours, default = RememberingPartitioner(), DefaultPartitioner()
    keys = [encode_key(event) for event in counters(3000)]
    for key in keys + keys:  # the second round comes from memory
        assert ours.partition("t", key, key, None, b"v", cluster) == default.partition(
            "t", key, key, None, b"v", cluster
        )


def test_forgetting_the_hashes_changes_no_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition, "MAX_REMEMBERED_KEYS", 10)
    cluster, ours, default = cluster_with("t", 6), RememberingPartitioner(), DefaultPartitioner()
    for key in [encode_key(event) for event in counters(100)] * 2:
        assert ours.choose(key, range(6)) == default.partition("t", key, key, None, b"v", cluster)


@pytest.mark.parametrize("partitions", [1, 6, 7, 12])
def test_the_batch_path_chooses_the_partition_kafka_pythons_default_would(partitions: int) -> None:
    from ingest.publish import KafkaPublisher, PublishSettings

    publisher = KafkaPublisher("127.0.0.1:1", "t", PublishSettings())
    try:
        cluster, default = cluster_with("t", partitions), DefaultPartitioner()
        events = counters(3000)
        for event in events + events:  # the second round comes from memory
            key, tp, value_head = publisher._batches._route(event, set(range(partitions)))
            assert key == encode_key(event)
            assert tp == ("t", default.partition("t", key, key, None, b"v", cluster))
            assert value_of(value_head, event.ts_ms) == encode(event)
    finally:
        publisher._producer.close(timeout=0)


def test_send_and_the_batch_path_share_one_partitioner() -> None:
    from ingest.publish import KafkaPublisher, PublishSettings

    publisher = KafkaPublisher("127.0.0.1:1", "t", PublishSettings())
    try:
        assert publisher._producer.config["partitioner"] is publisher._batches._partitioner
    finally:
        publisher._producer.close(timeout=0)
