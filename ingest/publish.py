"""Label events onto the Kafka topic, answered only once Kafka has them.

A request's events become one record per partition their counters fall in
(wire format v2, :func:`schema.event.encode_record`), sent to that
partition, the request's idempotency key as its Kafka key (or none), its
timestamp the latest of its events' times (:func:`ingest.batches.record_time`).
A repeat of a keyed request becomes the same records, which the worker
counts once (docs/exactness.md).

kafka-python's ``send()`` waits for one thing only: the topic's metadata
(version 3 has no buffer pool to wait for). Once the producer knows the
topic's partitions, :meth:`KafkaPublisher.publish` sends on the event loop
itself, where appending a record to a batch takes microseconds; before that
(at startup, or while the topic is unknown) it sends from a worker thread,
bounded by ``max_block_ms``. On the event loop, records go straight into
the batches kafka-python is filling (:class:`ingest.batches.BatchAppender`), and a
request waits for those batches rather than for a future per record: acks
come back on the producer's I/O thread once per batch, and one wake-up of
the event loop settles every request waiting on that batch; a request is
answered when its last batch is acked (or at its first failure).

Every wait is bounded: the producer's ``delivery_timeout_ms`` is shorter
than how long a request waits, so when a request gives up, the producer has
given up too and holds none of its records any more. That does not make a
503 mean "not recorded": a produce request in flight when the wait ran out
may have reached Kafka, and its answer was lost. So a 503 says which it is
(:class:`ingest.errors.BrokerUnavailable`): nothing recorded, when no record
had been handed to the producer; unknown otherwise. The events
in flight (handed to the producer, not yet acked) are capped by
``max_in_flight``: past it a request is answered 503 at once instead of
queueing in memory while Kafka is slow or away. And once Kafka has failed
to acknowledge a request (:class:`Outage`), requests are answered 503 at
once, with nothing handed to the producer, but for one probe a second,
until a request is acknowledged again. Backend threads
(:class:`ingest.client.Tracker`) wait on the same futures with
``publish_blocking``, under the same deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from starlette.concurrency import run_in_threadpool

from ingest.batches import Acks, BatchAppender, Deadlines, record_time
from ingest.errors import BrokerUnavailable
from ingest.kafka_internals import check_version, recover_after_reset
from ingest.partition import RememberingPartitioner
from schema.event import LabelEvent, encode_record
from schema.settings import KafkaSettings

BATCH_BYTES: Final = 65_536
"""The most a record batch of one partition holds (kafka-python's default: 16 KiB, about 120 of our records).

Under load, JSON batches from many clients fill 16 KiB before ``linger_ms``
is up. The producer's I/O thread pays per batch (building, sending and
settling it) more than per record, so larger batches cost less per event
(docs/performance.md). Six partitions' batches stay well inside
one produce request (``max_request_size``, 1 MiB).
"""


class Publisher(Protocol):
    async def publish(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        """Return once every event is acknowledged; raise BrokerUnavailable otherwise.

        ``key`` is the request's idempotency key (checked by the caller), or None.
        """

    def close(self) -> None: ...


class BlockingPublisher(Protocol):
    def publish_blocking(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        """The same promise as ``publish``, for threads that may block: backend code."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class PublishSettings:
    delivery_timeout_ms: int = 5000
    """TALLY_PUBLISH_TIMEOUT_MS: how long a request may wait for Kafka's ack."""
    max_block_ms: int = 200
    """TALLY_PUBLISH_MAX_BLOCK_MS: how long a send may wait for the topic's metadata."""
    linger_ms: int = 2
    """TALLY_PUBLISH_LINGER_MS: how long the producer waits to fill a batch."""
    retry_after_s: int = 5
    """TALLY_PUBLISH_RETRY_AFTER_S: the Retry-After of a 503."""
    max_in_flight: int = 100_000
    """TALLY_PUBLISH_MAX_IN_FLIGHT: events handed to the producer and not yet acked; past it, 503 at once."""
    compression: str = "lz4"
    """TALLY_PUBLISH_COMPRESSION: how record batches travel and are stored: ``none``, ``gzip``, ``lz4`` or ``zstd``."""
    probe_every_ms: int = 1000
    """TALLY_PUBLISH_PROBE_EVERY_MS: while Kafka fails, how often a request is let through to see if it is back.

    0 lets every request through: each waits for Kafka, as without :class:`Outage`.
    """


COMPRESSIONS: Final = ("none", "gzip", "lz4", "zstd")
"""What TALLY_PUBLISH_COMPRESSION may say; the worker (aiokafka, with cramjam) and replay read each of them."""


class Outage:
    """Whether Kafka is failing to acknowledge, as this publisher last saw it; and who may try meanwhile.

    Without it, while the broker is away every request hands its records to
    the producer and waits the whole delivery timeout for a 503 that cannot
    say whether they were recorded. With it, the first failure (no ack in
    time, or Kafka's error, for records handed over) opens the outage:
    requests are then answered 503 at once, nothing handed over (so nothing
    recorded: a retry is safe), except one probe every ``probe_every_s``
    that publishes as usual. The first request acknowledged, probe or one
    still waiting from before, ends it. A circuit breaker, whose only signal
    is the acks themselves.
    """

    def __init__(self, probe_every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe_every_s = probe_every_s
        self.since: float | None = None
        """When Kafka started failing; None while it acknowledges."""
        self._next_probe = 0.0
        self._clock = clock

    def admits(self) -> bool:
        """Whether a request may publish now: always, unless Kafka is failing and a probe went out lately."""
        if self.since is None:
            return True
        now = self._clock()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.probe_every_s
        return True

    def failed(self) -> None:
        if self.since is None:
            self.since = self._clock()
            self._next_probe = self.since + self.probe_every_s

    def acknowledged(self) -> None:
        self.since = None

    def refusal(self, retry_after_s: int) -> BrokerUnavailable:
        away = self._clock() - (self.since or 0.0)
        reason = f"Kafka has not acknowledged for {away:.1f} s; nothing was sent"
        return BrokerUnavailable(reason, retry_after_s, "down", maybe_recorded=False)


class KafkaPublisher:
    """Publishes with acks from all in-sync replicas, idempotently.

    Refuses to start on a kafka-python other than the one its use of the
    producer's internals is proved with (:func:`ingest.kafka_internals.check_version`).
    """

    def __init__(self, bootstrap: str, topic: str, settings: PublishSettings) -> None:
        self.topic = topic
        self.settings = settings
        self.in_flight = 0
        """Events handed to the producer by ``publish`` and not yet settled (changed on the event loop only)."""
        self._wait_s = settings.delivery_timeout_ms / 1000 + 1
        """How long a request waits for its acks: longer than the producer's own delivery timeout."""
        self._deadlines: Deadlines | None = None
        self.outage = Outage(settings.probe_every_ms / 1000)
        check_version()
        partitioner = self._partitioner = RememberingPartitioner()
        request_timeout = max(settings.delivery_timeout_ms - settings.linger_ms - 100, 500)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            batch_size=BATCH_BYTES,
            compression_type=None if settings.compression == "none" else settings.compression,
            request_timeout_ms=request_timeout,
            delivery_timeout_ms=settings.delivery_timeout_ms,
            max_block_ms=settings.max_block_ms,
            partitioner=partitioner,
            client_id="tally-ingest",
            # Given, so the constructor does not wait for a broker: ingest
            # starts (and answers 503) while Kafka is down.
            api_version=(3, 9),
        )
        recover_after_reset(self._producer)
        self._batches = BatchAppender(self._producer, topic, partitioner)

    @classmethod
    def from_settings(cls, kafka: KafkaSettings, settings: PublishSettings) -> KafkaPublisher:
        return cls(kafka.bootstrap, kafka.topic, settings)

    async def publish(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        count = len(events)
        if not count:
            return
        if self.in_flight + count > self.settings.max_in_flight:
            waiting = f"more than {self.settings.max_in_flight} events waiting for Kafka"
            raise BrokerUnavailable(waiting, self.settings.retry_after_s, "full", maybe_recorded=False)
        if not self.outage.admits():
            raise self.outage.refusal(self.settings.retry_after_s)
        loop = asyncio.get_running_loop()
        acks = Acks(loop)
        self.in_flight += count
        try:
            waits_on_its_own = not self._deadlines_on(loop).add(acks)
            partitions = self._batches.partitions()
            if partitions is not None:
                self._batches.append(events, key, acks, partitions)  # cannot block: see the module's docstring
            else:
                await run_in_threadpool(self._send, events, key, acks)
            if waits_on_its_own:
                async with asyncio.timeout(self._wait_s):
                    await acks.done
            else:
                await acks.done
        except Exception as exc:
            raise self._failed(exc, acks.handed_over) from exc
        else:
            self.outage.acknowledged()
        finally:
            self.in_flight -= count
            acks.abandon()

    def _deadlines_on(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        """The deadlines of the loop that publishes (a new one when the previous loop is closed)."""
        if self._deadlines is None or self._deadlines.loop.is_closed():
            self._deadlines = Deadlines(loop, self._wait_s)
        return self._deadlines

    def publish_blocking(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        if not self.outage.admits():
            raise self.outage.refusal(self.settings.retry_after_s)
        deadline = time.monotonic() + self._wait_s
        sent: list[Any] = []
        try:
            for record in self._records(events, key):
                sent.append(self._send_one(*record))
            for future in sent:
                future.get(timeout=max(deadline - time.monotonic(), 0))
        except Exception as exc:
            raise self._failed(exc, bool(sent)) from exc
        else:
            self.outage.acknowledged()

    def _failed(self, exc: BaseException, handed_over: bool) -> BrokerUnavailable:
        """The 503 for a publish that failed; Kafka is failing if it did not acknowledge what it was handed."""
        if handed_over:
            self.outage.failed()
        return BrokerUnavailable(_reason(exc), self.settings.retry_after_s, _cause(exc), handed_over)

    def _send(self, events: Sequence[LabelEvent], key: str | None, acks: Acks) -> None:
        """kafka-python's public way, a future per record: while the topic is unknown.

        Finding the partitions waits for the topic's metadata; if it gives up, nothing was handed over.
        """
        records = self._records(events, key)
        first = self._send_one(*records[0])
        acks.expect(len(records))
        first.add_both(acks.record_settled)
        for record in records[1:]:
            self._send_one(*record).add_both(acks.record_settled)

    def _records(
        self, events: Sequence[LabelEvent], key: str | None
    ) -> list[tuple[int, Sequence[LabelEvent], str | None]]:
        """The request's records: (partition, its events, the key); waits up to ``max_block_ms`` for the partitions."""
        partitions = self._producer.partitions_for(self.topic)
        if not partitions:
            raise KafkaTimeoutError(f"the partitions of {self.topic} are not known")
        return [(partition, group, key) for partition, group in self._partitioner.group(events, partitions).items()]

    def _send_one(self, partition: int, events: Sequence[LabelEvent], key: str | None) -> Any:
        """kafka-python's future of one record, sent to the partition of its events' counters."""
        return self._producer.send(
            self.topic,
            value=encode_record(events, key),
            key=key.encode() if key else None,
            partition=partition,
            timestamp_ms=record_time(events),
        )

    def ready(self) -> bool:
        """Whether the producer knows where the topic's partitions are."""
        try:
            return bool(self._producer.partitions_for(self.topic))
        except Exception:
            return False

    def stats(self) -> dict[str, float]:
        """kafka-python's producer-metrics figures (``record-queue-time-avg``, ...), for the metrics page."""
        figures: dict[str, dict[str, float]] = self._producer.metrics() or {}
        return dict(figures.get("producer-metrics", {}))

    def close(self) -> None:
        """Flush what is in flight, then close: a SIGTERM loses nothing acked."""
        self._producer.flush(timeout=self.settings.delivery_timeout_ms / 1000)
        self._producer.close(timeout=5)


def _cause(exc: BaseException) -> str:
    """For metrics: ``timeout`` (no ack in time) or ``error`` (Kafka or the producer refused)."""
    return "timeout" if isinstance(exc, (TimeoutError, KafkaTimeoutError)) else "error"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Kafka did not acknowledge in time"
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
