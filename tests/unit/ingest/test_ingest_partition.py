"""The partition of a counter's events: kafka-python's DefaultPartitioner's, by either way of sending."""

from typing import Any

import pytest
from kafka.cluster import ClusterMetadata
from kafka.partitioner import DefaultPartitioner

from ingest import partition
from ingest.partition import RememberingPartitioner
from schema.event import LabelEvent, encode_key, encode_record, record_of, row_of


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
def test_grouping_puts_each_event_in_the_partition_kafka_pythons_default_gives_its_counter(partitions: int) -> None:
    cluster, default = cluster_with("t", partitions), DefaultPartitioner()
    ours = RememberingPartitioner()
    events = [e._replace(ts_ms=i) for i, e in enumerate(counters(3000) * 2)]  # the second round comes from memory
    grouped = ours.group(events, set(range(partitions)))
    for chosen, group in grouped.items():
        for event in group:
            key = encode_key(event)
            assert chosen == default.partition("t", key, key, None, b"v", cluster)
    assert sorted(e for g in grouped.values() for e in g) == sorted(events)
    for group in grouped.values():  # each group in the request's order
        assert [e.ts_ms for e in group] == sorted(e.ts_ms for e in group)


def test_grouping_follows_a_change_of_the_partition_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition, "MAX_REMEMBERED_COUNTERS", 10)
    ours, default = RememberingPartitioner(), DefaultPartitioner()
    for partitions in (6, 12, 6):
        cluster = cluster_with("t", partitions)
        for p, group in ours.group(counters(100), set(range(partitions))).items():
            assert {default.partition("t", encode_key(e), encode_key(e), None, b"v", cluster) for e in group} == {p}


@pytest.mark.parametrize("partitions", [1, 6, 7, 12])
def test_the_batch_path_chooses_the_partition_kafka_pythons_default_would(partitions: int) -> None:
    from ingest.publish import KafkaPublisher, PublishSettings

    publisher = KafkaPublisher("127.0.0.1:1", "t", PublishSettings())
    try:
        cluster, default = cluster_with("t", partitions), DefaultPartitioner()
        events = counters(3000)
        for event in events + events:  # the second round comes from memory
            tp, head = publisher._batches._route(event, set(range(partitions)))
            key = encode_key(event)
            assert tp == ("t", default.partition("t", key, key, None, b"v", cluster))
            assert record_of([row_of(head, event.ts_ms)]) == encode_record([event])
    finally:
        publisher._producer.close(timeout=0)


def test_send_and_the_batch_path_share_one_partitioner() -> None:
    from ingest.publish import KafkaPublisher, PublishSettings

    publisher = KafkaPublisher("127.0.0.1:1", "t", PublishSettings())
    try:
        assert publisher._producer.config["partitioner"] is publisher._batches._partitioner
    finally:
        publisher._producer.close(timeout=0)
