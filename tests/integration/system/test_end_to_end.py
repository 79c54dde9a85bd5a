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


def send(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers={"User-Agent": "Mozilla/5.0", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_every_keyed_request_counts_once_however_often_it_is_sent(services: Services) -> None:
    """Every way to send, keyed, each request sent one to three times (some at once): each counts once.

    The dedupe window is short (60 s), and one keyed batch carries client
    times older than it: the window runs on the partition's clock, not on
    the request's times, so its repeat is still recognised.
    """
    from concurrent.futures import ThreadPoolExecutor
    from time import time
    from urllib.parse import quote

    services.start_ingest()
    services.start_worker(TALLY_DEDUPE_WINDOW_S="60")
    url = services.ingest_url
    now_ms = int(time() * 1000)
    expected: Counter[tuple[str, str, str]] = Counter()
    sends: list[tuple[str, bytes | None, dict[str, str]]] = []
    for n in range(60):
        key = f"req-{n}-{now_ms}"
        labels = f"k{n % 5}:c:d{n % 3}|page_view|k{n % 4}:c2"
        counters = [(f"k{n % 5}", "c", f"d{n % 3}"), ("page_view", "", ""), (f"k{n % 4}", "c2", "")]
        way = n % 4
        if way == 0:
            request = (f"{url}/track/?labels={quote(labels)}", None, {"Idempotency-Key": key})
        elif way == 1:
            request = (f"{url}/track.gif?labels={quote(labels)}&idempotency_key={key}", None, {})
        elif way == 2:
            request = (f"{url}/track/?idempotency_key={key}", labels.encode(), {"Content-Type": "text/plain"})
        else:
            old = now_ms - 120_000 if n % 8 == 3 else now_ms  # older than the window
            events = [{"label": label, "category": cat, "dom_id": dom, "ts": old} for label, cat, dom in counters]
            body = json.dumps({"events": events}).encode()
            request = (f"{url}/track/", body, {"Content-Type": "application/json", "Idempotency-Key": key})
        expected.update(counters)
        sends += [request] * (1 + n % 3)
    for _ in range(20):  # unkeyed: every send counts
        sends.append((f"{url}/track/?labels=plain", None, {}))
        expected[("plain", "", "")] += 1
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda r: send(*r), sends))
    assert set(statuses) <= {200, 202}, Counter(statuses)
    assert eventually(lambda: daily_stats(services.clickhouse) == expected, timeout_s=60)
