"""Events published straight to Kafka with exactly what was acked remembered, and the check that the
workers counted exactly that (daily and hourly, and that it stays so)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from ingest.publish import KafkaPublisher, PublishSettings
from schema.event import LabelEvent
from schema.settings import ClickHouseSettings, clickhouse_client
from tests.support.servers import Services, daily_stats

Key = tuple[str, str, str]


class Load:
    """Publishes events for 40 counters in the background, remembering exactly what Kafka acked."""

    def __init__(self, services: Services, seed: int) -> None:
        # Generous waits: on a busy CI machine a 200 ms metadata wait fails a
        # publish, and a load that stops proves less (ingest's own limits are
        # tested in test_publish.py).
        patient = PublishSettings(delivery_timeout_ms=30_000, max_block_ms=10_000)
        self.publisher = KafkaPublisher(services.stack.settings.kafka.bootstrap, services.topic, patient)
        self.sent: Counter[Key] = Counter()
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def batch(self, n: int, ts_ms: int | None = None) -> list[LabelEvent]:
        now = ts_ms if ts_ms is not None else time.time_ns() // 1_000_000
        return [
            LabelEvent(f"label{self.rng.randrange(8)}", f"c{self.rng.randrange(2)}", f"d{self.rng.randrange(3)}", now)
            for _ in range(n)
        ]

    async def publish(self, events: list[LabelEvent]) -> None:
        await self.publisher.publish(events)
        self.sent.update((e.label, e.category, e.dom_id) for e in events)

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.publish(self.batch(50))
            await asyncio.sleep(0.02)

    @contextmanager
    def running(self) -> Iterator[Load]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.publisher.close()


def hourly_totals(settings: ClickHouseSettings) -> Counter[Key]:
    with clickhouse_client(settings) as client:
        rows = client.execute("SELECT label, category, dom_id, counter FROM hourly_stats")
    totals: Counter[Key] = Counter()
    for label, category, dom_id, counter in rows:
        totals[(label, category, dom_id)] += counter
    return totals


def assert_exact(services: Services, sent: Counter[Key], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s

    def caught_up() -> bool:
        # Daily and hourly rows of one flush are two INSERTs: wait for both.
        return daily_stats(services.clickhouse) == sent and hourly_totals(services.clickhouse) == sent

    while not caught_up() and time.monotonic() < deadline:
        time.sleep(0.5)
    counted = daily_stats(services.clickhouse)
    differences = {
        k: (sent[k], counted.get(k, 0)) for k in sent.keys() | counted.keys() if sent[k] != counted.get(k, 0)
    }
    assert differences == {}, (
        f"(sent, counted) differ for {len(differences)} counters: {dict(sorted(differences.items())[:5])}\n"
        + "\n".join(_history(services.clickhouse, k) for k in sorted(differences)[:5])
    )
    assert hourly_totals(services.clickhouse) == sent
    time.sleep(2)  # and it stays so: no late double count
    assert daily_stats(services.clickhouse) == sent


def _history(settings: ClickHouseSettings, key: Key) -> str:
    """Every row written for a counter's days, in version order: where a wrong count came from."""
    with clickhouse_client(settings) as client:
        rows = client.execute(
            "SELECT day, counter, version, written_at FROM daily_counts"
            " WHERE label = %(l)s AND category = %(c)s AND dom_id = %(d)s ORDER BY version, written_at",
            {"l": key[0], "c": key[1], "d": key[2]},
        )
    return f"{key}: " + ", ".join(f"{counter}@{version} ({written:%H:%M:%S})" for _, counter, version, written in rows)
