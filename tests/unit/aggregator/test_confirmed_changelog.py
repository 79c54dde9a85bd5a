"""A batch is acknowledged (its offsets may be committed) only once Kafka holds its changelog records;
a restore of the changelog, or an events partition, that stops delivering is restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import SimpleNamespace

import faust
import pytest
from faust.types import TP

from aggregator import table as worker_table
from aggregator.commit import Commits, commit_cap, confirm_before_ack
from aggregator.faust_internals import Restore
from aggregator.recovery import restart_quiet_partitions, restart_stalled_restore
from aggregator.table import ConfirmedTable


def table() -> ConfirmedTable:
    app = faust.App("test-confirmed", broker="memory://", store="memory://")
    return ConfirmedTable(app, name="counts", default=None, beacon=app.tables.beacon, partitions=1)


def test_confirmed_returns_once_every_record_sent_so_far_is_in_kafka() -> None:
    asyncio.run(_confirmed_waits_for_every_record())


async def _confirmed_waits_for_every_record() -> None:
    counts = table()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    counts._unconfirmed.extend([first, second])
    waiting = asyncio.ensure_future(counts.confirmed())
    first.set_result(None)
    await asyncio.sleep(0.01)
    assert not waiting.done()
    second.set_result(None)
    await asyncio.wait_for(waiting, 1)
    assert counts._unconfirmed == []


def test_a_refused_record_ends_the_process_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []

    def exit_now(status: int) -> None:
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(worker_table.os, "_exit", exit_now)

    async def refused_record() -> None:
        counts = table()
        refused = asyncio.get_running_loop().create_future()
        refused.set_exception(RuntimeError("NotEnoughReplicas"))
        counts._unconfirmed.append(refused)
        await counts.confirmed()

    with pytest.raises(SystemExit):
        asyncio.run(refused_record())
    assert exits == [worker_table.EXIT_CHANGELOG_REFUSED]


class SlowChangelog:
    def __init__(self) -> None:
        self.kafka_took_it = asyncio.Event()
        self.waits_done = 0

    async def confirmed(self) -> None:
        await self.kafka_took_it.wait()
        self.waits_done += 1


def test_a_cancelled_count_still_waits_for_its_changelog_before_anything_is_acknowledged() -> None:
    asyncio.run(_cancelled_agent_waits())


async def _cancelled_agent_waits() -> None:
    changelog = SlowChangelog()
    agent = asyncio.ensure_future(confirm_before_ack(changelog))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    agent.cancel()  # a shutdown cancels the consumer task that counts
    await asyncio.sleep(0.05)
    assert not agent.done(), "the agent ended (and its batch was acknowledged) before Kafka held its changelog"
    changelog.kafka_took_it.set()
    with pytest.raises(asyncio.CancelledError):
        await agent
    assert changelog.waits_done == 1


class FakeConsumer:
    def __init__(self) -> None:
        self.resumed: set[TP] = set()
        self.seeks: dict[TP, int] = {}

    def resume_partitions(self, tps: Mapping[TP, int]) -> None:
        self.resumed.update(tps)

    async def seek_wait(self, offsets: Mapping[TP, int]) -> None:
        self.seeks.update(offsets)


def test_a_stalled_restore_is_restarted_where_it_stands() -> None:
    """Only active changelog partitions with records to restore and nothing delivered for a while."""
    stuck, progressing, done, unknown = (TP("app-counts-changelog", n) for n in (2, 0, 3, 4))
    now = time.monotonic()
    restore = Restore(
        offsets={stuck: -1, progressing: 40, done: 106, unknown: -1},
        highwaters={stuck: 233, progressing: 107, done: 106, unknown: None},
        started_at=now - 60,
        received_at={progressing: now - 1},
    )
    consumer = FakeConsumer()

    restarted = asyncio.run(restart_stalled_restore(restore, consumer, stalled_after_s=15))

    assert restarted == [stuck]
    assert consumer.resumed == {stuck} and consumer.seeks == {stuck: 0}
    assert asyncio.run(restart_stalled_restore(restore, consumer, stalled_after_s=15)) == []  # its own time again


def test_commits_never_pass_the_counts_kafka_confirmed() -> None:
    """Faust acks events its stream skipped during a rebalance; the commit must not cover them."""
    events, changelog = TP("events", 5), TP("app-counts-changelog", 5)
    confirmed = {5: 6669}
    assert commit_cap(6698, events, "events", confirmed) == 6669  # 6669..6697 acked by Faust, never counted
    assert commit_cap(6600, events, "events", confirmed) == 6600  # behind the counts: as Faust says
    assert commit_cap(None, events, "events", confirmed) is None
    assert commit_cap(12, TP("events", 4), "events", confirmed) is None  # nothing counted in partition 4
    assert commit_cap(6698, changelog, "events", confirmed) == 6698  # other topics: Faust's own


class FakeEventsConsumer:
    flow_active = True

    def __init__(self, assigned: list[TP], ends: dict[TP, int], committed: dict[TP, int]) -> None:
        self.assigned, self.ends, self.committed = assigned, ends, committed
        self.resumed: set[TP] = set()
        self.seeks: dict[TP, int] = {}

    def assignment(self) -> list[TP]:
        return self.assigned

    def committed_offset(self, tp: TP) -> int | None:
        return self.committed.get(tp)

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    def resume_partitions(self, tps: dict[TP, int]) -> None:
        self.resumed.update(tps)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks[tp] = offset


def test_an_events_partition_with_events_waiting_that_hands_nothing_over_is_restarted() -> None:
    """Seen after a rebalance: one partition never fetched again while the others were."""
    quiet, busy, idle, changelog = TP("events", 1), TP("events", 2), TP("events", 3), TP("app-counts-changelog", 1)
    now = time.monotonic()
    consumer = FakeEventsConsumer(
        [quiet, busy, idle, changelog],
        ends={quiet: 900, busy: 500, idle: 70},
        committed={quiet: 800, busy: 400, idle: 70},
    )
    commits = Commits("events")
    commits.confirmed_next[1] = 850
    app = SimpleNamespace(
        consumer=consumer,
        rebalancing=False,
        consumer_generation_id=4,
        counted_topic="events",
        commits=commits,
        handed_over={quiet: (now - 30, 4), busy: (now - 1, 4), idle: (now - 30, 4)},
    )

    assert asyncio.run(restart_quiet_partitions(app, quiet_s=10)) == [quiet]  # type: ignore[arg-type]
    assert consumer.resumed == {quiet} and consumer.seeks == {quiet: 850}  # where its counts stand
    assert asyncio.run(restart_quiet_partitions(app, quiet_s=10)) == []  # type: ignore[arg-type]  # its own time again

    app.handed_over[busy] = (now - 30, 3)  # quiet since before the last rebalance: its time starts now
    assert asyncio.run(restart_quiet_partitions(app, quiet_s=10)) == []  # type: ignore[arg-type]
    app.rebalancing = True
    app.handed_over[quiet] = (now - 30, 4)
    assert asyncio.run(restart_quiet_partitions(app, quiet_s=10)) == []  # type: ignore[arg-type]  # never mid-rebalance
