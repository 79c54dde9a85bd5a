"""The events topic, read in whole batches off Faust's consumer.

Faust hands every message to its streams one at a time: a conductor call, a
channel queue, a stream step, an ack, and four asyncio tasks in
``Consumer._drain_messages`` (``wait_first``) for each one. That costs about
100 µs an event, ten times decoding and counting it. The worker keeps Faust
for what it does well -- the consumer group and its rebalances, the table
with its changelog, standby replicas and recovery, offset commits -- and
takes the events topic's records off Faust's fetch loop as lists:
``BatchConsumer._drain_messages`` gathers them for up to ``within_s`` or
``max_records`` and gives each partition's records to the app's handler in
one synchronous call, then acks the batch's last offset. Every other topic
(the table's changelog during recovery and on standbys, Faust's own) goes
through Faust's per-message path as before.

Why it stays exact:

- A batch is counted synchronously: no rebalance can start halfway through
  one (Faust's rebalance callbacks run on this event loop, between awaits).
- Records gathered over several fetches are dropped if a rebalance came in
  between (the generation changed, or the flow was stopped): every
  rebalance ends with Faust seeking each partition back to its committed
  offset, so nothing dropped is lost, and no partition is counted by a
  worker that no longer owns it.
- Only counted offsets are acked, and Faust flushes the changelog before it
  commits them (``Consumer._commit_offsets``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import faust
from faust.events import Event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT

BatchHandler = Callable[[TP, Sequence[Any], EventT[Any]], None]
"""Counts one partition's records (aiokafka ConsumerRecords, in offset order).

The event stands for the batch's last record: handlers make it Faust's
current event while they write to tables (see ``aggregator.app.acting_for``).
"""


class BatchTopics:
    """Which topics are read in batches, by which handler, and how big the batches get."""

    def __init__(self) -> None:
        self.handlers: dict[str, BatchHandler] = {}
        self.max_records = 50_000
        self.within_s = 1.0

    def add(self, topic: str, handler: BatchHandler, *, max_records: int, within_s: float) -> None:
        self.handlers[topic] = handler
        self.max_records = max_records
        self.within_s = within_s


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, handing the batched topics' records over in lists."""

    _next: dict[TP, tuple[int, int]]
    """The next offset to count per partition, and the generation it was counted in."""
    _moved: dict[TP, tuple[float, int]]
    """When each partition last handed over records (monotonic), and in which generation."""

    def _batched(self) -> BatchTopics:
        return cast(BatchApp, self.app).batched

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover  (the worker's tests run it)
        batched = self._batched()
        self._next = {}
        self._moved = {}
        if not batched.handlers:
            await super()._drain_messages(fetcher)
            return
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        gathered: dict[TP, list[Any]] = {}
        gathered_in = -1  # the generation the gathered records were fetched in
        count = 0
        started = 0.0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                timeout = 1.0 if not count else max(0.0, started + batched.within_s - time.monotonic())
                records, active = await self._wait_next_records(timeout)
                await self.sleep(0)
                if self.should_stop:
                    break
                generation = self.app.consumer_generation_id
                if not self.flow_active or generation != gathered_in:
                    # A rebalance: it seeks every partition back to its committed offset.
                    gathered.clear()
                    count = 0
                    gathered_in = generation
                if not self.flow_active:
                    # Unlike Faust's getmany, no seek back here: this is a
                    # rebalance, which seeks every partition it leaves with
                    # us to its committed offset when it completes; a seek
                    # now would race the new assignment.
                    continue
                others: dict[TP, list[Any]] = {}
                for tp, tp_records in (records or {}).items():
                    if tp.topic in batched.handlers:
                        # Every record fetched is counted, or all of the
                        # partition's gathered records go together: skipping
                        # some and counting later ones would leave a hole
                        # that the next commit covers. (What we fetched is
                        # ours until our revocation handler has run, and that
                        # stops the flow first.)
                        if not count:
                            started = time.monotonic()
                        gathered.setdefault(tp, []).extend(tp_records)
                        count += len(tp_records)
                    elif active is None or tp in active or tp in self._buffered_partitions:
                        others[tp] = tp_records
                if count and (count >= batched.max_records or time.monotonic() - started >= batched.within_s):
                    self._count(gathered, batched.handlers)
                    gathered.clear()
                    count = 0
                    if self._commit_every and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                if others:
                    await self._deliver(others, generation)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    def _count(self, gathered: Mapping[TP, list[Any]], handlers: Mapping[str, BatchHandler]) -> None:
        """Hand each partition's records to its handler, then ack the last offset: no await in between."""
        inbound = self.app.monitor.stream_inbound_time if self.app.monitor is not None else {}
        now = time.monotonic()
        for tp, records in gathered.items():
            last = records[-1]
            handlers[tp.topic](tp, records, Event(self.app, None, None, None, self._to_message(tp, last)))
            committed = self._committed_offset[tp]
            if committed is None or last.offset >= committed:
                self._acked[tp].append(last.offset)
                self._n_acked += len(records)
            self._read_offset[tp] = last.offset
            self._next[tp] = (last.offset + 1, self.app.consumer_generation_id)
            self._moved[tp] = (now, self.app.consumer_generation_id)
            inbound[tp] = now

    async def unstall(self, after_s: float) -> list[TP]:
        """Restart batched partitions that have events to count but handed none over for ``after_s``.

        Seen in tests under load: after a rebalance that left a partition with
        the same worker, that partition was never fetched again, while the
        others were. Seeking it to where counting stands (and resuming it, in
        case it stayed paused) restarts it; counting by offsets makes any
        re-read harmless.
        """
        if self.app.rebalancing or not self.flow_active:
            return []
        handlers = self._batched().handlers
        now = time.monotonic()
        quiet = []
        generation = self.app.consumer_generation_id
        for tp in self.assignment():
            if tp.topic not in handlers:
                continue
            since, moved_in = self._moved.get(tp, (now, generation))
            if moved_in != generation:  # a rebalance since: count the quiet time from now
                since = now
            self._moved[tp] = (since, generation)
            if now - since >= after_s:
                quiet.append(tp)
        if not quiet:
            return []
        ends = await self.highwaters(*quiet)
        stuck: dict[TP, int] = {}
        for tp in quiet:
            counted, generation = self._next.get(tp, (-1, -1))
            committed = self._committed_offset[tp]
            position = counted if generation == self.app.consumer_generation_id else committed
            if position is not None and ends.get(tp, 0) > position:
                stuck[tp] = position
            self._moved[tp] = (now, generation)
        if stuck and not self.app.rebalancing and self.flow_active:
            self.resume_partitions(stuck)
            for tp, position in stuck.items():
                await self.seek(tp, position)
        return sorted(stuck)

    def _new_offset(self, tp: TP) -> int | None:
        # A batched partition is counted in offset order, whole batches at a
        # time: its last acked offset is where it is done (Kafka's offsets of
        # one partition need not be consecutive, so Faust's gap search is no use).
        if tp.topic not in self._batched().handlers:
            offset: int | None = super()._new_offset(tp)
            return offset
        acked = self._acked[tp]
        if not acked:
            return None
        done = max(acked) + 1
        acked.clear()
        self._acked_index[tp].clear()
        return done

    async def _deliver(self, records: Mapping[TP, list[Any]], generation: int) -> None:
        """Faust's own per-message path (``Consumer.getmany`` + ``_drain_messages``), for the other topics."""
        callback = self.callback
        acks_enabled_for = self.app.topics.acks_enabled_for
        for tp, tp_records in records.items():
            for record in tp_records:
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return
                message = self._to_message(tp, record)
                offset = message.offset
                r_offset = self._read_offset[tp]
                if r_offset is None or offset >= r_offset:
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    self._read_offset[tp] = offset


class BatchTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[BatchConsumer]] = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose consumer reads ``batched`` topics in batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batched = BatchTopics()

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)
