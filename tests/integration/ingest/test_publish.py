"""The ingest publisher on the real broker: acked means on the topic; no broker means 503."""

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaConsumer, TopicPartition
from starlette.testclient import TestClient

from ingest.app import create_app
from ingest.publish import COMPRESSIONS, KafkaPublisher, PublishSettings
from ingest.settings import IngestSettings
from schema.event import LabelEvent, decode_record
from schema.settings import KafkaSettings
from stack.ports import free_port
from stack.stack import Stack
from tests.support.kafka import read_all

pytestmark = pytest.mark.kafka


async def read_all_as_the_worker(bootstrap: str, topic: str, records: int, count: int = 6) -> list[bytes]:
    """The values of the first ``records`` records of ``topic`` (what kafka-python read), read with aiokafka,
    the worker's client (and its codecs, cramjam): until that many have come, for 30 s at most."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [AioTopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        for _ in range(30):
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                values += [record.value for record in batch if record.value is not None]
            if len(values) >= records:
                break
        return values
    finally:
        await consumer.stop()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_acknowledged_events_are_on_the_topic_one_record_per_partition(
    stack: Stack, topic: str, compression: str
) -> None:
    publisher = KafkaPublisher(stack.settings.kafka.bootstrap, topic, PublishSettings(compression=compression))
    # Recent times: a record is stamped with its events' latest, and the broker's retention deletes old ones.
    now = int(time.time() * 1000)
    events = [LabelEvent(label, "cat", f"d{n % 3}", now + n) for n in range(60) for label in ("a", "b")]
    asyncio.run(publisher.publish(events))
    asyncio.run(publisher.publish(events[:7], "request-7"))
    publisher.close()

    on_topic = read_all(stack.settings.kafka.bootstrap, topic)
    decoded = [(partition, key, decode_record(value)) for partition, key, value in on_topic]
    assert Counter(e for _, _, record in decoded for e in record.events) == Counter(events + events[:7])
    as_the_worker = asyncio.run(read_all_as_the_worker(stack.settings.kafka.bootstrap, topic, len(on_topic)))
    assert Counter(e for value in as_the_worker for e in decode_record(value).events) == Counter(events + events[:7])
    partitions_of: dict[str, set[int]] = {}
    for partition, _, record in decoded:
        for event in record.events:
            partitions_of.setdefault(event.counter_key, set()).add(partition)
    assert len(partitions_of) == 6
    assert all(len(p) == 1 for p in partitions_of.values()), partitions_of
    unkeyed = [(p, r) for p, key, r in decoded if key is None and r.key is None]
    keyed = [(p, r) for p, key, r in decoded if key == b"request-7" and r.key == "request-7"]
    assert len(unkeyed) + len(keyed) == len(decoded)
    assert len(unkeyed) == len({p for p, _ in unkeyed})  # one record per partition and request
    assert len(keyed) == len({p for p, _ in keyed})
    assert sorted(e for _, r in keyed for e in r.events) == sorted(events[:7])


def test_a_record_is_stamped_with_the_latest_time_of_its_events(stack: Stack, topic: str) -> None:
    """Replay starts a day at the first record stamped at or after its midnight: no event is later than its record."""
    publisher = KafkaPublisher(stack.settings.kafka.bootstrap, topic, PublishSettings())
    now = int(time.time() * 1000)  # recent: the broker's retention deletes records stamped long ago
    times = [now - 86_400_000, now, now - 87_400_000]
    publisher.publish_blocking([LabelEvent("a", "", "", ts) for ts in times], "blocking")
    asyncio.run(publisher.publish([LabelEvent("a", "", "", ts) for ts in times], "on-the-loop"))
    publisher.close()
    consumer = KafkaConsumer(bootstrap_servers=stack.settings.kafka.bootstrap, consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, p) for p in range(6)])
    consumer.seek_to_beginning()
    stamped = {decode_record(m.value).key: m.timestamp for m in consumer}
    consumer.close()
    assert stamped == {"blocking": max(times), "on-the-loop": max(times)}


def test_no_broker_means_an_honest_503(stack: Stack, topic: str) -> None:
    settings = IngestSettings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic=topic))
    with TestClient(create_app(settings)) as client:
        response = client.get("/track/", params={"labels": "signup:forms:btn1"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"] == "unavailable"
    assert response.json()["recorded"] == response.headers["x-tally-recorded"] == "none"
    assert read_all(stack.settings.kafka.bootstrap, topic) == []
