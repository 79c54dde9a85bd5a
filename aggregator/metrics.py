"""What a worker tells Prometheus, on its own registry (one per app, so tests can run several)."""

from __future__ import annotations

import time
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Drop(StrEnum):
    """Why an event on the topic was not counted."""

    UNDECODABLE = "undecodable"
    """Not a valid event of a known wire version."""
    LATE = "late"
    """For a day whose window has closed; recoverable by replay."""


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_counted = Counter("tally_worker_events_counted", "Events added to a count", registry=r)
        self.events_skipped = Counter(
            "tally_worker_events_skipped", "Events seen again after a restart, already in their count", registry=r
        )
        self.events_dropped = Counter("tally_worker_events_dropped", "Events not counted", ["reason"], registry=r)
        self.rows_written = Counter("tally_worker_rows_written", "Roll-up rows written to ClickHouse", registry=r)
        self.write_failures = Counter("tally_worker_write_failures", "Failed roll-up writes (retried)", registry=r)
        self.flush_seconds = Histogram(
            "tally_worker_flush_seconds",
            "Time to write one flush to ClickHouse",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.pending_rows = Gauge("tally_worker_pending_rows", "Changed counters not yet written", registry=r)
        self.last_flush = Gauge(
            "tally_worker_last_flush_timestamp_seconds", "When ClickHouse last took a flush (epoch s)", registry=r
        )
        self.seconds_since_flush = Gauge(
            "tally_worker_seconds_since_flush", "Seconds since ClickHouse last took a flush", registry=r
        )
        self.seconds_since_flush.set_function(self._since_flush)
        self._flushed_at = 0.0
        self.consumer_lag = Gauge(
            "tally_worker_consumer_lag", "Events on the topic not yet counted", ["partition"], registry=r
        )
        for reason in Drop:
            self.events_dropped.labels(reason.value)

    def flushed(self, rows: int, seconds: float) -> None:
        self._flushed_at = time.time()
        self.last_flush.set(self._flushed_at)
        self.rows_written.inc(rows)
        self.flush_seconds.observe(seconds)

    def _since_flush(self) -> float:
        return 0.0 if self._flushed_at == 0 else time.time() - self._flushed_at

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
