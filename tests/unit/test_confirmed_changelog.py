"""A batch is acknowledged (its offsets may be committed) only once Kafka holds its changelog records."""

from __future__ import annotations

import asyncio

import faust
import pytest

from aggregator import app as worker_app
from aggregator.app import ConfirmedTable, confirm_before_ack


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

    monkeypatch.setattr(worker_app.os, "_exit", exit_now)

    async def refused_record() -> None:
        counts = table()
        refused = asyncio.get_running_loop().create_future()
        refused.set_exception(RuntimeError("NotEnoughReplicas"))
        counts._unconfirmed.append(refused)
        await counts.confirmed()

    with pytest.raises(SystemExit):
        asyncio.run(refused_record())
    assert exits == [worker_app.EXIT_CHANGELOG_REFUSED]


class SlowChangelog:
    def __init__(self) -> None:
        self.kafka_took_it = asyncio.Event()
        self.waits_done = 0

    async def confirmed(self) -> None:
        await self.kafka_took_it.wait()
        self.waits_done += 1


def test_a_cancelled_agent_still_waits_for_its_changelog_before_faust_acknowledges() -> None:
    asyncio.run(_cancelled_agent_waits())


async def _cancelled_agent_waits() -> None:
    changelog = SlowChangelog()
    agent = asyncio.ensure_future(confirm_before_ack(changelog))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    agent.cancel()  # a rebalance or a shutdown; Faust acknowledges the batch when the agent ends
    await asyncio.sleep(0.05)
    assert not agent.done(), "the agent ended (and its batch was acknowledged) before Kafka held its changelog"
    changelog.kafka_took_it.set()
    with pytest.raises(asyncio.CancelledError):
        await agent
    assert changelog.waits_done == 1
