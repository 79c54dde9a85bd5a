"""A request's records into kafka-python's open batches, and its wait for their acks.

:class:`BatchAppender` appends records where ``KafkaProducer.send()`` would,
without its per-record costs (:mod:`ingest.publish` says when it is used);
:class:`Acks` is one request's wait, settled once per batch (or per record,
when records go through ``send()``); :class:`Deadlines` times every
request waiting on one event loop with one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Collection, Sequence
from typing import Any, Final, NamedTuple

from kafka import KafkaProducer
from kafka.structs import TopicPartition

from ingest.kafka_internals import Accumulator, Record, batch_error
from ingest.partition import RememberingPartitioner
from schema.event import LabelEvent, encode_key, record_of, row_head, row_of

MAX_REMEMBERED_COUNTERS: Final = 100_000
"""Counters whose partition and row head are remembered (then forgotten all at once)."""


class Route(NamedTuple):
    """Where the events of one counter go, and what their rows in a v2 record start with."""

    partition: TopicPartition
    """The partition kafka-python's default partitioner gives the counter as a key (ingest.partition)."""
    row_head: bytes
    """schema.event.row_head: each event's row is this and its time."""


class Acks:
    """One request's wait for its parts (the batches its records went into, or records): the last wakes it.

    Parts settle on the request's event loop (the producer's I/O thread hands
    them over with ``call_soon_threadsafe``), so the count needs no lock.
    """

    __slots__ = ("_loop", "_remaining", "done", "handed_over")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._remaining = 0
        self.handed_over = False
        """Whether any record was handed to the producer: from then on, Kafka may get it whatever the answer."""

    def expect(self, parts: int) -> None:
        """Once these parts are handed to the producer, before any can settle (on the loop, or before it awaits)."""
        self._remaining += parts
        self.handed_over = True

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


class Deadlines:
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
        self._queue: deque[tuple[float, Acks]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, acks: Acks) -> bool:
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


def _settle(waiters: list[Acks], exc: BaseException | None) -> None:
    for acks in waiters:
        acks.settle(exc)


def _wake(loop: asyncio.AbstractEventLoop, settle: Any, waiters: list[Acks], exc: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(settle, waiters, exc)


class BatchAppender:
    """Appends a request's records straight into kafka-python's open record batches; one wait per batch.

    A request becomes one v2 record per partition its counters fall in
    (the partition :meth:`~ingest.partition.RememberingPartitioner.choose`
    gives each counter, and the start of its rows, remembered per counter;
    the record built as :func:`schema.event.encode_record` builds it). What ``KafkaProducer.send()`` does
    per record, less what ingest does not need: checks of headers and
    serializers, the partitioner call, the size estimate, and a future per
    record, which the producer's I/O thread resolves one by one. Here each
    record is appended under its partition's lock into the batch
    kafka-python is filling (a new batch is started by kafka-python's own
    ``append``), and a request waits for the batches its records went into:
    one callback per batch settles every request waiting on it, with one
    wake-up of the event loop. The batch's ack is the same acks=all ack
    (``acks.done`` fails if Kafka refused any record of the batch).

    The accumulator's internals are reached through :mod:`ingest.kafka_internals`.
    A batch kafka-python splits (a broker's MESSAGE_TOO_LARGE, impossible
    with records of a request's size) never acks its first future: the
    requests waiting on it time out into a 503, never a false 2xx.
    """

    def __init__(self, producer: KafkaProducer, topic: str, partitioner: RememberingPartitioner) -> None:
        self._accumulator = Accumulator(producer)
        self._partitioner = partitioner
        self._topic = topic
        self._routes: dict[tuple[str, str, str], Route] = {}
        self._partition_count = 0
        # Per partition: the batch being filled (its produce future) and who waits on it.
        self._watched: dict[TopicPartition, tuple[Any, list[Acks]]] = {}

    def partitions(self) -> Collection[int] | None:
        """The topic's partitions, if the producer knows them."""
        return self._accumulator.partitions(self._topic)

    def append(self, events: Sequence[LabelEvent], key: str | None, acks: Acks, partitions: Collection[int]) -> None:
        """The request's records, one per partition, each keyed by the request's idempotency key (or none)."""
        if len(partitions) != self._partition_count:
            self._routes.clear()
            self._partition_count = len(partitions)
        routes = self._routes
        rows: dict[TopicPartition, list[bytes]] = {}
        latest: dict[TopicPartition, int] = {}
        for event in events:
            label, category, dom_id, ts_ms = event
            route = routes.get((label, category, dom_id)) or self._route(event, partitions)  # (a call only when new)
            tp = route.partition
            same = rows.get(tp)
            if same is None:
                rows[tp] = [row_of(route.row_head, ts_ms)]
                latest[tp] = ts_ms
            else:
                same.append(row_of(route.row_head, ts_ms))
                if ts_ms > latest[tp]:
                    latest[tp] = ts_ms
        kafka_key = key.encode() if key else None
        accumulator = self._accumulator
        accumulator.begin_appends()
        try:
            now = time.monotonic()
            for tp, same in rows.items():
                # The record's timestamp is its latest event's: see record_time.
                self._append_to(tp, (latest[tp], kafka_key, record_of(same, key)), acks, now)
        finally:
            accumulator.end_appends()

    def _route(self, event: LabelEvent, partitions: Collection[int]) -> Route:
        """The counter's route, remembered: the partition of its events, and the start of their rows."""
        counter = (event.label, event.category, event.dom_id)
        route = self._routes.get(counter)
        if route is None:
            if len(self._routes) >= MAX_REMEMBERED_COUNTERS:
                self._routes.clear()
            partition = self._partitioner.choose(encode_key(event), partitions)
            route = self._routes[counter] = Route(TopicPartition(self._topic, partition), row_head(*counter))
        return route

    def _append_to(self, tp: TopicPartition, record: Record, acks: Acks, now: float) -> None:
        """One record, under its partition's lock, into the open batch; into a new one if it is full (or none is)."""
        accumulator = self._accumulator
        with accumulator.lock(tp):
            batch = accumulator.open_batch(tp)
            if batch is not None and accumulator.fill(batch, (record,), 0, now):
                self._watch(tp, accumulator.batch_future(batch), acks)
                return
        self._append_to_new_batch(tp, *record, acks)

    def _append_to_new_batch(self, tp: TopicPartition, ts_ms: int, key: bytes | None, value: bytes, acks: Acks) -> None:
        """kafka-python's own append starts the batch; then wait on it like on any other."""
        accumulator = self._accumulator
        future, batch_future = accumulator.start_batch(tp, ts_ms, key, value)
        with accumulator.lock(tp):
            if accumulator.last_batch_future(tp) is batch_future:
                self._watch(tp, batch_future, acks)
                return
        # Already drained, maybe acked: wait on the record's own future instead.
        acks.expect(1)
        future.add_both(acks.record_settled)

    def _watch(self, tp: TopicPartition, produce_future: Any, acks: Acks) -> None:
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
            produce_future.add_both(batch_settled, waiters)
        acks.expect(1)


def batch_settled(waiters: list[Acks], result: object) -> None:
    """On the I/O thread: a batch is acked, or failed; every request waiting on it hears once per event loop."""
    exc = batch_error(result)
    loops: dict[asyncio.AbstractEventLoop, list[Acks]] = {}
    for acks in waiters:
        loops.setdefault(acks._loop, []).append(acks)
    for loop, group in loops.items():
        _wake(loop, _settle, group, exc)


def record_time(events: Sequence[LabelEvent]) -> int:
    """A record's Kafka timestamp: the latest time of its events.

    Replay finds a day's records from the first offset stamped at or after
    its midnight (:mod:`aggregator.replay`): every event of a record is then
    no later than the record's stamp, so no event of the day sits before it.
    """
    return max(event.ts_ms for event in events) if len(events) > 1 else events[0].ts_ms
