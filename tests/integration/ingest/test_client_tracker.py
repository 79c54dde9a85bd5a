"""The backend client on the real broker: when incr_labels returns, the events are on the topic."""

import asyncio

import pytest

from ingest.client import AsyncTracker, BrokerUnavailable, Tracker
from ingest.settings import IngestSettings
from schema.event import decode_record
from schema.settings import KafkaSettings
from stack.ports import free_port
from stack.stack import Stack
from tests.support.kafka import messages

pytestmark = pytest.mark.kafka


def settings_for(stack: Stack, topic: str) -> IngestSettings:
    return IngestSettings(kafka=KafkaSettings(bootstrap=stack.settings.kafka.bootstrap, topic=topic))


def keys_and_labels(stack: Stack, topic: str) -> list[tuple[bytes | None, str]]:
    """(Kafka key, label) of every event on the topic."""
    return sorted(
        ((key, event.label) for key, value in messages(stack, topic) for event in decode_record(value).events),
        key=lambda pair: pair[1],
    )


def test_tracker_the_seed_way(stack: Stack, topic: str) -> None:
    with Tracker(settings_for(stack, topic)) as tracker:
        outcome = tracker.incr_labels("user_connected|user_clicked_button:forms:btn1")
        assert outcome.accepted == 2
        # Returned means acked: read back before the producer is flushed and closed.
        assert keys_and_labels(stack, topic) == [(None, "user_clicked_button"), (None, "user_connected")]


def test_async_tracker(stack: Stack, topic: str) -> None:
    async def count() -> None:
        async with AsyncTracker(settings_for(stack, topic)) as tracker:
            await asyncio.gather(*(tracker.incr_labels(f"job_done:worker:w{n}") for n in range(3)))

    asyncio.run(count())
    assert keys_and_labels(stack, topic) == [(None, "job_done")] * 3


def test_tracker_without_a_broker_raises(stack: Stack, topic: str) -> None:
    settings = IngestSettings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic=topic))
    with Tracker(settings) as tracker, pytest.raises(BrokerUnavailable, match="nothing was recorded"):
        tracker.incr_labels("user_connected")
    assert messages(stack, topic) == []
