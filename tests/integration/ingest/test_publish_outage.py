"""The broker goes away mid-stream and comes back: every 2xx is on the topic, once; the rest got an
honest 503 (none of those that said nothing was recorded is on the topic); ingest takes events again
by itself once Kafka is back.

On a broker of the test's own (the shared one is never stopped), with beacons
sent through the ingest app one label per request, so each answer maps to
exactly one event.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ingest.app import create_app
from ingest.settings import IngestSettings
from schema.event import decode_record
from schema.settings import ClickHouseSettings, KafkaSettings
from stack.kafka import ensure_topic
from stack.ports import free_port
from stack.stack import Stack, StackSettings
from tests.support.kafka import read_all

pytestmark = pytest.mark.kafka

DOWN_S = 8.0
"""How long the broker stays away: longer than a publish waits, so requests do get 503s."""


def test_broker_restart_mid_stream(tmp_path: Path) -> None:
    port = free_port(pair=True)  # the broker's listener, and its controller's on the next port
    kafka_settings = KafkaSettings(bootstrap=f"127.0.0.1:{port}", topic="outage.events")
    own = Stack(StackSettings(root=tmp_path / "stack", kafka=kafka_settings, clickhouse=ClickHouseSettings(port=1)))
    own.kafka.start()
    try:
        ensure_topic(kafka_settings.bootstrap, kafka_settings.topic, 6)
        settings = IngestSettings(kafka=kafka_settings, routes=frozenset({"track"}))
        answers: dict[str, int] = {}
        recorded: dict[str, str | None] = {}
        """What each 503 said of its event: ``none`` (nothing recorded) or ``unknown``."""
        retry_after: list[str | None] = []
        back_at: list[float] = []

        def bounce() -> None:
            own.kafka.process.stop()
            time.sleep(DOWN_S)
            own.kafka.start()
            back_at.append(time.monotonic())

        with TestClient(create_app(settings)) as client:
            n = 0

            def send() -> int:
                nonlocal n
                n += 1
                label = f"beacon{n}"
                response = client.get("/track/", params={"labels": label}, headers={"User-Agent": "Mozilla/5.0"})
                answers[label] = response.status_code
                if response.status_code >= 300:
                    retry_after.append(response.headers.get("retry-after"))
                    recorded[label] = response.headers.get("x-tally-recorded")
                    assert response.json()["recorded"] == recorded[label]
                return response.status_code

            while n < 100:  # before
                send()
            bouncer = threading.Thread(target=bounce)
            bouncer.start()
            deadline = time.monotonic() + 120
            recovered = 0
            while time.monotonic() < deadline and recovered < 100:  # during, then after the broker is back
                status = send()
                recovered = recovered + 1 if back_at and status == 202 else 0
                time.sleep(0.01)
            bouncer.join()

        outcomes = Counter(answers.values())
        assert set(outcomes) <= {202, 503}, outcomes
        assert outcomes[503] > 0, f"the broker was away {DOWN_S} s and no request noticed: {outcomes}"
        assert all(r is not None and int(r) > 0 for r in retry_after)
        assert recovered == 100, (
            f"ingest did not take events again within 120 s of the outage (broker back after {DOWN_S} s): {outcomes}"
        )

        records = read_all(kafka_settings.bootstrap, kafka_settings.topic)
        on_topic = Counter(event.label for _, _, value in records for event in decode_record(value).events)
        accepted = {label for label, status in answers.items() if status == 202}
        assert {label: on_topic[label] for label in accepted} == dict.fromkeys(accepted, 1), (
            "every 2xx'd event on the topic exactly once"
        )
        assert set(recorded.values()) <= {"none", "unknown"}, recorded
        assert Counter(recorded.values())["none"] > 0, "once Kafka failed, requests were refused at once (none)"
        said_none = {label for label, said in recorded.items() if said == "none"}
        assert not said_none & set(on_topic), "a 503 that said nothing was recorded, yet its event is on the topic"
    finally:
        own.kafka.process.stop()
