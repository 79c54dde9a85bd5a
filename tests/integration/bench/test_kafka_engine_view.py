"""The Kafka engine comparison's view counts what is on Tally's topic: v2 records and v1 records, exactly.

The benchmarks (bench/worker_clickhouse_kafka.py) compare Tally's worker with
ClickHouse's Kafka engine feeding a SummingMergeTree through a materialized
view; these tests read the SummingMergeTree back as a ClickHouse user would.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import date

import pytest
from clickhouse_driver.errors import ServerException

from bench.worker_clickhouse_kafka import COUNTS, QUEUE, VIEW, commit_beginning
from schema.event import LabelEvent, day_of, decode_record, encode, encode_record
from schema.settings import ClickHouseSettings, clickhouse_client
from stack.stack import Stack

DAY_MS = 86_400_000
TS = 1_765_000_000_000  # 2025-12-06 05:46:40 UTC

KAFKA_ENGINE_BUILDS = {"18.16"}
"""Builds where a Kafka table can be made: chdb-core's 26.9 lists the engine, refuses a table (system.txt)."""

Count = Counter[tuple[date, str, str, str]]


def records() -> list[bytes]:
    """v2 records, keyed and not, of one to three events, and v1 records; over two days; empty fields too."""
    a = LabelEvent("signup", "button", "hero-cta", TS)
    b = LabelEvent("docs/intro.v2", "", "", TS + 1)
    c = LabelEvent("_x-y", "nav/top.bar", "id_1.a-b", TS + DAY_MS)
    return [
        encode_record([a, b, c], "req-1_A"),
        encode_record([a, a], None),
        encode_record([c], "k"),
        encode(a),
        encode(b._replace(ts_ms=TS + DAY_MS + 5)),
        encode_record([b, c, b], None),
    ]


def expected(values: list[bytes]) -> Count:
    return Counter(
        (day_of(e.ts_ms), e.label, e.category, e.dom_id) for value in values for e in decode_record(value).events
    )


def counted(settings: ClickHouseSettings) -> Count:
    with clickhouse_client(settings) as client:
        rows = client.execute(
            "SELECT day, label, category, dom_id, sum(counter) FROM counts GROUP BY day, label, category, dom_id"
        )
    return Counter({(day, label, category, dom_id): n for day, label, category, dom_id, n in rows})


def test_the_view_counts_every_event_of_v2_and_v1_lines(clickhouse: ClickHouseSettings) -> None:
    values = records()
    with clickhouse_client(clickhouse) as client:
        client.execute(COUNTS)
        client.execute("CREATE TABLE queue (line String) ENGINE = Null")  # the Kafka table's one column
        client.execute(VIEW)
        client.execute("INSERT INTO queue (line) VALUES", [(v.decode(),) for v in values])
    assert counted(clickhouse) == expected(values)
    assert sum(expected(values).values()) == 11


def test_the_kafka_engine_counts_tallys_topic_exactly(stack: Stack, topic: str, clickhouse: ClickHouseSettings) -> None:
    from kafka import KafkaProducer

    values = records()
    bootstrap = stack.settings.kafka.bootstrap
    if stack.settings.clickhouse_version not in KAFKA_ENGINE_BUILDS:
        # What the benchmarks report as "not measured"; if this build gains the engine, measure it there too.
        with clickhouse_client(clickhouse) as client, pytest.raises(ServerException, match="Shutdown was called"):
            client.execute(QUEUE, {"brokers": bootstrap, "topic": topic, "group": f"{topic}.clickhouse"})
        return
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all")
    for i, value in enumerate(values):
        producer.send(topic, value, partition=i % 2)
    producer.flush()
    producer.close()
    group = f"{topic}.clickhouse"
    commit_beginning(bootstrap, topic, group)
    want = expected(values)
    with clickhouse_client(clickhouse) as client:
        client.execute(COUNTS)
        client.execute(QUEUE, {"brokers": bootstrap, "topic": topic, "group": group})
        client.execute(VIEW)
        try:
            deadline = time.monotonic() + 60
            while counted(clickhouse) != want and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            client.execute("DROP TABLE IF EXISTS counting")
            client.execute("DROP TABLE IF EXISTS queue")
    assert counted(clickhouse) == want
