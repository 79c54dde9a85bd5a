"""The events topic, read in whole batches off Faust's consumer.

Faust hands every message to its streams one at a time: a conductor call, a
channel queue, a stream step, an ack, and four asyncio tasks in its fetch
loop (``wait_first``) for each one, which costs several times decoding and
counting the event (docs/performance.md). The worker keeps Faust for what it
does well -- the consumer group and its rebalances, the table with its
changelog, standby replicas and recovery, offset commits -- and takes the
events topic's records off Faust's fetch loop as lists:
``CountingConsumer.drain`` gathers them for up to ``within_s`` or
``max_records`` and hands them to the app's ``BatchHandler`` in one call.
Every other topic (the table's changelog during recovery and on standbys)
goes through Faust's per-message path.

Why it stays exact -- none of it rests on Faust delivering every offset:

- The handler reads again from Kafka whatever does not continue from what
  its table counted (``aggregator.gaps``), so records dropped here (a
  rebalance came while gathering) or skipped anywhere are never lost.
- It counts a batch synchronously, after its last await and only if the
  generation it was gathered in is still current: no rebalance can come
  between counting a partition and recording how far it got.
- An events partition is committed no further than what its table counted
  and Kafka confirmed (``aggregator.commit``).

Faust's internals that this takes are behind ``aggregator.faust_internals``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from faust.types import TP

from aggregator.commit import Changelog, Commits
from aggregator.faust_internals import HookedApp, HookedConsumer

BatchHandler = Callable[[Mapping[TP, Sequence[Any]], Callable[[], bool]], Awaitable[Mapping[TP, int]]]
"""Counts a batch: each partition's records (aiokafka ConsumerRecords, in offset order).

The second argument tells whether the batch may still be counted (no
rebalance since it was gathered). Returns, per partition counted, the last
offset its table now holds (its changelog records sent, not yet confirmed).
"""


class CountingConsumer(HookedConsumer):
    """Faust's consumer, handing the counted topic's records over in batches and committing only counts."""

    fetch_max_wait_ms = 100
    """How long the broker may hold a fetch with nothing to return. aiokafka keeps one fetch in flight per
    broker, for the partitions with nothing buffered when it is sent: one sent while every events partition
    still had records buffered asks only for partitions with nothing new (the changelog's), and with Faust's
    1.5 s the broker held it that long while the events partitions, drained meanwhile, waited for it (a batch
    of 1 s then held 2.7 s of events; docs/performance.md). 100 ms costs an idle worker ten empty fetches a
    second."""

    @property
    def _counting(self) -> CountingApp:
        return cast(CountingApp, self.app)

    async def drain(self, fetcher: Any) -> None:
        app = self._counting
        if app.batch_handler is None:
            await super().drain(fetcher)
            return
        gathered: dict[TP, list[Any]] = {}
        gathered_in = -1  # the generation the gathered records were fetched in
        count = 0
        started = 0.0
        try:
            while not (self.should_stop or fetcher.should_stop):
                timeout = 1.0 if not count else max(0.0, started + app.batch_within_s - time.monotonic())
                records, active = await self.next_records(timeout)
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
                others: dict[TP, Sequence[Any]] = {}
                for tp, tp_records in (records or {}).items():
                    if tp.topic == app.counted_topic:
                        if not count:
                            started = time.monotonic()
                        gathered.setdefault(tp, []).extend(tp_records)
                        count += len(tp_records)
                    elif active is None or tp in active or self.is_buffered(tp):
                        others[tp] = tp_records
                if count and (count >= app.batch_max or time.monotonic() - started >= app.batch_within_s):
                    await self._hand_over(gathered, gathered_in)
                    gathered = {}
                    count = 0
                    await self.commit_if_due()
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
        """Count a batch; once its changelog is confirmed, ack per partition the last offset its table holds."""
        app = self._counting
        assert app.batch_handler is not None and app.changelog is not None

        def still_current() -> bool:
            return bool(self.flow_active and app.consumer_generation_id == generation)

        counted = await app.batch_handler(gathered, still_current)
        await app.commits.acknowledge(app.changelog, self, counted, gathered)
        inbound = app.monitor.stream_inbound_time if app.monitor is not None else {}
        now, generation_now = time.monotonic(), app.consumer_generation_id
        for tp in counted:
            app.handed_over[tp] = (now, generation_now)
            inbound[tp] = now

    def offset_to_commit(self, tp: TP) -> int | None:
        app = self._counting
        if tp.topic != app.counted_topic or app.batch_handler is None:
            offset = super().offset_to_commit(tp)
        else:
            # Counted in offset order, whole batches at a time: the last
            # acknowledged offset is where the partition is done (Kafka's
            # offsets of one partition need not be consecutive, so Faust's
            # gap search is no use here).
            last = self.take_acknowledged(tp)
            offset = None if last is None else last + 1
        return app.commits.cap(tp, offset)

    async def _deliver(self, records: Mapping[TP, Sequence[Any]], generation: int) -> None:
        """Faust's own per-message path, for the other topics, while the generation lasts."""
        for tp, tp_records in records.items():
            for record in tp_records:
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return
                await self.deliver(tp, record)


class CountingApp(HookedApp):
    """A Faust app whose consumer reads the counted topic in batches and commits no further than the counts."""

    consumer_class = CountingConsumer

    def __init__(self, *args: Any, counted_topic: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted_topic = counted_topic
        self.commits = Commits(counted_topic)
        self.handed_over: dict[TP, tuple[float, int]] = {}
        """Per events partition: when its last batch was counted (monotonic), and in which generation."""
        self.batch_handler: BatchHandler | None = None
        self.changelog: Changelog | None = None
        self.batch_max = 50_000
        self.batch_within_s = 1.0

    def count_batches(self, handler: BatchHandler, changelog: Changelog, *, max_records: int, within_s: float) -> None:
        """Hand the counted topic to ``handler`` in batches; ack each once ``changelog`` is confirmed."""
        self.batch_handler, self.changelog = handler, changelog
        self.batch_max, self.batch_within_s = max_records, within_s

    def assigned(self) -> list[TP]:
        """The counted topic's partitions assigned to this worker (none while the consumer is not up)."""
        try:
            return [tp for tp in self.consumer.assignment() if tp.topic == self.counted_topic]
        except Exception:
            return []

    def lag(self) -> dict[int, int]:
        """Per assigned partition whose end and position are known: the events on it not yet counted."""
        lag = {}
        for tp in self.assigned():
            highwater = self.consumer.highwater(tp)  # None until the fetcher has seen the partition
            counted_next = self.commits.next_offset(tp.partition)
            if highwater is not None and counted_next is not None:
                lag[tp.partition] = max(highwater - counted_next, 0)
        return lag
