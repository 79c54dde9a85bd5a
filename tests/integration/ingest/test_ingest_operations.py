"""``tally ingest`` as operated: several processes behind one port, their metrics summed, JSON logs.

The real command on a free port and a topic of its own, on the real Kafka
(and ClickHouse, which /readyz checks).
"""

import json
import os
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stack.stack import tally_command
from tests.support.kafka import on_topic
from tests.support.servers import Services, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

WORKERS = 2


def get(url: str) -> tuple[int, bytes]:
    """A request on a connection of its own, so the kernel may hand it to any worker process."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status), bytes(response.read())


def accepted(url: str) -> float:
    """The events accepted, as the process that answers the scrape reports them."""
    _, text = get(f"{url}/metrics")
    samples = {s.name: s.value for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    return samples["tally_ingest_events_accepted_total"]


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]


def test_several_processes_on_one_port_report_summed_metrics_and_log_json(services: Services) -> None:
    ingest = services.process("ingest")
    seen = ingest.log_size()
    pid = ingest.start([tally_command(), "ingest"], env=services.env(TALLY_INGEST_WORKERS=str(WORKERS)))
    ingest.wait_until(lambda: _status(f"{services.ingest_url}/readyz") == 200)
    eventually(lambda: len(children(pid)) >= WORKERS, timeout_s=30)

    sent = 60
    answers = Counter(get(f"{services.ingest_url}/track/?labels=signup:forms:btn1|home")[0] for _ in range(sent))
    assert answers == {202: sent}

    # Whichever process answers the scrape, it reports every process's events.
    scrapes = [accepted(services.ingest_url) for _ in range(10)]
    assert scrapes == [2 * sent] * 10
    assert sum(on_topic(services.stack, services.topic).values()) == 2 * sent

    multiproc_dirs = _multiproc_dirs(children(pid)[0])  # set by `tally ingest` before it starts the workers
    assert len(multiproc_dirs) == 1 and Path(multiproc_dirs[0]).is_dir()
    writers = {p.stem.rsplit("_", 1)[1] for p in Path(multiproc_dirs[0]).glob("counter_*.db")}
    assert len(writers) == WORKERS, f"each process writes its own figures: {writers}"
    ingest.stop()
    assert not Path(multiproc_dirs[0]).exists(), "ingest removes its metrics directory when it stops"

    lines = [line for line in ingest.log_since(seen).decode().splitlines() if line.strip()]
    assert lines, "ingest logged nothing"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"level", "logger", "message", "time"} <= record.keys() for record in records)
    started = [r for r in records if r["logger"] == "uvicorn.error" and "Application startup complete" in r["message"]]
    assert len(started) == WORKERS
    assert not any(r["logger"] == "ingest.access" for r in records), "no access log unless asked"


def _multiproc_dirs(pid: int) -> list[str]:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]


def _status(url: str) -> int:
    try:
        return get(url)[0]
    except OSError:
        return 0


def test_one_process_by_default(services: Services) -> None:
    ingest = services.process("ingest")
    pid = ingest.start([tally_command(), "ingest"], env=services.env())
    ingest.wait_until(lambda: _status(f"{services.ingest_url}/readyz") == 200)
    time.sleep(0.5)
    assert children(pid) == []
    assert _multiproc_dirs(pid) == [] or "PROMETHEUS_MULTIPROC_DIR" in os.environ
    assert get(f"{services.ingest_url}/track/?labels=home")[0] == 202
    assert accepted(services.ingest_url) == 1
