"""What a ClickHouse user would pick instead: the Kafka table engine feeding a SummingMergeTree.

A Kafka engine table reads the events topic one message a row, as one
String column (``kafka_format = 'TabSeparated'``: a record is one line of
JSON, which has no tabs, and no backslashes either, since no field may hold
one, so TSV's unescaping leaves it as it is). A materialized view counts
each block it reads per (day, label, category, dom_id) into a
SummingMergeTree: it ARRAY JOINs the events of each record, the rows
``[label,category,dom_id,ts]`` of a v2 record (``extractAll`` of the
innermost brackets, split at the commas, quotes dropped: no field may hold a
bracket, comma or quote) or the one event of a v1 record
(``visitParamExtract*``). SQL that ClickHouse 18.16 runs (it has no
``JSONExtract``). The worker benchmark preloads v1 records; ingest, in the
system benchmark, publishes v2 records. This runs inside the ClickHouse
server (not pinned: it is the stack's server, on both cores), so its CPU
time is reported beside the wall time.

A new consumer group of this build (librdkafka's default
``auto.offset.reset``, which 18.16 does not let a table override) starts at
the end of the topic, so the group's offsets are committed at the beginning
before the table is created, as an operator replaying a topic would.

It is at-least-once: ClickHouse commits Kafka offsets after a block is
written, so a crash in between counts that block twice. That, not speed, is
why Tally has its own worker.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from bench.worker_load import Key
from bench.worker_runs import POLL_S, Bench, cpu_seconds, differences
from schema.settings import clickhouse_client

QUEUE = """
CREATE TABLE queue (line String)
ENGINE = Kafka
SETTINGS kafka_broker_list = %(brokers)s, kafka_topic_list = %(topic)s, kafka_group_name = %(group)s,
         kafka_format = 'TabSeparated', kafka_row_delimiter = '\\n', kafka_num_consumers = 1
"""
COUNTS = """
CREATE TABLE counts (day Date, label String, category String, dom_id String, counter UInt64)
ENGINE = SummingMergeTree(counter) PARTITION BY toYYYYMM(day) ORDER BY (day, label, category, dom_id)
"""
VIEW = r"""
CREATE MATERIALIZED VIEW counting TO counts AS
SELECT toDate(toDateTime(intDiv(toUInt64(event[4]), 1000)), 'UTC') AS day,
       event[1] AS label, event[2] AS category, event[3] AS dom_id, count() AS counter
FROM queue
ARRAY JOIN if(visitParamExtractUInt(line, 'v') = 1,
              [[visitParamExtractString(line, 'label'), visitParamExtractString(line, 'category'),
                visitParamExtractString(line, 'dom_id'), toString(visitParamExtractUInt(line, 'ts'))]],
              arrayMap(row -> splitByChar(',', replaceAll(substring(row, 2, length(row) - 2), '"', '')),
                       extractAll(line, '\\[[^][]+\\]'))) AS event
GROUP BY day, label, category, dom_id
"""
"""Both wire versions: v1, ``{"v":1,"label":..,"category":..,"dom_id":..,"ts":..}``, one event; v2,
``{"v":2,"key":..,"events":[[label,category,dom_id,ts],...]}``, each row of ``events`` (:mod:`schema.event`)."""


@dataclass(frozen=True)
class EngineRun:
    events: int
    counted: int
    seconds: float
    """From creating the materialized view (consumption starts) to every event counted, or to the timeout."""
    startup_s: float
    steady_rate: float
    server_cpu_s: float
    exact: bool
    error: str = ""


def run_kafka_engine(bench: Bench, timeout_s: float = 180) -> EngineRun:
    settings = bench.new_database(migrate=False)
    group = bench.new_app_id("clickhouse")
    server = bench.stack.clickhouse.process.pid()
    commit_beginning(bench.bootstrap, bench.topic, group)
    with clickhouse_client(settings) as client:
        client.execute(COUNTS)
        try:
            client.execute(QUEUE, {"brokers": bench.bootstrap, "topic": bench.topic, "group": group})
        except Exception as exc:  # an engine this build does not have, or settings it does not know
            return EngineRun(bench.events, 0, 0.0, 0.0, 0.0, 0.0, False, f"{type(exc).__name__}: {exc}"[:300])
        cpu_before = cpu_seconds(server)
        started = time.monotonic()
        client.execute(VIEW)
        samples: list[tuple[float, int]] = [(0.0, 0)]
        counted = 0
        error = ""
        try:
            while counted < bench.events:
                now = time.monotonic() - started
                if now > timeout_s:
                    error = f"{counted} of {bench.events} counted after {timeout_s:.0f}s"
                    break
                time.sleep(POLL_S)
                counted = int(client.execute("SELECT sum(counter) FROM counts")[0][0])
                samples.append((time.monotonic() - started, counted))
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(server) - cpu_before
        finally:
            # Stop consuming before anything else goes: the view, then the queue.
            client.execute("DROP TABLE IF EXISTS counting")
            client.execute("DROP TABLE IF EXISTS queue")
        totals: Counter[Key] = Counter()
        for label, category, dom_id, n in client.execute(
            "SELECT label, category, dom_id, sum(counter) FROM counts GROUP BY label, category, dom_id"
        ):
            totals[(label, category, dom_id)] = n
    if not error and counted != bench.events:
        error = f"counted {counted}, more than the {bench.events} on the topic"
    wrong = differences(bench.backlog.sent, totals)
    started_at = next((t for t, c in samples if c > 0), elapsed)
    return EngineRun(
        events=bench.events,
        counted=counted,
        seconds=elapsed,
        startup_s=started_at,
        steady_rate=_steady(samples, bench.events) if not error else 0.0,
        server_cpu_s=cpu,
        exact=not wrong and not error,
        error=error,
    )


def _steady(samples: list[tuple[float, int]], total: int) -> float:
    """Events/s from the first block written to the last: the engine writes whole blocks, so no 10-90% here."""
    first = next(t for t, c in samples if c > 0)
    last = next(t for t, c in samples if c >= total)
    first_block = next(c for _, c in samples if c > 0)
    return (total - first_block) / (last - first) if last > first else 0.0


def commit_beginning(bootstrap: str, topic: str, group: str, *, end: bool = False) -> None:
    """Commit the first offset of every partition of ``topic`` for ``group`` (the last, with ``end``).

    The group then reads from the start (or only what comes next), whatever the engine's default.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","), group_id=group, enable_auto_commit=False, client_id="tally-bench"
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        offsets = consumer.end_offsets(parts) if end else consumer.beginning_offsets(parts)
        consumer.commit({tp: OffsetAndMetadata(offsets[tp], "", -1) for tp in parts})
    finally:
        consumer.close()
