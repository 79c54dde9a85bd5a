"""Label events onto the Kafka topic, answered only once Kafka has them.

kafka-python's ``send()`` can block (waiting for metadata or buffer space)
and its futures resolve on the producer's I/O thread. The event loop never
waits on either: sends run in a worker thread with a short ``max_block_ms``,
and acks come back through ``call_soon_threadsafe``. Backend threads that
may block (:class:`ingest.client.Tracker`) wait on the same futures with
``publish_blocking``, under the same deadline. Every wait is bounded:
the producer's ``delivery_timeout_ms`` is shorter than how long a request
waits, so when a request gives up, the producer has given up too and the
events will not appear later behind a 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer
from starlette.concurrency import run_in_threadpool

from ingest.errors import BrokerUnavailable
from schema.event import LabelEvent, encode, encode_key
from schema.settings import KafkaSettings


class Publisher(Protocol):
    async def publish(self, events: Sequence[LabelEvent]) -> None:
        """Return once every event is acknowledged; raise BrokerUnavailable otherwise."""

    def close(self) -> None: ...


class BlockingPublisher(Protocol):
    def publish_blocking(self, events: Sequence[LabelEvent]) -> None:
        """The same promise as ``publish``, for threads that may block: backend code."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class PublishSettings:
    delivery_timeout_ms: int = 5000
    """TALLY_PUBLISH_TIMEOUT_MS: how long a request may wait for Kafka's ack."""
    max_block_ms: int = 200
    """TALLY_PUBLISH_MAX_BLOCK_MS: how long a send may wait for metadata or buffer space."""
    linger_ms: int = 2
    """TALLY_PUBLISH_LINGER_MS: how long the producer waits to fill a batch."""
    retry_after_s: int = 5
    """TALLY_RETRY_AFTER_S: the Retry-After of a 503."""


class KafkaPublisher:
    """Publishes with acks from all in-sync replicas, idempotently."""

    def __init__(self, bootstrap: str, topic: str, settings: PublishSettings) -> None:
        self.topic = topic
        self.settings = settings
        request_timeout = max(settings.delivery_timeout_ms - settings.linger_ms - 100, 500)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            request_timeout_ms=request_timeout,
            delivery_timeout_ms=settings.delivery_timeout_ms,
            max_block_ms=settings.max_block_ms,
            client_id="tally-ingest",
            # Given, so the constructor does not wait for a broker: ingest
            # starts (and answers 503) while Kafka is down.
            api_version=(3, 9),
        )

    @classmethod
    def from_settings(cls, kafka: KafkaSettings, settings: PublishSettings) -> KafkaPublisher:
        return cls(kafka.bootstrap, kafka.topic, settings)

    async def publish(self, events: Sequence[LabelEvent]) -> None:
        loop = asyncio.get_running_loop()
        acks = [loop.create_future() for _ in events]
        try:
            await run_in_threadpool(self._send, events, acks, loop)
            async with asyncio.timeout(self.settings.delivery_timeout_ms / 1000 + 1):
                await asyncio.gather(*acks)
        except BrokerUnavailable:
            raise
        except Exception as exc:
            raise BrokerUnavailable(_reason(exc), self.settings.retry_after_s) from exc

    def publish_blocking(self, events: Sequence[LabelEvent]) -> None:
        deadline = time.monotonic() + self.settings.delivery_timeout_ms / 1000 + 1
        try:
            sent = [self._send_one(event) for event in events]
            for future in sent:
                future.get(timeout=max(deadline - time.monotonic(), 0))
        except Exception as exc:
            raise BrokerUnavailable(_reason(exc), self.settings.retry_after_s) from exc

    def _send(
        self, events: Sequence[LabelEvent], acks: list[asyncio.Future[None]], loop: asyncio.AbstractEventLoop
    ) -> None:
        for event, ack in zip(events, acks, strict=True):
            future = self._send_one(event)
            future.add_callback(_resolve, loop, ack)
            future.add_errback(_reject, loop, ack)

    def _send_one(self, event: LabelEvent) -> Any:
        """kafka-python's future of one record; may block up to ``max_block_ms``."""
        return self._producer.send(self.topic, value=encode(event), key=encode_key(event))

    def ready(self) -> bool:
        """Whether the producer knows where the topic's partitions are."""
        try:
            return bool(self._producer.partitions_for(self.topic))
        except Exception:
            return False

    def close(self) -> None:
        """Flush what is in flight, then close: a SIGTERM loses nothing acked."""
        self._producer.flush(timeout=self.settings.delivery_timeout_ms / 1000)
        self._producer.close(timeout=5)


def _resolve(loop: asyncio.AbstractEventLoop, ack: asyncio.Future[None], _metadata: Any) -> None:
    loop.call_soon_threadsafe(_settle, ack, None)


def _reject(loop: asyncio.AbstractEventLoop, ack: asyncio.Future[None], exc: BaseException) -> None:
    loop.call_soon_threadsafe(_settle, ack, exc)


def _settle(ack: asyncio.Future[None], exc: BaseException | None) -> None:
    if ack.done():  # the request already gave up
        return
    if exc is None:
        ack.set_result(None)
    else:
        ack.set_exception(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Kafka did not acknowledge in time"
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
