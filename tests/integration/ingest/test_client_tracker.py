"""The backend client on the real broker: when incr_labels returns, the events are on the topic, under the
call's idempotency key; with the worker, a call made again under its key counts once."""

import asyncio
import re
import time

import pytest

from ingest.client import AsyncTracker, BrokerUnavailable, Retries, Tracker
from ingest.settings import IngestSettings
from schema.event import decode_record
from schema.settings import KafkaSettings
from stack.ports import free_port
from stack.stack import Stack
from tests.support.kafka import messages
from tests.support.servers import Services, daily_stats, eventually

pytestmark = pytest.mark.kafka


def settings_for(stack: Stack, topic: str) -> IngestSettings:
    return IngestSettings(kafka=KafkaSettings(bootstrap=stack.settings.kafka.bootstrap, topic=topic))


def keys_and_labels(stack: Stack, topic: str) -> list[tuple[bytes | None, str]]:
    """(Kafka key, label) of every event on the topic."""
    return sorted(
        ((key, event.label) for key, value in messages(stack, topic) for event in decode_record(value).events),
        key=lambda pair: pair[1],
    )


UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_tracker_the_seed_way(stack: Stack, topic: str) -> None:
    with Tracker(settings_for(stack, topic)) as tracker:
        outcome = tracker.incr_labels("user_connected|user_clicked_button:forms:btn1")
        assert outcome.accepted == 2
        # Returned means acked: read back before the producer is flushed and closed.
        on_topic = keys_and_labels(stack, topic)
        assert [label for _, label in on_topic] == ["user_clicked_button", "user_connected"]
        keys = {key for key, _ in on_topic}  # one call, one idempotency key, on each of its records
        assert len(keys) == 1 and UUID.fullmatch(keys.pop() or b"")


def test_async_tracker(stack: Stack, topic: str) -> None:
    async def count() -> None:
        async with AsyncTracker(settings_for(stack, topic)) as tracker:
            await asyncio.gather(*(tracker.incr_labels(f"job_done:worker:w{n}") for n in range(3)))

    asyncio.run(count())
    on_topic = keys_and_labels(stack, topic)
    assert [label for _, label in on_topic] == ["job_done"] * 3
    assert len({key for key, _ in on_topic}) == 3  # a key per call


def test_tracker_without_a_broker_tries_for_retry_for_s_then_raises(stack: Stack, topic: str) -> None:
    settings = IngestSettings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic=topic))
    started = time.monotonic()
    with (
        Tracker(settings, retries=Retries(retry_for_s=3)) as tracker,
        pytest.raises(BrokerUnavailable, match="nothing was recorded"),
    ):
        tracker.incr_labels("user_connected")
    assert time.monotonic() - started < 3 + settings.publish.delivery_timeout_ms / 1000 + 3  # no send starts past 3 s
    assert messages(stack, topic) == []


@pytest.mark.clickhouse
def test_a_call_made_again_under_its_key_counts_once(services: Services) -> None:
    """What a task queue does when a task that counted is retried: the same call, the same key."""
    services.start_worker()
    settings = settings_for(services.stack, services.topic)
    with Tracker(settings) as tracker:
        for _ in range(3):
            tracker.incr_labels("invoice_sent:billing:inv-1|invoice_sent:billing:inv-2", idempotency_key="task-42")
        tracker.incr_labels("invoice_sent:billing:inv-1")  # another call: counted

    async def again() -> None:
        async with AsyncTracker(settings) as tracker:
            await asyncio.gather(*(tracker.incr_labels("invoice_sent:billing:inv-2", idempotency_key="task-43")
                                   for _ in range(3)))  # fmt: skip

    asyncio.run(again())
    expected = {("invoice_sent", "billing", "inv-1"): 2, ("invoice_sent", "billing", "inv-2"): 2}
    eventually(lambda: daily_stats(services.clickhouse) == expected, 60)
    time.sleep(3)  # a second count would land within the worker's next flushes
    assert daily_stats(services.clickhouse) == expected
