"""The events topic, read in whole batches off Faust's consumer.

Faust hands every message to its streams one at a time: a conductor call, a
channel queue, a stream step, an ack, and four asyncio tasks in
``Consumer._drain_messages`` (``wait_first``) for each one. That costs about
70 µs an event, ten times decoding and counting it, and held a worker near
14,000 events/s. The worker keeps Faust for what it does well -- the
consumer group and its rebalances, the table with its changelog, standby
replicas and recovery, offset commits -- and takes the events topic's
records off Faust's fetch loop as lists: ``CountingConsumer._drain_messages``
gathers them for up to ``within_s`` or ``max_records`` and hands them to the
app's ``BatchHandler`` in one call. Every other topic (the table's changelog
during recovery and on standbys) goes through Faust's per-message path as
before.

Why it stays exact -- none of it rests on Faust delivering every offset:

- The handler reads again from Kafka whatever does not continue from what
  its table counted (``aggregator.gaps``), so records dropped here (a
  rebalance came while gathering) or skipped anywhere are never lost.
- It counts a batch synchronously, after its last await and only if the
  generation it was gathered in is still current: no rebalance can come
  between counting a partition and recording how far it got.
- An events partition is committed no further than what its table counted
  and Kafka confirmed (``commit_cap``, ``CountingApp.confirmed_next``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

BatchHandler = Callable[[Mapping[TP, Sequence[Any]], Callable[[], bool]], Awaitable[Mapping[TP, int]]]
"""Counts a batch: each partition's records (aiokafka ConsumerRecords, in offset order).

The second argument tells whether the batch may still be counted (no
rebalance since it was gathered). Returns, per partition counted, the last
offset its table now holds, confirmed by Kafka.
"""


class CountingApp(faust.App):
    """A Faust app whose consumer reads the counted topic in batches and commits no further than the counts."""

    def __init__(self, *args: Any, counted_topic: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted_topic = counted_topic
        self.confirmed_next: dict[int, int] = {}
        """Per events partition, this generation: the offset after the last event counted and confirmed."""
        self.handed_over: dict[TP, tuple[float, int]] = {}
        """Per events partition: when its last batch was counted (monotonic), and in which generation."""
        self.batch_handler: BatchHandler | None = None
        self.batch_max = 50_000
        self.batch_within_s = 1.0

    def count_batches(self, handler: BatchHandler, *, max_records: int, within_s: float) -> None:
        self.batch_handler, self.batch_max, self.batch_within_s = handler, max_records, within_s

    def _new_transport(self) -> CountingTransport:
        return CountingTransport(self.conf.broker_consumer, self)


class CountingConsumer(faust_aiokafka.Consumer):
    """Faust's consumer, handing the counted topic's records over in batches and committing only counts."""

    @property
    def _counting(self) -> CountingApp:
        return cast(CountingApp, self.app)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover  (the worker's tests run it)
        app = self._counting
        if app.batch_handler is None:
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
                timeout = 1.0 if not count else max(0.0, started + app.batch_within_s - time.monotonic())
                records, active = await self._wait_next_records(timeout)
                await self.sleep(0)
                if self.should_stop:
                    break
                generation = app.consumer_generation_id
                if not self.flow_active or generation != gathered_in:
                    # A rebalance: what was gathered is dropped; whoever counts
                    # the partitions next reads it again (aggregator.gaps).
                    gathered = {}
                    count = 0
                    gathered_in = generation
                if not self.flow_active:
                    continue
                others: dict[TP, list[Any]] = {}
                for tp, tp_records in (records or {}).items():
                    if tp.topic == app.counted_topic:
                        if not count:
                            started = time.monotonic()
                        gathered.setdefault(tp, []).extend(tp_records)
                        count += len(tp_records)
                    elif active is None or tp in active or tp in self._buffered_partitions:
                        others[tp] = tp_records
                if count and (count >= app.batch_max or time.monotonic() - started >= app.batch_within_s):
                    await self._hand_over(gathered, gathered_in)
                    gathered = {}
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

    async def _hand_over(self, gathered: Mapping[TP, list[Any]], generation: int) -> None:
        """Count a batch; per partition, ack the last offset its table holds and let commits reach it."""
        app = self._counting
        assert app.batch_handler is not None

        def still_current() -> bool:
            return bool(self.flow_active and app.consumer_generation_id == generation)

        counted = await app.batch_handler(gathered, still_current)
        inbound = app.monitor.stream_inbound_time if app.monitor is not None else {}
        now, generation_now = time.monotonic(), app.consumer_generation_id
        for tp, through in counted.items():
            app.confirmed_next[tp.partition] = through + 1
            app.handed_over[tp] = (now, generation_now)
            self._acked[tp].append(through)
            self._n_acked += len(gathered.get(tp, ()))
            self._read_offset[tp] = through
            inbound[tp] = now

    def _new_offset(self, tp: TP) -> int | None:
        app = self._counting
        if tp.topic != app.counted_topic or app.batch_handler is None:
            offset = super()._new_offset(tp)
        else:
            # Counted in offset order, whole batches at a time: the last acked
            # offset is where the partition is done (Kafka's offsets of one
            # partition need not be consecutive, so Faust's gap search is no
            # use here).
            acked = self._acked[tp]
            if not acked:
                return None
            offset = max(acked) + 1
            acked.clear()
            self._acked_index[tp].clear()
        return commit_cap(offset, tp, app.counted_topic, app.confirmed_next)

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


def commit_cap(offset: int | None, tp: TP, counted_topic: str, confirmed_next: Mapping[int, int]) -> int | None:
    """The offset to commit for ``tp``: as acked, but not past the counts Kafka confirmed.

    Faust's stream acknowledges events it skips during a rebalance (flow
    stopped, or fetched in an older generation: "otherwise the lag would
    increase"), and a commit after that would cover events nobody counted.
    """
    if offset is None or tp.topic != counted_topic:
        return offset
    confirmed = confirmed_next.get(tp.partition)
    if confirmed is None:
        return None  # nothing counted here in this generation
    return min(offset, confirmed)


class CountingTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = CountingConsumer


QUIET_S = 10.0
"""An events partition with events waiting that had no batch counted this long (outside rebalances) is restarted."""


async def restart_quiet_partitions(app: CountingApp, quiet_s: float = QUIET_S) -> list[TP]:
    """Resume and seek again the events partitions that have events waiting but hand none over.

    Seen in the batched reader's first tests under load: after a rebalance
    that left a partition with the same worker, that partition was never
    fetched again while the others were. Seeking it to its committed offset
    (and resuming it, in case it stayed paused) restarts it; a re-read is
    harmless (counters skip what they hold) and a hole is read again
    (``aggregator.gaps``).
    """
    consumer: Any = app.consumer
    if app.rebalancing or not consumer.flow_active:
        return []
    now, generation = time.monotonic(), app.consumer_generation_id
    quiet = []
    for tp in consumer.assignment():
        if tp.topic != app.counted_topic:
            continue
        since, in_generation = app.handed_over.get(tp, (now, generation))
        if in_generation != generation:  # a rebalance since: the quiet time starts now
            since = now
        app.handed_over[tp] = (since, generation)
        if now - since >= quiet_s:
            quiet.append(tp)
    if not quiet:
        return []
    ends = await consumer.highwaters(*quiet)
    stuck: dict[TP, int] = {}
    for tp in quiet:
        committed = consumer._committed_offset.get(tp)
        position = app.confirmed_next.get(tp.partition, committed)
        if position is not None and ends.get(tp, 0) > position:
            stuck[tp] = position
        app.handed_over[tp] = (now, generation)
    if stuck and not app.rebalancing and consumer.flow_active:
        consumer.resume_partitions(stuck)
        for tp, position in stuck.items():
            await consumer.seek(tp, position)
    return sorted(stuck)
