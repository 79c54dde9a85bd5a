"""The whole pipeline, as a user meets it: beacons in over HTTP, counts out of
ClickHouse and out of ``/get_stats/``, through the project's own processes.
"""

import json
import urllib.request
from collections import Counter

import pytest

from tests.support.servers import Services, daily_stats, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def get(url: str) -> tuple[int, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_beacon_to_get_stats(services: Services) -> None:
    services.start_ingest()
    services.start_worker()

    status, body = get(f"{services.ingest_url}/track/?labels=signup:forms:btn1|home")
    assert 200 <= status < 300, body

    stats = eventually(lambda: get(f"{services.ingest_url}/get_stats/?dom_ids=btn1|")[1])
    assert stats == [["btn1", 1, "signup"]]
    assert daily_stats(services.clickhouse) == {("signup", "forms", "btn1"): 1, ("home", "", ""): 1}


def test_counts_stay_exact_through_kill_9_and_restart(services: Services) -> None:
    services.start_ingest()
    worker = services.start_worker()
    sent: Counter[tuple[str, str, str]] = Counter()

    def send(n: int) -> None:
        for i in range(n):
            label, dom_id = f"l{i % 7}", f"d{i % 5}"
            status, _ = get(f"{services.ingest_url}/track/?labels={label}:c:{dom_id}|page_view")
            assert status == 202
            sent[(label, "c", dom_id)] += 1
            sent[("page_view", "", "")] += 1

    send(150)
    eventually(lambda: daily_stats(services.clickhouse) == sent)
    send(100)
    worker.kill()  # kill -9: no flush, no commit, no goodbye
    send(100)
    services.start_worker()
    eventually(lambda: daily_stats(services.clickhouse) == sent, timeout_s=60)
    assert sum(sent.values()) == 700
