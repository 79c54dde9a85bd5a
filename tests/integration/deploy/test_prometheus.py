"""A real Prometheus (Debian's 2.42) scraping ``tally ingest`` and ``tally worker`` with the shipped configuration.

deploy/prometheus/prometheus.yml is adapted only in its targets: each job's
``dns_sd_configs`` (compose service names) becomes ``static_configs`` on the
loopback ports of this test's processes; ``global``, ``rule_files`` and every
job's name and ``metrics_path`` stay as shipped. Through Prometheus's HTTP
API: every target is up, the alert rules load and evaluate without error, and
every series the dashboards' Prometheus panels and the alert rules select
exists, with the labels they group or match on.

No series needs an exception: the counters that count only faults
(``tally_ingest_publish_failed_total``, ``tally_worker_write_failures_total``,
``tally_worker_events_dropped_total``, ``tally_ingest_events_dropped_total``)
are created at 0, for every reason, when the process starts. The one series
that appears only with traffic, ``tally_worker_consumer_lag`` (a partition's
lag once the worker has counted from it), comes from the event sent first.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.dashboards import TimeRange
from stack.ports import free_port
from stack.processes import http_status
from tests.support.prometheus import PROMETHEUS, api, require
from tests.support.promql import (
    ALERT_NAMES,
    PROMETHEUS_DIR,
    PROMETHEUS_QUERIES,
    TARGET_LABELS,
    Selector,
    query_selectors,
)
from tests.support.servers import Services, daily_stats, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

INTERVAL = "1s"
"""Scrape and evaluation interval here (shipped: 15s), so the test waits seconds for samples and evaluations."""
NEVER_EVALUATED = "0001-01-01T00:00:00Z"
"""The ``lastEvaluation`` of a rule not evaluated yet."""


def adapted_config(shipped: dict[str, Any], targets: dict[str, str]) -> dict[str, Any]:
    """The shipped configuration with each job's DNS discovery replaced by ``targets[job]`` (host:port)."""
    config = {**shipped, "global": {**shipped["global"], "scrape_interval": INTERVAL, "evaluation_interval": INTERVAL}}
    jobs = []
    for job in shipped["scrape_configs"]:
        adapted = {key: value for key, value in job.items() if key != "dns_sd_configs"}
        adapted["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        jobs.append(adapted)
    config["scrape_configs"] = jobs
    return config


def start_prometheus(services: Services, workdir: Path, config: dict[str, Any]) -> str:
    """Prometheus on a free loopback port, its data in ``workdir``; its URL once ready."""
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for rule_file in config["rule_files"]:  # as shipped: beside the configuration
        shutil.copy(PROMETHEUS_DIR / rule_file, workdir / rule_file)
    url = f"http://127.0.0.1:{free_port()}"
    services.process("prometheus").start_and_wait(
        [
            require(PROMETHEUS),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        ready=lambda: http_status(f"{url}/-/ready") == 200,
    )
    return url


def missing(url: str, selector: Selector) -> str | None:
    """Why ``selector`` finds nothing on Prometheus at ``url`` (no series, or not the labels read), else None."""
    series = api(url, "/api/v1/series", **{"match[]": selector.text})
    if not series:
        return f"no series {selector.text}"
    labels = {name for labels in series for name in labels} | TARGET_LABELS
    if not selector.labels <= labels:
        return f"{selector.text} has no label {sorted(selector.labels - labels)}"
    return None


def test_prometheus_scrapes_every_series_the_dashboards_and_alerts_read(services: Services, tmp_path: Path) -> None:
    services.start_ingest()
    services.start_worker()
    with urllib.request.urlopen(f"{services.ingest_url}/track/?labels=signup:forms:btn1|home", timeout=10) as answer:
        assert answer.status == 202
    eventually(lambda: sum(daily_stats(services.clickhouse).values()) == 2, timeout_s=60)

    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {
        "tally-ingest": f"127.0.0.1:{services.ingest_port}",
        "tally-worker": f"127.0.0.1:{services.worker_ports['1']}",
    }
    assert {job["job_name"] for job in shipped["scrape_configs"]} == targets.keys()
    url = start_prometheus(services, tmp_path / "prometheus", adapted_config(shipped, targets))

    def scraped() -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = api(url, "/api/v1/targets", state="active")["activeTargets"]
        return active if all(t["health"] != "unknown" for t in active) else []

    active = eventually(scraped, timeout_s=30)
    jobs = shipped["scrape_configs"]
    assert {(t["labels"]["job"], t["scrapeUrl"]) for t in active} == {
        (job["job_name"], f"http://{targets[job['job_name']]}{job['metrics_path']}") for job in jobs
    }
    assert [(t["scrapeUrl"], t["health"], t["lastError"]) for t in active if t["health"] != "up"] == []
    up = api(url, "/api/v1/query", query="up")["result"]
    assert sorted((s["metric"]["job"], s["value"][1]) for s in up) == [("tally-ingest", "1"), ("tally-worker", "1")]

    def evaluated() -> list[dict[str, Any]]:
        rules = [rule for group in api(url, "/api/v1/rules")["groups"] for rule in group["rules"]]
        return rules if rules and all(rule["lastEvaluation"] != NEVER_EVALUATED for rule in rules) else []

    rules = eventually(evaluated, timeout_s=30)
    assert sorted(rule["name"] for rule in rules) == sorted(ALERT_NAMES)
    assert [(rule["name"], rule["health"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []

    now = datetime.now(UTC)
    last_hour = TimeRange(now - timedelta(hours=1), now)  # fills in $__rate_interval; ranges do not change the names
    selectors = {s.text: s for query in PROMETHEUS_QUERIES for s in query_selectors(query, last_hour)}

    def absent() -> list[str]:
        return [why for selector in selectors.values() if (why := missing(url, selector))]

    deadline = time.monotonic() + 30  # the worker measures its lag once a flush interval: a few scrapes
    while (gaps := absent()) and time.monotonic() < deadline:
        time.sleep(1)
    assert gaps == []
