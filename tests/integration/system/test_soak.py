"""The soak test, short: the whole system under mixed load and every fault, reconciled (``python -m soak``,
``make soak``, is the long run).

One run (about three minutes) on a stack of its own -- a Kafka broker and a
ClickHouse server on free ports, data under ``.stack/soak-ci/`` -- never the
local stack's servers, which it neither restarts nor stops. ``soak/harness.py``
does the work; its report is written under pytest's temporary directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from soak.harness import SESSION_TIMEOUT_S, SoakSettings, soak
from soak.report import Report
from stack.stack import CHECKOUT

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    settings = SoakSettings(
        seconds=60,
        rate=60,
        root=CHECKOUT / ".stack" / "soak-ci",
        results=Path(tmp_path_factory.mktemp("soak")),
        name="soak-ci",
        window_s=8,
        clickhouse_outage_s=15,
        worker_down_s=SESSION_TIMEOUT_S + 2,
    )
    result = soak(settings)
    print(result.text)
    yield result


def test_every_2xx_event_is_counted_once_and_nothing_else_is(report: Report) -> None:
    """2xx events == daily_stats == hourly_stats == /api/v1 == /get_stats/, per counter; the metrics agree."""
    assert report.figures["differences"] == 0, report.text
    assert report.ok, report.text
    assert report.figures["events_2xx"] > 0
    assert report.png.stat().st_size > 0 and report.txt.read_text() == report.text


def test_events_are_taken_again_after_every_fault(report: Report) -> None:
    assert report.recovered, report.text
