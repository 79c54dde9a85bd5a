"""Label events onto the Kafka topic, answered only once Kafka has them.

kafka-python's ``send()`` waits for one thing only: the topic's metadata
(version 3 has no buffer pool to wait for). Once the producer knows the
topic's partitions, :meth:`KafkaPublisher.publish` sends on the event loop
itself, where appending a record to a batch takes microseconds; before that
(at startup, or while the topic is unknown) it sends from a worker thread,
bounded by ``max_block_ms``. On the event loop, records go straight into
the batches kafka-python is filling (:class:`_BatchAppender`), and a
request waits for those batches rather than for a future per record: acks
come back on the producer's I/O thread once per batch, and one wake-up of
the event loop settles every request waiting on that batch; a request is
answered when its last batch is acked (or at its first failure).

Every wait is bounded: the producer's ``delivery_timeout_ms`` is shorter
than how long a request waits, so when a request gives up, the producer has
given up too and the events will not appear later behind a 503. The events
in flight (handed to the producer, not yet acked) are capped by
``max_in_flight``: past it a request is answered 503 at once instead of
queueing in memory while Kafka is slow or away. Backend threads
(:class:`ingest.client.Tracker`) wait on the same futures with
``publish_blocking``, under the same deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kafka import KafkaProducer
from kafka import __version__ as kafka_version
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner import DefaultPartitioner, Partitioner, murmur2
from kafka.structs import TopicPartition
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
    """TALLY_PUBLISH_MAX_BLOCK_MS: how long a send may wait for the topic's metadata."""
    linger_ms: int = 2
    """TALLY_PUBLISH_LINGER_MS: how long the producer waits to fill a batch."""
    retry_after_s: int = 5
    """TALLY_RETRY_AFTER_S: the Retry-After of a 503."""
    max_in_flight: int = 100_000
    """TALLY_PUBLISH_MAX_IN_FLIGHT: events handed to the producer and not yet acked; past it, 503 at once."""


class KafkaPublisher:
    """Publishes with acks from all in-sync replicas, idempotently."""

    def __init__(self, bootstrap: str, topic: str, settings: PublishSettings) -> None:
        self.topic = topic
        self.settings = settings
        self.in_flight = 0
        """Events handed to the producer by ``publish`` and not yet settled (changed on the event loop only)."""
        self._wait_s = settings.delivery_timeout_ms / 1000 + 1
        """How long a request waits for its acks: longer than the producer's own delivery timeout."""
        self._deadlines: _Deadlines | None = None
        request_timeout = max(settings.delivery_timeout_ms - settings.linger_ms - 100, 500)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            request_timeout_ms=request_timeout,
            delivery_timeout_ms=settings.delivery_timeout_ms,
            max_block_ms=settings.max_block_ms,
            partitioner=RememberingPartitioner(),
            client_id="tally-ingest",
            # Given, so the constructor does not wait for a broker: ingest
            # starts (and answers 503) while Kafka is down.
            api_version=(3, 9),
        )
        self._batches = _BatchAppender(self._producer, topic) if _BatchAppender.supported(self._producer) else None

    @classmethod
    def from_settings(cls, kafka: KafkaSettings, settings: PublishSettings) -> KafkaPublisher:
        return cls(kafka.bootstrap, kafka.topic, settings)

    async def publish(self, events: Sequence[LabelEvent]) -> None:
        count = len(events)
        if not count:
            return
        if self.in_flight + count > self.settings.max_in_flight:
            raise BrokerUnavailable(
                f"more than {self.settings.max_in_flight} events waiting for Kafka", self.settings.retry_after_s, "full"
            )
        loop = asyncio.get_running_loop()
        acks = _Acks(loop)
        self.in_flight += count
        try:
            waits_on_its_own = not self._deadlines_on(loop).add(acks)
            partitions = self._producer._metadata.partitions_for_topic(self.topic)
            if partitions is None:
                await run_in_threadpool(self._send, events, acks)
            elif self._batches is not None:
                self._batches.append(events, acks, partitions)  # cannot block: see the module's docstring
            else:
                self._send(events, acks)
            if waits_on_its_own:
                async with asyncio.timeout(self._wait_s):
                    await acks.done
            else:
                await acks.done
        except Exception as exc:
            raise BrokerUnavailable(_reason(exc), self.settings.retry_after_s, _cause(exc)) from exc
        finally:
            self.in_flight -= count
            acks.abandon()

    def _deadlines_on(self, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        """The deadlines of the loop that publishes (a new one when the previous loop is closed)."""
        if self._deadlines is None or self._deadlines.loop.is_closed():
            self._deadlines = _Deadlines(loop, self._wait_s)
        return self._deadlines

    def publish_blocking(self, events: Sequence[LabelEvent]) -> None:
        deadline = time.monotonic() + self._wait_s
        try:
            sent = [self._send_one(event) for event in events]
            for future in sent:
                future.get(timeout=max(deadline - time.monotonic(), 0))
        except Exception as exc:
            raise BrokerUnavailable(_reason(exc), self.settings.retry_after_s, _cause(exc)) from exc

    def _send(self, events: Sequence[LabelEvent], acks: _Acks) -> None:
        """kafka-python's public way, a future per record: while the topic is unknown, or without the batch path."""
        acks.expect(len(events))
        for event in events:
            self._send_one(event).add_both(acks.record_settled)

    def _send_one(self, event: LabelEvent) -> Any:
        """kafka-python's future of one record; may block up to ``max_block_ms`` while the topic is unknown."""
        # The record's timestamp is the event's time, so a replay can find a day's
        # events by timestamp (schema.event; aggregator.replay).
        return self._producer.send(self.topic, value=encode(event), key=encode_key(event), timestamp_ms=event.ts_ms)

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


MAX_REMEMBERED_KEYS: Final = 100_000
KAFKA_PYTHON_SERIES: Final = "3.0."
"""The kafka-python releases whose internals :class:`_BatchAppender` was written against."""


class _Acks:
    """One request's wait for its parts (the batches its records went into, or records): the last wakes it.

    Parts settle on the request's event loop (the producer's I/O thread hands
    them over with ``call_soon_threadsafe``), so the count needs no lock.
    """

    __slots__ = ("_loop", "_remaining", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._remaining = 0

    def expect(self, parts: int) -> None:
        """Before any of these parts can settle: on the event loop, or before ``publish`` awaits."""
        self._remaining += parts

    def abandon(self) -> None:
        """The request is answered: acks that come later find ``done`` settled and leave it."""
        if not self.done.done():
            self.done.cancel()
        elif not self.done.cancelled():
            self.done.exception()  # retrieved: no "exception was never retrieved" at garbage collection

    def record_settled(self, result: object) -> None:
        """A record future's callback and errback, on the I/O thread."""
        _wake(self._loop, _settle, [self], result if isinstance(result, BaseException) else None)

    def settle(self, exc: BaseException | None) -> None:
        """On the event loop: one part acked (``exc`` None) or failed."""
        if self.done.done():  # failed already, or the request gave up
            return
        if exc is not None:
            self.done.set_exception(exc)
            return
        self._remaining -= 1
        if not self._remaining:
            self.done.set_result(None)


class _Deadlines:
    """The deadlines of the requests waiting on one event loop, in one timer.

    Every request waits equally long, so deadlines come in order: a queue,
    with one timer for its head, instead of a timer per request
    (``asyncio.timeout``'s timer and its cancellation cost a GET more than
    its parse and validation). Requests answered are dropped from the head as
    new ones come, so the queue holds about the requests in flight. A
    request still waiting at its deadline fails with TimeoutError, as under
    ``asyncio.timeout``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, wait_s: float) -> None:
        self.loop = loop
        self._wait_s = wait_s
        self._queue: deque[tuple[float, _Acks]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, acks: _Acks) -> bool:
        """Give ``acks`` its deadline; False if it waits on another loop (it must then time itself)."""
        if acks._loop is not self.loop:
            return False
        queue = self._queue
        while queue and queue[0][1].done.done():
            queue.popleft()
        deadline = self.loop.time() + self._wait_s
        queue.append((deadline, acks))
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._expire)
        return True

    def _expire(self) -> None:
        self._timer = None
        queue, now = self._queue, self.loop.time()
        while queue and (queue[0][0] <= now or queue[0][1].done.done()):
            acks = queue.popleft()[1]
            if not acks.done.done():
                acks.done.set_exception(TimeoutError())
        if queue:
            self._timer = self.loop.call_at(queue[0][0], self._expire)


def _settle(waiters: list[_Acks], exc: BaseException | None) -> None:
    for acks in waiters:
        acks.settle(exc)


def _wake(loop: asyncio.AbstractEventLoop, settle: Any, waiters: list[_Acks], exc: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(settle, waiters, exc)


class _BatchAppender:
    """Appends a request's records straight into kafka-python's open record batches; one wait per batch.

    What ``KafkaProducer.send()`` does per record, less what ingest does not
    need: checks of headers and serializers, the partitioner call, the size
    estimate, and a future per record, which the producer's I/O thread
    resolves one by one. Here each counter's key and partition are
    remembered, each record is appended under the partition's lock into the
    batch kafka-python is filling (a new batch is started by kafka-python's
    own ``append``), and a request waits for the batches its records went
    into: one callback per batch settles every request waiting on it, with
    one wake-up of the event loop. The batch's ack is the same acks=all ack
    (``acks.done`` fails if Kafka refused any record of the batch).

    This uses kafka-python's internals (the accumulator, its batches and
    locks), so it runs only on the version it was written against
    (:data:`KAFKA_PYTHON_SERIES`); any other version gets ``send()``.
    A batch kafka-python splits (a broker's MESSAGE_TOO_LARGE, impossible
    with records of a few hundred bytes) never acks its first future: the
    requests waiting on it time out into a 503, never a false 2xx.
    """

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self._accumulator = producer._accumulator
        self._topic = topic
        self._routes: dict[tuple[str, str, str], tuple[bytes, TopicPartition]] = {}
        self._partition_count = 0
        # Per partition: the batch being filled (its produce future) and who waits on it.
        self._watched: dict[TopicPartition, tuple[Any, list[_Acks]]] = {}

    @staticmethod
    def supported(producer: KafkaProducer) -> bool:
        accumulator = getattr(producer, "_accumulator", None)
        return kafka_version.startswith(KAFKA_PYTHON_SERIES) and all(
            hasattr(accumulator, name) for name in ("_tp_lock", "_batches", "_appends_in_progress", "_closed")
        )

    def append(self, events: Sequence[LabelEvent], acks: _Acks, partitions: set[int]) -> None:
        accumulator = self._accumulator
        if len(partitions) != self._partition_count:
            self._routes.clear()
            self._partition_count = len(partitions)
        accumulator._appends_in_progress.increment()  # close() waits for appends in progress
        try:
            now = time.monotonic()
            for event in events:
                key, tp = self._route(event, partitions)
                value = encode(event)
                with accumulator._tp_lock(tp):
                    if accumulator._closed:
                        raise KafkaError("the producer is closed")
                    batches = accumulator._batches[tp]
                    if batches:
                        batch = batches[-1]
                        appended = batch.records.append(event.ts_ms, key, value, None)
                        if appended is not None:
                            if appended.size > batch.max_record_size:
                                batch.max_record_size = appended.size
                            batch.last_append = now
                            self._watch(tp, batch.produce_future, acks)
                            continue
                self._append_to_new_batch(tp, event.ts_ms, key, value, acks)
        finally:
            accumulator._appends_in_progress.decrement()

    def _route(self, event: LabelEvent, partitions: set[int]) -> tuple[bytes, TopicPartition]:
        """The counter's Kafka key and partition: murmur2 of the key, as kafka-python's DefaultPartitioner."""
        counter = (event.label, event.category, event.dom_id)
        route = self._routes.get(counter)
        if route is None:
            if len(self._routes) >= MAX_REMEMBERED_KEYS:
                self._routes.clear()
            key = encode_key(event)
            ordered = sorted(partitions)
            partition = ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]
            route = self._routes[counter] = (key, TopicPartition(self._topic, partition))
        return route

    def _append_to_new_batch(self, tp: TopicPartition, ts_ms: int, key: bytes, value: bytes, acks: _Acks) -> None:
        """kafka-python's own append starts the batch; then wait on it like on any other."""
        accumulator = self._accumulator
        future = accumulator.append(tp, ts_ms, key, value, [])[0]
        self._producer._sender.wakeup()
        with accumulator._tp_lock(tp):
            batches = accumulator._batches[tp]
            if batches and batches[-1].produce_future is future._produce_future:
                self._watch(tp, future._produce_future, acks)
                return
        # Already drained, maybe acked: wait on the record's own future instead.
        acks.expect(1)
        future.add_both(acks.record_settled)

    def _watch(self, tp: TopicPartition, produce_future: Any, acks: _Acks) -> None:
        """Under the partition's lock, while the batch is open (so not yet acked): ``acks`` waits for it."""
        watched = self._watched.get(tp)
        if watched is not None and watched[0] is produce_future:
            waiters = watched[1]
            if waiters[-1] is acks:
                return
            waiters.append(acks)
        else:
            waiters = [acks]
            self._watched[tp] = (produce_future, waiters)
            produce_future.add_both(_batch_settled, waiters)
        acks.expect(1)


def _batch_settled(waiters: list[_Acks], result: object) -> None:
    """On the I/O thread: a batch is acked, or failed; every request waiting on it hears once per event loop."""
    exc: BaseException | None = None
    if isinstance(result, BaseException):
        exc = result
    elif isinstance(result, tuple) and result[2] is not None:  # (base offset, time, the records' errors)
        failed = result[2](0)
        exc = failed if isinstance(failed, BaseException) else KafkaError("the batch failed")
    loops: dict[asyncio.AbstractEventLoop, list[_Acks]] = {}
    for acks in waiters:
        loops.setdefault(acks._loop, []).append(acks)
    for loop, group in loops.items():
        _wake(loop, _settle, group, exc)


class RememberingPartitioner(Partitioner):  # type: ignore[misc]  # kafka-python is untyped
    """kafka-python's default choice for keyed records, with each key's hash remembered.

    The same partition as :class:`kafka.partitioner.DefaultPartitioner` (murmur2
    of the key, modulo the partition count), which the pure-Python murmur2
    makes cost about 3 µs a record. Keys repeat (one per counter), so their
    hashes are kept, up to MAX_REMEMBERED_KEYS (then forgotten all at once).
    """

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return int(self._default.partition(topic, key, serialized_key, value, serialized_value, cluster))
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= MAX_REMEMBERED_KEYS:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])


def _cause(exc: BaseException) -> str:
    """For metrics: ``timeout`` (no ack in time) or ``error`` (Kafka or the producer refused)."""
    return "timeout" if isinstance(exc, (TimeoutError, KafkaTimeoutError)) else "error"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Kafka did not acknowledge in time"
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
