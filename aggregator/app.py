"""The Faust app, assembled in one place.

The stages an event passes, in order:

1. consume  (aggregator.consume)  the events topic read in batches off Faust's fetch loop
2. complete (aggregator.gaps)     holes in what was delivered read again from Kafka
3. decode   (aggregator.decode)   bytes -> positioned records of LabelEvents; junk dropped, counted, logged
4. dedupe   (aggregator.dedupe)   repeats of a keyed request within TALLY_DEDUPE_WINDOW_S dropped
5. count    (aggregator.count)    daily and hourly counters in the table (aggregator.table), exactly once
6. rollup   (aggregator.rollup)   changed counters remembered as absolute rows
7. write    (aggregator.write)    every ``flush_interval_s`` and at shutdown, into ClickHouse

Stages 2 to 6 run per batch (aggregator.batch). A batch's offsets are
committed only after Kafka confirmed its changelog records, and never past
what was counted (aggregator.commit).

Around them: timers restart what stalled (aggregator.recovery) and measure
the lag; after each rebalance the counters of open days are marked for
rewriting (a crash may have come between the changelog and the ClickHouse
write; writes are idempotent, so rewriting is always safe); ``/metrics``,
``/healthz`` and ``/readyz`` are served on the worker's web port
(aggregator.web).
"""

from __future__ import annotations

import logging
from typing import Any

from aggregator.batch import BatchCounter
from aggregator.consume import CountingApp
from aggregator.count import since
from aggregator.dedupe import Dedupe
from aggregator.faust_internals import check_versions
from aggregator.gaps import GapReader
from aggregator.metrics import WorkerMetrics
from aggregator.recovery import restart_stalled
from aggregator.rollup import Rollup
from aggregator.settings import WorkerSettings
from aggregator.table import ConfirmedTable, FaustCountTable
from aggregator.web import add_pages
from aggregator.write import ClickHouseWriter, RollupWriter

log = logging.getLogger(__name__)

PRODUCER_LINGER_S = 0.01
PRODUCER_BATCH_BYTES = 512 * 1024
FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024


def create_app(settings: WorkerSettings, writer: RollupWriter | None = None) -> CountingApp:
    """The worker: consume -> complete -> decode -> dedupe -> count -> rollup -> write; commit after confirm.

    Refuses to start on a faust-streaming or aiokafka it is not proved with
    (aggregator.faust_internals). ``writer`` defaults to ClickHouse's, closed
    at shutdown after the last flush.
    """
    check_versions()
    app = _faust_app(settings)
    table = ConfirmedTable(
        app,
        name="counts",
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.kafka.partitions,
        help="counters: window:label:category:dom_id -> [count, last offset, partition]; "
        "seen:partition:idempotency key -> [offset, fingerprint, time] (JSON)",
    )
    app.tables.add(table)
    counts = FaustCountTable(table)
    metrics = WorkerMetrics()
    clickhouse: ClickHouseWriter | None = None
    if writer is None:
        writer = clickhouse = ClickHouseWriter(settings.clickhouse)
    rollup = Rollup(writer, settings.day_tz, metrics)
    gaps = GapReader(settings.kafka.bootstrap, settings.kafka.topic, f"{settings.app_id}-gaps")
    dedupe = Dedupe(counts, settings.dedupe_window_s * 1000)
    counter = BatchCounter(app, counts, dedupe, gaps, rollup, metrics, settings)

    # The events topic is subscribed through Faust (its partitions are
    # assigned with the table's), but read in batches (aggregator.consume).
    app.topics.add(
        app.topic(
            settings.kafka.topic,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.kafka.partitions,
            internal=False,
        )
    )
    app.count_batches(counter, table, max_records=settings.batch_max, within_s=settings.batch_within_s)

    # faust's decorators are untyped
    @app.timer(settings.flush_interval_s)  # type: ignore[untyped-decorator]
    async def restart_what_stalled() -> None:
        await restart_stalled(app, metrics)

    @app.timer(settings.flush_interval_s)  # type: ignore[untyped-decorator]
    async def write() -> None:
        await rollup.flush()

    @app.timer(settings.flush_interval_s)  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        metrics.set_lag(app.lag())

    @app.on_rebalance_complete.connect
    async def rewrite_recent(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        recent = since(counts.items(), counter.first_open_day(), settings.day_tz)
        rollup.mark(recent)
        dedupe.forget()  # partitions moved: each one's keys are read again from the table when next counted
        app.commits.new_generation()  # partitions start again from their committed offsets
        log.info("rebalance complete: %d counters of open days marked for rewrite", len(recent))

    @app.on_before_shutdown.connect
    async def final_flush(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await gaps.close()
        written = await rollup.flush(force=True)
        log.info("shutdown: wrote %d pending counters", written)
        if clickhouse is not None:
            clickhouse.close()

    add_pages(app, counts, dedupe, rollup, metrics, counter.first_open_day)
    return app


def _faust_app(settings: WorkerSettings) -> CountingApp:
    return CountingApp(
        settings.app_id,
        counted_topic=settings.kafka.topic,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka.bootstrap.split(",")],
        # Named for the app in the broker's logs, metrics and quotas (Faust's default names its version).
        broker_client_id=settings.app_id,
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication,
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
