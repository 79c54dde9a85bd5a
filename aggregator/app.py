"""The Faust app, assembled in one place.

Phases, for every batch of records the consumer hands over (aggregator.consume:
the events topic is read in batches off Faust's fetch loop), partition by partition:

0. complete (aggregator.gaps)    holes in what was delivered read again from Kafka
1. decode   (aggregator.decode)  bytes -> positioned LabelEvents; junk dropped, counted, logged
2. count    (aggregator.count)   daily and hourly counters, one table update per changed counter,
                                 exactly once; events for closed days refused as late
3. rollup   (aggregator.rollup)  changed counters remembered as absolute rows
4. write    (aggregator.write)   every ``flush_interval_s`` and at shutdown, into ClickHouse

A batch is acknowledged to Faust -- and so may have its offsets committed --
only once Kafka has confirmed every changelog record it wrote, the table's
position in the partition (``through``) included
(``ConfirmedTable.confirmed``). Faust's own flush before a commit gives up
after 0.1 s without progress and cannot see records still being handed to
the producer, so relying on it lost events when a broker was slow or a
worker left the group (the offsets were committed, the records never
arrived).

Around them: after each rebalance the counters of recent days are marked for
rewriting (a crash may have come between the changelog and the ClickHouse
write; writes are idempotent, so rewriting is always safe); counters of
closed days are deleted from the table; ``/metrics``, ``/healthz`` and
``/readyz`` are served on the worker's web port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple, cast

import faust
from faust.events import Event
from faust.streams import _current_event
from faust.types import TP, EventT, TableT

from aggregator.consume import QUIET_S, CountingApp, restart_quiet_partitions
from aggregator.count import (
    Tally,
    Windows,
    as_tally,
    count_batch,
    expired,
    first_open_day,
    since,
)
from aggregator.decode import Fetched, decode_messages
from aggregator.gaps import GapReader, complete
from aggregator.metrics import Drop, WorkerMetrics, day_totals
from aggregator.rollup import Rollup
from aggregator.settings import WorkerSettings
from aggregator.write import ClickHouseWriter, RollupWriter

log = logging.getLogger(__name__)

EXPIRY_SWEEP_S = 600.0
PRODUCER_LINGER_S = 0.01
PRODUCER_BATCH_BYTES = 512 * 1024
FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024


@contextmanager
def acting_for(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` Faust's current event while a partition's counters are touched.

    Faust's stores (RocksDB picks its per-partition database) and its changelog
    (the record's partition) both follow "the current event". Counting a batch
    touches counters of several partitions, so each partition's counters are
    touched while one of that partition's own events is current.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


CHANGELOG_WAIT_LOG_S = 10.0
EXIT_CHANGELOG_REFUSED = 75
"""Exit status of a worker whose changelog record Kafka refused (EX_TEMPFAIL): restart it."""


class ConfirmedTable(faust.Table[str, Any]):
    """A Faust table that keeps its changelog records' futures until Kafka confirms them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        future = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(future)
        return future

    async def confirmed(self) -> None:
        """Return once Kafka holds every changelog record sent so far (acks from all in-sync replicas).

        Waits as long as Kafka is away, saying so every few seconds. If Kafka
        refuses a record, the counts in memory are ahead of what a successor
        could restore, and nothing may be acknowledged after them: the process
        ends at once -- as a ``kill -9`` would, which recovery is built for --
        rather than stopping gracefully (a graceful stop commits offsets).
        """
        pending, self._unconfirmed = self._unconfirmed, []
        waited = 0.0
        while pending:
            done, still = await asyncio.wait(pending, timeout=CHANGELOG_WAIT_LOG_S)
            for future in done:
                if future.exception() is not None:
                    log.critical(
                        "Kafka refused a changelog record of table %s (%r): ending the worker now so that no "
                        "offset past it is committed; a restart resumes from what Kafka holds",
                        self.name,
                        future.exception(),
                    )
                    os._exit(EXIT_CHANGELOG_REFUSED)
            pending = list(still)
            if pending:
                waited += CHANGELOG_WAIT_LOG_S
                log.warning("waited %.0f s for Kafka to confirm %d changelog records", waited, len(pending))


async def confirm_before_ack(table: ConfirmedTable) -> None:
    """Wait for ``table``'s changelog, even when the waiting task is cancelled meanwhile.

    A shutdown cancels the consumer's task; the counts are in the table by
    then, and a successor must find them in the changelog before anything
    after them is committed, so a cancellation must not cut the wait short.
    """
    waiting = asyncio.ensure_future(table.confirmed())
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        await waiting
        raise


RECOVERY_STALL_S = 15.0
"""An active changelog partition that has records to restore but delivered none this long is restarted."""


async def restart_stalled_recovery(app: faust.App, stalled_after_s: float = RECOVERY_STALL_S) -> list[TP]:
    """Restart the restore of active changelog partitions that stopped delivering records.

    Seen about once in 30 rebalance tests under load (README, known limits):
    Faust's recovery of a partition newly given to a worker waited for
    changelog records that never came ("No event received for active tp ...
    since recovery start") and the worker never counted that partition again.
    Resuming the partition and seeking it again to where its restore stands
    makes the consumer fetch it; restoring a record twice is harmless (the
    values are absolute).
    """
    recovery: Any = cast(Any, app.tables).recovery  # the TableManager (its type hints omit it)
    if not recovery.in_recovery:
        return []
    now = time.monotonic()
    started = recovery._recovery_started_at or now
    received = recovery._active_events_received_at
    stalled = {}
    for tp, offset in list(recovery.active_offsets.items()):
        highwater = recovery.active_highwaters.get(tp)
        if offset is None or highwater is None:  # not known yet
            continue
        if highwater > offset and now - received.get(tp, started) >= stalled_after_s:
            stalled[tp] = max(offset, -1) + 1
    if not stalled:
        return []
    log.warning(
        "restore of changelog partitions %s delivered nothing for %.0f s: resuming them and seeking again to %s",
        sorted(tp.partition for tp in stalled),
        stalled_after_s,
        stalled,
    )
    for tp in stalled:
        received[tp] = now  # give the restart its own time before the next one
    app.consumer.resume_partitions(stalled)
    await app.consumer.seek_wait(stalled)
    return sorted(stalled)


class FaustCountTable:
    """A CountTable on a Faust table (memory or RocksDB store, with a changelog topic)."""

    def __init__(self, table: TableT[str, Any]) -> None:
        self._table = table

    def get(self, key: str) -> Tally | None:
        return as_tally(self._table.get(key))

    def set(self, key: str, tally: Tally) -> None:
        self._table[key] = list(tally)

    def delete(self, key: str) -> None:
        del self._table[key]

    def items(self) -> list[tuple[str, Tally]]:
        return [
            (key, tally)
            for key, value in list(self._table.items())
            if not key.startswith(THROUGH_PREFIX) and (tally := as_tally(value))
        ]

    def through(self, partition: int) -> int | None:
        """The last offset of events ``partition`` counted into this table (``aggregator.gaps``)."""
        value = self._table.get(f"{THROUGH_PREFIX}{partition}")
        return None if value is None else int(value)

    def set_through(self, partition: int, offset: int) -> None:
        """Record it, after the counters: the changelog keeps their order within a partition."""
        self._table[f"{THROUGH_PREFIX}{partition}"] = offset


THROUGH_PREFIX = "through:"
"""Keys of the table's per-partition position (counter keys start with a window, ``d`` or ``h``)."""


def create_app(settings: WorkerSettings, writer: RollupWriter | None = None) -> CountingApp:
    app = CountingApp(
        settings.app_id,
        counted_topic=settings.kafka.topic,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka.bootstrap.split(",")],
        # Named for the app in the broker's logs, metrics and quotas (Faust's default names its version).
        broker_client_id=settings.app_id,
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        table_standby_replicas=settings.standby_replicas,
        producer_acks=-1,
        # Changelog records in few, big produce requests rather than one each.
        producer_linger=PRODUCER_LINGER_S,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
    )
    events = app.topic(
        settings.kafka.topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=False,
    )
    table = ConfirmedTable(
        app,
        name="counts",
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.partitions,
        help="counters: window:label:category:dom_id -> [count, last offset, partition] (JSON)",
    )
    app.tables.add(table)
    counts = FaustCountTable(table)
    metrics = WorkerMetrics()
    windows = Windows(settings.day_tz)
    rollup = Rollup(writer or ClickHouseWriter(settings.clickhouse), settings.day_tz, metrics)
    swept_at: dict[int, float] = {}

    def open_from() -> Any:
        return first_open_day(datetime.now(settings.day_tz), settings.window_days)

    def count_partition(partition: int, messages: Sequence[Fetched]) -> None:
        dropped: list[Fetched] = []
        result = count_batch(counts, decode_messages(messages, dropped), windows, open_from())
        rollup.mark(result.changed)
        metrics.events_counted.inc(result.counted)
        metrics.events_skipped.inc(result.skipped)
        metrics.events_dropped.labels(Drop.UNDECODABLE.value).inc(len(dropped))
        if result.late:
            metrics.events_dropped.labels(Drop.LATE.value).inc(len(result.late))
            first = result.late[0]
            log.warning(
                "refused %d late events in partition %d (windows close after %d days; replay recovers them), "
                "first at offset %d for %s",
                len(result.late),
                partition,
                settings.window_days,
                first.offset,
                first.event,
            )
        if time.monotonic() - swept_at.setdefault(partition, time.monotonic()) > EXPIRY_SWEEP_S:
            expire(partition)

    def expire(partition: int) -> None:
        swept_at[partition] = time.monotonic()
        doomed = [
            key for key, tally in expired(counts.items(), open_from(), settings.day_tz) if tally.partition == partition
        ]
        for key in doomed:
            counts.delete(key)
        if doomed:
            log.info("expired %d counters of closed days from partition %d", len(doomed), partition)

    gaps = GapReader(settings.kafka.bootstrap, settings.kafka.topic, f"{settings.app_id}-gaps")

    async def complete_partition(tp: TP, stand_in: EventT[Any], records: Sequence[Fetched]) -> Completed:
        """The partition's records to count (holes read again from Kafka) and its ``through`` after them."""
        with acting_for(stand_in):
            through = counts.through(tp.partition)
        if through is None:
            consumer: Any = app.consumer  # Faust's: it read the group's committed offsets at the assignment
            through = await gaps.start_of(tp.partition, consumer._committed_offset.get(tp)) - 1
        messages, missed = await complete(gaps, tp.partition, through, records)
        metrics.events_reread.inc(missed)
        last = max(records[-1].offset, messages[-1].offset if messages else -1)
        return Completed(stand_in, messages, max(through, last))

    async def count_fetched(gathered: Mapping[TP, Sequence[Any]], still_current: Callable[[], bool]) -> dict[TP, int]:
        """A batch off the consumer (aggregator.consume): counted, recorded, confirmed by Kafka."""
        completed = {
            tp: await complete_partition(tp, stand_in_for(app, tp, records[-1]), records)
            for tp, records in gathered.items()
        }
        if not still_current():  # a rebalance came while reading holes: the partitions' next owners count it
            log.info("a rebalance came while a batch was completed: left to the partitions' next owners")
            return {}
        # No await from here to the last set_through: counting is all or nothing for the batch.
        for tp, done in completed.items():
            with acting_for(done.stand_in):
                count_partition(tp.partition, done.messages)
                counts.set_through(tp.partition, done.through)
        await confirm_before_ack(table)
        return {tp: done.through for tp, done in completed.items()}

    # The events topic is subscribed through Faust (its partitions are
    # assigned with the table's), but read in batches (aggregator.consume).
    app.topics.add(events)
    app.count_batches(count_fetched, max_records=settings.batch_max, within_s=settings.batch_within_s)

    @app.timer(settings.flush_interval_s)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def write() -> None:
        try:
            metrics.recoveries_restarted.inc(len(await restart_stalled_recovery(app)))
            for tp in await restart_quiet_partitions(app):
                metrics.partitions_restarted.inc()
                log.warning(
                    "partition %d had events waiting but none came for %.0f s: restarted", tp.partition, QUIET_S
                )
        except Exception:  # it reads Faust's internals: never let it stop the worker
            log.exception("could not check the changelog restore and the events partitions for stalls")
        await rollup.flush()
        for tp in _assigned(app, settings.kafka.topic):
            highwater = app.consumer.highwater(tp)  # None until the fetcher has seen the partition
            counted_next = app.confirmed_next.get(tp.partition)
            if highwater is not None and counted_next is not None:
                metrics.consumer_lag.labels(str(tp.partition)).set(max(highwater - counted_next, 0))

    @app.on_rebalance_complete.connect
    async def rewrite_recent(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        recent = since(counts.items(), open_from(), settings.day_tz)
        rollup.mark(recent)
        app.confirmed_next.clear()  # a new generation: partitions start again from their committed offsets
        log.info("rebalance complete: %d counters of open days marked for rewrite", len(recent))

    @app.on_before_shutdown.connect
    async def final_flush(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await gaps.close()
        written = await rollup.flush(force=True)
        log.info("shutdown: wrote %d pending counters", written)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        owned = {tp.partition for tp in _assigned(app, settings.kafka.topic)}
        metrics.sample_days(lambda: day_totals(counts.items(), owned, open_from()))
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        state = {
            "rebalancing": bool(app.rebalancing),
            "clickhouse_writes_failing": rollup.failing,
            "pending_rows": rollup.pending,
            "assigned_partitions": sorted(tp.partition for tp in _assigned(app, settings.kafka.topic)),
        }
        ready = not state["rebalancing"] and not state["clickhouse_writes_failing"]
        return web.json(state, status=200 if ready else 503)

    return app


class Completed(NamedTuple):
    stand_in: EventT[Any]
    """One of the partition's events, Faust's current event while its counters are touched (``acting_for``)."""
    messages: Sequence[Fetched]
    through: int


def stand_in_for(app: faust.App, tp: TP, record: Any) -> EventT[Any]:
    """A Faust event for one of a partition's records (aiokafka's), to act for it (``acting_for``)."""
    consumer: Any = app.consumer
    return Event(app, None, None, None, consumer._to_message(tp, record))


def _assigned(app: faust.App, topic: str) -> list[TP]:
    try:
        return [tp for tp in app.consumer.assignment() if tp.topic == topic]
    except Exception:
        return []
