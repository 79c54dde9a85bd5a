"""The worker's web pages, on its web port: ``/metrics``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from aggregator.consume import CountingApp
from aggregator.dedupe import Dedupe
from aggregator.metrics import WorkerMetrics, day_totals
from aggregator.rollup import Rollup
from aggregator.table import FaustCountTable


def add_pages(
    app: CountingApp,
    counts: FaustCountTable,
    dedupe: Dedupe,
    rollup: Rollup,
    metrics: WorkerMetrics,
    first_open_day: Callable[[], date],
) -> None:
    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        """Prometheus's exposition; the day totals over the partitions this worker owns."""
        owned = {tp.partition for tp in app.assigned()}
        metrics.sample_days(lambda: day_totals(counts.items(), owned, first_open_day()))
        metrics.dedupe_keys.set(dedupe.keys_held(owned))
        metrics.dedupe_oldest_key_age.set(dedupe.oldest_age_s(owned))
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """Up: the process answers."""
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Ready: not rebalancing, and ClickHouse takes its writes (503 otherwise, with the state)."""
        state = {
            "rebalancing": bool(app.rebalancing),
            "clickhouse_writes_failing": rollup.failing,
            "pending_rows": rollup.pending,
            "assigned_partitions": sorted(tp.partition for tp in app.assigned()),
        }
        ready = not state["rebalancing"] and not state["clickhouse_writes_failing"]
        return web.json(state, status=200 if ready else 503)
