"""The ingest publisher on the real broker: acked means on the topic; no broker means 503."""

import asyncio
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from starlette.testclient import TestClient

from ingest.app import create_app
from ingest.publish import COMPRESSIONS, KafkaPublisher, PublishSettings
from ingest.settings import IngestSettings
from schema.event import LabelEvent, decode
from schema.settings import KafkaSettings
from stack.ports import free_port
from stack.stack import Stack
from tests.support.kafka import read_all

pytestmark = pytest.mark.kafka


async def read_all_as_the_worker(bootstrap: str, topic: str, count: int = 6) -> list[bytes]:
    """With aiokafka, the worker's client (and its codecs, cramjam)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [AioTopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        for _ in range(30):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                values += [record.value for record in records if record.value is not None]
            if all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                break
        return values
    finally:
        await consumer.stop()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_acknowledged_events_are_on_the_topic_one_counter_per_partition(
    stack: Stack, topic: str, compression: str
) -> None:
    publisher = KafkaPublisher(stack.settings.kafka.bootstrap, topic, PublishSettings(compression=compression))
    events = [LabelEvent(label, "cat", f"d{n % 3}", 1_764_000_000_000 + n) for n in range(60) for label in ("a", "b")]
    asyncio.run(publisher.publish(events))
    publisher.close()

    on_topic = read_all(stack.settings.kafka.bootstrap, topic)
    assert Counter(decode(value) for _, _, value in on_topic) == Counter(events)
    as_the_worker = asyncio.run(read_all_as_the_worker(stack.settings.kafka.bootstrap, topic))
    assert Counter(decode(value) for value in as_the_worker) == Counter(events)
    partitions_of: dict[bytes, set[int]] = {}
    for partition, key, _ in on_topic:
        partitions_of.setdefault(key, set()).add(partition)
    assert len(partitions_of) == 6
    assert all(len(p) == 1 for p in partitions_of.values()), partitions_of


def test_no_broker_means_an_honest_503(stack: Stack, topic: str) -> None:
    settings = IngestSettings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic=topic))
    with TestClient(create_app(settings)) as client:
        response = client.get("/track/", params={"labels": "signup:forms:btn1"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"] == "unavailable"
    assert response.json()["recorded"] == response.headers["x-tally-recorded"] == "none"
    assert read_all(stack.settings.kafka.bootstrap, topic) == []
