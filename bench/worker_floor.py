"""The floor for Python: a raw aiokafka consume -> decode -> count loop, no Faust, no ClickHouse.

Run pinned to one core by bench.worker; prints one JSON line. It reads the
whole topic as a consumer without a group (nothing committed), decodes each
message with ``schema.event.decode`` (the worker's decoder: JSON and the
field rules) and adds it to a dict. Then, on the same core, the same decode
and count once more over the messages kept in memory: what Python does per
event when Kafka costs nothing.

    python -m bench.worker_floor --bootstrap 127.0.0.1:9092 --topic T --events N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

from schema.event import decode


async def consume(bootstrap: str, topic: str, events: int, timeout_s: float) -> dict[str, object]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=32 << 20,
        client_id="tally-bench-floor",
    )
    started = time.perf_counter()
    await consumer.start()
    counts: Counter[str] = Counter()
    values: list[bytes] = []
    seen = 0
    marks: dict[str, float] = {}
    try:
        while seen < events:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{seen} of {events} consumed after {timeout_s:.0f}s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for record in records:
                    value = record.value or b""
                    values.append(value)
                    counts[decode(value).counter_key] += 1
                seen += len(records)
            now = time.perf_counter() - started
            for name, level in (("first", 1), ("p10", 0.1 * events), ("p90", 0.9 * events)):
                if name not in marks and seen >= level:
                    marks[name] = now
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - started
    cpu = time.process_time()
    in_memory = count_in_memory(values)
    return {
        "events": seen,
        "counters": len(counts),
        "seconds": elapsed,
        "startup_s": marks["first"],
        "steady_rate": 0.8 * events / (marks["p90"] - marks["p10"]),
        "in_memory_rate": in_memory,
        "cpu_s": cpu,
    }


def count_in_memory(values: list[bytes]) -> float:
    """Decode and count ``values`` again, without Kafka: events/s."""
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    for value in values:
        counts[decode(value).counter_key] += 1
    return len(values) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=300)
    args = parser.parse_args()
    result = asyncio.run(consume(args.bootstrap, args.topic, args.events, args.timeout_s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
