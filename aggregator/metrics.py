"""What a worker tells Prometheus, on its own registry (one per app, so tests can run several).

``tally_worker_day_events{day}`` is the reconciliation figure: the events counted into each open day,
summed over the partitions this worker owns, read from the table itself (restored from
the changelog after a crash), so it is exact and survives restarts. Summed over the workers it equals
``tally_ingest_events_accepted_by_day_total`` summed over the ingest processes, once the pipeline has
caught up (docs/reliability.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import date
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from aggregator.count import Tally
from schema.keys import day_of_daily

# The day totals scan the whole table: at most once per this many seconds, however often /metrics is read.
DAY_TOTALS_EVERY_S = 5.0


class Drop(StrEnum):
    """Why an event on the topic was not counted."""

    UNDECODABLE = "undecodable"
    """Not a valid event of a known wire version."""
    LATE = "late"
    """For a day whose window has closed; recoverable by replay."""
    DUPLICATE = "duplicate"
    """A repeat of a keyed request its partition counted within the dedupe window (aggregator.dedupe)."""
    KEY_REUSED = "key_reused"
    """A request whose idempotency key the partition counted, within the window, for other counters."""


REPEAT_REASONS = (Drop.DUPLICATE, Drop.KEY_REUSED)


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
        self.events_reread = Counter(
            "tally_worker_events_reread",
            "Events Faust's stream skipped, read again from Kafka and counted (aggregator.gaps)",
            registry=r,
        )
        self.recoveries_restarted = Counter(
            "tally_worker_recoveries_restarted",
            "Changelog partitions whose restore delivered nothing for a while and was restarted",
            registry=r,
        )
        self.partitions_restarted = Counter(
            "tally_worker_partitions_restarted",
            "Events partitions with events waiting that handed none over for a while and were restarted",
            registry=r,
        )
        self.day_events = Gauge(
            "tally_worker_day_events",
            "Events counted into each open day, over the partitions this worker owns (from its table)",
            ["day"],
            registry=r,
        )
        self._days: set[str] = set()
        self._days_at = 0.0
        self.repeats_dropped = Counter(
            "tally_worker_repeats_dropped",
            "Keyed records (a request's share of one partition) dropped as repeats, by reason",
            ["reason"],
            registry=r,
        )
        for reason in REPEAT_REASONS:
            self.repeats_dropped.labels(reason.value)
        self.repeats_past_window = Counter(
            "tally_worker_repeats_past_window",
            "Keyed records counted again: their key was counted in the partition more than the dedupe window before",
            registry=r,
        )
        self.dedupe_keys = Gauge(
            "tally_worker_dedupe_keys", "Idempotency keys held by the partitions this worker counts", registry=r
        )
        self.dedupe_oldest_key_age = Gauge(
            "tally_worker_dedupe_oldest_key_age_seconds",
            "How old (wall clock, from its record time) the oldest idempotency key this worker holds is",
            registry=r,
        )

    def sample_days(self, read: Callable[[], dict[str, int]]) -> None:
        """Refresh ``tally_worker_day_events`` from ``read()`` (see :func:`day_totals`), if not done lately."""
        if time.monotonic() - self._days_at < DAY_TOTALS_EVERY_S:
            return
        totals = read()
        for day in self._days - totals.keys():
            self.day_events.remove(day)
        for day, events in totals.items():
            self.day_events.labels(day).set(events)
        self._days = set(totals)
        self._days_at = time.monotonic()

    def set_lag(self, lag: Mapping[int, int]) -> None:
        """``tally_worker_consumer_lag`` of each partition in ``lag`` (events not yet counted)."""
        for partition, events in lag.items():
            self.consumer_lag.labels(str(partition)).set(events)

    def flushed(self, rows: int, seconds: float) -> None:
        self._flushed_at = time.time()
        self.last_flush.set(self._flushed_at)
        self.rows_written.inc(rows)
        self.flush_seconds.observe(seconds)

    def _since_flush(self) -> float:
        return 0.0 if self._flushed_at == 0 else time.time() - self._flushed_at

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def day_totals(items: Iterable[tuple[str, Tally]], partitions: Collection[int], first_day: date) -> dict[str, int]:
    """Events per open day (``YYYY-MM-DD``, from ``first_day`` on) in the daily counters of ``partitions``.

    Standby copies of other workers' partitions are left out, and so are closed days, whose counters
    leave the table partition by partition (a total that shrinks would look like lost events).
    """
    first = first_day.isoformat()
    totals: dict[str, int] = {}
    for key, tally in items:
        day = day_of_daily(key)
        if day is not None and day >= first and tally.partition in partitions:
            totals[day] = totals.get(day, 0) + tally.counter
    return totals
