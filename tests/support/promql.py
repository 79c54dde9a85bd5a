"""The PromQL the project ships (the dashboards' Prometheus panels and the alert rules) and the series it reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import promql_parser
import yaml

from stack import dashboards
from tests.support.paths import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
ALERT_NAMES = [rule["alert"] for group in ALERTS["groups"] for rule in group["rules"]]
PROMETHEUS_QUERIES = [q for q in dashboards.all_queries() if q.datasource == dashboards.PROMETHEUS] + [
    dashboards.Query("alerts", rule["alert"], "A", dashboards.PROMETHEUS, rule["expr"], dashboards.PROMETHEUS)
    for group in ALERTS["groups"]
    for rule in group["rules"]
]
"""Every Prometheus panel's expression, and every alert rule's (dashboard ``alerts``, panel the alert's name)."""
TARGET_LABELS = {"instance", "job"}
"""Labels Prometheus adds to every scraped series."""
PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself for each target."""


@dataclass(frozen=True)
class Selector:
    name: str
    """The metric name."""
    labels: set[str]
    """Label names the expression relies on: the selector's matchers and the aggregations above it."""
    text: str
    """The selector as PromQL, matchers included (``up{job="tally-worker"}``)."""


def selectors(node: Any) -> Iterator[Selector]:
    """Every series selector in a PromQL tree."""
    if isinstance(node, promql_parser.VectorSelector):
        matchers = node.matchers.matchers
        text = f"{node.name}{{{','.join(str(m) for m in matchers)}}}" if matchers else node.name
        yield Selector(node.name, {m.name for m in matchers}, text)
        return
    grouping = set()
    modifier = getattr(node, "modifier", None)
    if isinstance(modifier, promql_parser.AggModifier):
        grouping = set(modifier.labels)
    children = [getattr(node, child, None) for child in ("expr", "vector_selector", "lhs", "rhs", "param")]
    for sub in [*children, *(getattr(node, "args", None) or [])]:
        if sub is not None and not isinstance(sub, (int, float, str)):
            for found in selectors(sub):
                yield Selector(found.name, found.labels | grouping, found.text)


def query_selectors(query: dashboards.Query, time_range: dashboards.TimeRange) -> list[Selector]:
    """The selectors of a panel's or an alert's expression, Grafana's interval variables filled in."""
    return list(selectors(promql_parser.parse(dashboards.promql(query.text, time_range))))
