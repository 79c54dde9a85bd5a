"""Recounting everything from the events topic (``tally reset``), e.g. after
a change to how events are counted.

With every worker stopped:

1. forget the workers' state: their consumer group's offsets, the table's
   changelog topic, and local state directories;
2. clear the open days' rows in ClickHouse (the workers will recount them);
3. point the consumer group at the first event that may belong to an open day
   (midnight of the oldest open day, less how far a client timestamp may lag,
   and at least twice the dedupe window: the workers rebuild their
   idempotency keys from there, as a replay does -- aggregator.replay);
4. replay every closed day the topic may still hold (``oldest_day``, from the
   topic's retention, on; aggregator.replay).

When the workers start again they rebuild the open days from there; events
of closed days they meet on the way are refused as late (the replay counted
them). Readers see the open days empty until the workers have caught up,
usually seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date, timedelta, tzinfo
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from aggregator import replay


class ResetRefused(Exception):
    """The reset cannot run (workers still running); nothing was changed."""


CLEAR_OPEN_DAYS = (
    "ALTER TABLE daily_counts DELETE WHERE day >= %(first_open)s",
    "ALTER TABLE hourly_counts DELETE WHERE day >= %(first_open)s",
)


def reset(
    admin: KafkaAdminClient,
    consumer: KafkaConsumer,
    client: Any,
    *,
    bootstrap: str,
    topic: str,
    app_id: str,
    state_dirs: list[Path],
    tz: tzinfo,
    first_open_day: date,
    max_past_s: int,
    window_s: int,
    oldest_day: date,
    on_read: Callable[[int], None] = lambda n: None,
) -> replay.Outcome | None:
    """Run the reset; return the replay of closed days, if there were any in the topic."""
    members = admin.describe_groups([app_id])[app_id]["members"]
    if members:
        raise ResetRefused(f"{len(members)} worker(s) of {app_id} are running: stop them first")
    changelogs = [t for t in admin.list_topics() if t.startswith(f"{app_id}-")]
    if changelogs:
        admin.delete_topics(changelogs)
    for state in state_dirs:
        shutil.rmtree(state, ignore_errors=True)
    for statement in CLEAR_OPEN_DAYS:
        client.execute(statement, {"first_open": first_open_day})

    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    # Back far enough for a client timestamp's lag, and for the dedupe keys of
    # twice the window before the open days (aggregator.replay.make_plan):
    # the workers decide every record they read, count those of open days.
    since = replay.midnight_ms(first_open_day, tz) - max(max_past_s, 2 * window_s) * 1000
    found = consumer.offsets_for_times({tp: since for tp in tps})
    ends = consumer.end_offsets(tps)
    start = {tp: OffsetAndMetadata(found[tp].offset if found[tp] else ends[tp], "", -1) for tp in tps}
    admin.alter_group_offsets(app_id, start)

    # Record timestamps are event times, not in offset order: the oldest day the
    # topic may hold is what retention allows, unless it has already dropped some.
    earliest = replay.earliest_complete_day(consumer, topic, tz, lead_ms=2 * window_s * 1000)
    first = max(earliest or oldest_day, oldest_day)
    last_closed = first_open_day - timedelta(days=1)
    if first > last_closed:
        return None
    return replay.replay(
        consumer, client, bootstrap, topic, first, last_closed,
        tz=tz, first_open_day=first_open_day, dry_run=False, window_ms=window_s * 1000, on_read=on_read,
    )  # fmt: skip
