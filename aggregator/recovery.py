"""Restarting what stalled: a changelog restore that delivers nothing, an events partition that hands nothing over.

Both are checked on a timer (``restart_stalled``). Under load after a
rebalance, Faust sometimes stops fetching a partition it owns: the restore of
a changelog partition newly given to a worker waits for records that never
come ("No event received for active tp ... since recovery start"), or an
events partition that stayed with the same worker is never fetched again
while the others are. Either way that partition is never counted again.
Resuming the partition and seeking it again to where it stands makes the
consumer fetch it. Reading a record twice is harmless: restored values are
absolute, and counters skip events they hold (aggregator.count); a hole is
read again (aggregator.gaps). See docs/reliability.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import faust
from faust.types import TP

from aggregator.consume import CountingApp
from aggregator.faust_internals import Restore, active_restore
from aggregator.metrics import WorkerMetrics

log = logging.getLogger(__name__)

RECOVERY_STALL_S = 15.0
"""An active changelog partition that has records to restore but delivered none this long is restarted."""
QUIET_S = 10.0
"""An events partition with events waiting that had no batch counted this long (outside rebalances) is restarted."""


async def restart_stalled(app: CountingApp, metrics: WorkerMetrics) -> None:
    """Restart the stalled restores and the quiet events partitions, counting each restart."""
    try:
        metrics.recoveries_restarted.inc(len(await restart_stalled_recovery(app)))
        for tp in await restart_quiet_partitions(app):
            metrics.partitions_restarted.inc()
            log.warning("partition %d had events waiting but none came for %.0f s: restarted", tp.partition, QUIET_S)
    except Exception:  # it reads Faust's internals: never let it stop the worker
        log.exception("could not check the changelog restore and the events partitions for stalls")


class Seeker(Protocol):
    def resume_partitions(self, partitions: Mapping[TP, int]) -> None: ...

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None: ...


async def restart_stalled_recovery(app: faust.App, stalled_after_s: float = RECOVERY_STALL_S) -> list[TP]:
    """Restart the restore of the active changelog partitions that stopped delivering records."""
    restore = active_restore(app)
    if restore is None:
        return []
    return await restart_stalled_restore(restore, app.consumer, stalled_after_s)


async def restart_stalled_restore(restore: Restore, consumer: Seeker, stalled_after_s: float) -> list[TP]:
    """Resume and seek again, to where its restore stands, each partition of ``restore`` stalled that long."""
    now = time.monotonic()
    started = restore.started_at or now
    received = restore.received_at
    stalled = {}
    for tp, offset in list(restore.offsets.items()):
        highwater = restore.highwaters.get(tp)
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
    consumer.resume_partitions(stalled)
    await consumer.seek_wait(stalled)
    return sorted(stalled)


async def restart_quiet_partitions(app: CountingApp, quiet_s: float = QUIET_S) -> list[TP]:
    """Resume and seek again, to where its counts stand, each events partition quiet that long with events waiting.

    Quiet: no batch handed over, outside rebalances; the quiet time starts
    again at each new generation.
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
        position = app.commits.next_offset(tp.partition)
        if position is None:
            position = consumer.committed_offset(tp)
        if position is not None and ends.get(tp, 0) > position:
            stuck[tp] = position
        app.handed_over[tp] = (now, generation)
    if stuck and not app.rebalancing and consumer.flow_active:
        consumer.resume_partitions(stuck)
        for tp, position in stuck.items():
            await consumer.seek(tp, position)
    return sorted(stuck)
