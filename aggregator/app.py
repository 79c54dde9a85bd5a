"""The Faust app, assembled in one place.

Phases, for every batch of messages taken from the events topic:

1. decode   (aggregator.decode)  bytes -> positioned LabelEvents; junk dropped and logged
2. count    (aggregator.count)   one table update per changed counter, exactly once
3. rollup   (aggregator.rollup)  changed counters remembered as absolute daily rows
4. write    (aggregator.write)   every ``flush_interval_s`` and at shutdown, into ClickHouse

After each rebalance the counters of recent days are marked for rewriting,
since a crash may have come between the changelog and the ClickHouse write;
the writes are idempotent, so rewriting is always safe.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import faust
from faust.types import TableT

from aggregator.count import CountTable, Tally, as_tally, changed_since, count_batch
from aggregator.decode import Message, decode_messages
from aggregator.rollup import Rollup
from aggregator.settings import WorkerSettings
from aggregator.write import ClickHouseWriter, RollupWriter

log = logging.getLogger(__name__)


class FaustCountTable:
    """A CountTable on a Faust table: each set goes to the changelog partition of its counter.

    ``Table.__setitem__`` sends to the partition of the *current* event, which
    for a batch is whichever event came last; a counter must go to its own.
    """

    def __init__(self, table: TableT[str, Any]) -> None:
        self._table = table

    def get(self, key: str) -> Tally | None:
        return as_tally(self._table.data.get(key))

    def set(self, key: str, tally: Tally) -> None:
        self._table.data[key] = tally
        self._table.send_changelog(tally.partition, key, list(tally))

    def items(self) -> list[tuple[str, Tally]]:
        return [(key, tally) for key, value in list(self._table.data.items()) if (tally := as_tally(value))]


def create_app(settings: WorkerSettings, writer: RollupWriter | None = None) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka.bootstrap.split(",")],
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        web_enabled=False,
    )
    events = app.topic(
        settings.kafka.topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=False,
    )
    table = app.Table(
        "counts",
        default=None,
        partitions=settings.partitions,
        help="counters: day:label:category:dom_id -> [count, last offset, partition] (JSON)",
    )
    counts: CountTable = FaustCountTable(table)
    rollup = Rollup(writer or ClickHouseWriter(settings.clickhouse))

    @app.agent(events, name="count")
    async def count(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            messages = (Message(e.message.partition, e.message.offset, e.message.value) for e in batch)
            result = count_batch(counts, decode_messages(messages), settings.day_tz)
            rollup.mark(result.changed)
            if result.skipped:
                log.info("skipped %d events already counted (replayed after a restart)", result.skipped)

    @app.timer(settings.flush_interval_s)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def write() -> None:
        await rollup.flush()

    @app.on_rebalance_complete.connect
    async def rewrite_recent(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        first_day = datetime.now(settings.day_tz).date() - timedelta(days=settings.rewrite_days - 1)
        recent = changed_since(counts.items(), first_day)
        rollup.mark(recent)
        log.info("rebalance complete: %d recent counters marked for rewrite", len(recent))

    @app.on_before_shutdown.connect
    async def final_flush(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        written = await rollup.flush(force=True)
        log.info("shutdown: wrote %d pending counters", written)

    return app
