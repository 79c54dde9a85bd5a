"""What ingest tells Prometheus (``GET /metrics``), on a registry of its own per app.

    tally_ingest_requests_total{route, method, status}   every answer; route is a known path or "other"
    tally_ingest_events_accepted_total                   events now in Kafka (answered 2xx)
    tally_ingest_events_accepted_by_day_total{day}       the same, by the day each event counts on (TALLY_DAY_TZ)
    tally_ingest_events_dropped_total{reason}            events not counted under their own label (DropReason)
    tally_ingest_publish_seconds                         from a request's first send to its last ack
    tally_ingest_publish_failed_total{reason}            publishes answered 503: timeout, error, full, down
    tally_ingest_events_in_flight                        handed to the producer, not yet acked (the buffer)
    tally_ingest_producer_*                              kafka-python's own figures (producer.metrics())

The hot path costs a few dictionary look-ups and counter increments per
request: children of labelled metrics are looked up once and kept. Gauges
of the producer are read every few seconds, not per request.

**Several processes** (``TALLY_INGEST_WORKERS`` > 1, uvicorn workers on one
port): a scrape reaches one process at random, so per-process figures would
jump. ``tally ingest`` then runs prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, a fresh directory per start): each process
writes its values to files there and any process answers ``/metrics`` with
the sum over all of them (gauges: sum, or max for times, over live processes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from operator import attrgetter
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from ingest.outcome import Drop, DropReason
from schema.event import LabelEvent

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
PUBLISH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TIME: Final = attrgetter("ts_ms")
METHODS: Final = frozenset({"GET", "POST", "OPTIONS", "HEAD"})
# Days kept as series of tally_ingest_events_accepted_by_day_total: client timestamps reach one day back,
# the worker's windows three; older days' series are removed so the label stays bounded.
DAYS_KEPT: Final = 8

# kafka-python's producer-metrics figures worth a gauge: (its name, ours, help, how to combine processes).
PRODUCER_FIGURES: Final[tuple[tuple[str, str, str, Literal["livemax", "livesum"]], ...]] = (
    ("record-queue-time-avg", "record_queue_seconds_avg", "Mean time a batch waited in the producer", "livemax"),
    ("record-queue-time-max", "record_queue_seconds_max", "Longest time a batch waited in the producer", "livemax"),
    ("requests-in-flight", "requests_in_flight", "Produce requests sent, not yet answered by Kafka", "livesum"),
    ("record-retry-rate", "record_retries_per_second", "Records resent per second", "livesum"),
    ("record-error-rate", "record_errors_per_second", "Records that failed per second", "livesum"),
    ("batch-size-avg", "batch_bytes_avg", "Mean size of a record batch in bytes", "livemax"),
)


class IngestMetrics:
    """The metrics of one app.

    ``routes`` are the paths it answers and ``mounts`` the prefixes it serves
    files under: a request counts under its route, its mount, or "other".
    """

    def __init__(
        self,
        routes: Iterable[str],
        mounts: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
        day_tz: tzinfo = UTC,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess = MULTIPROCESS_ENV in os.environ
        r = self.registry
        self._routes = frozenset(routes)
        self._mounts = tuple(mount.rstrip("/") + "/" for mount in mounts)
        self._requests = Counter(
            "tally_ingest_requests", "Answers, by route, method and status", ["route", "method", "status"], registry=r
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._accepted = Counter("tally_ingest_events_accepted", "Events in Kafka, answered 2xx", registry=r)
        self._accepted_by_day = Counter(
            "tally_ingest_events_accepted_by_day",
            "Events in Kafka, answered 2xx, by the day they count on (for reconciliation with the workers)",
            ["day"],
            registry=r,
        )
        self._day_children: dict[str, Counter] = {}
        self._day_tz = day_tz
        self._day_of_minute: dict[int, str] = {}
        dropped = Counter(
            "tally_ingest_events_dropped", "Events not counted under their own label", ["reason"], registry=r
        )
        self._dropped = {reason: dropped.labels(reason.value) for reason in DropReason}
        self._publish_seconds = Histogram(
            "tally_ingest_publish_seconds",
            "From a request's first send to Kafka's last ack",
            buckets=PUBLISH_BUCKETS,
            registry=r,
        )
        failed = Counter(
            "tally_ingest_publish_failed",
            "Publishes answered 503: timeout (no ack in time), error (Kafka refused), full (too much in flight), "
            "down (Kafka failing: answered at once)",
            ["reason"],
            registry=r,
        )
        self._failed = {reason: failed.labels(reason) for reason in ("timeout", "error", "full", "down")}
        self._in_flight = Gauge(
            "tally_ingest_events_in_flight",
            "Events handed to the Kafka producer and not yet acked",
            multiprocess_mode="livesum",
            registry=r,
        )
        self._producer = {
            theirs: Gauge(f"tally_ingest_producer_{ours}", text, multiprocess_mode=mode, registry=r)
            for theirs, ours, text, mode in PRODUCER_FIGURES
        }

    # -- the hot path ------------------------------------------------------------------------------

    def request(self, path: str, method: str, status: int) -> None:
        key = (path, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._requests.labels(self._route(path), method if method in METHODS else "other", str(status))
            if path in self._routes and method in METHODS:  # keep a bounded set of children
                self._request_children[key] = child
        child.inc()

    def _route(self, path: str) -> str:
        if path in self._routes:
            return path
        return next((mount for mount in self._mounts if path.startswith(mount)), "other")

    def published(self, events: Sequence[LabelEvent], seconds: float) -> None:
        self._accepted.inc(len(events))
        self._publish_seconds.observe(seconds)
        by_day: dict[str, int]
        first_day = self._day(min(map(_TIME, events)) // 60_000)
        if first_day == self._day(max(map(_TIME, events)) // 60_000):  # the usual request: one day
            by_day = {first_day: len(events)}
        else:  # by minute, then one increment per day
            by_minute: dict[int, int] = {}
            for event in events:
                minute = event.ts_ms // 60_000
                by_minute[minute] = by_minute.get(minute, 0) + 1
            by_day = {}
            for minute, count in by_minute.items():
                day = self._day(minute)
                by_day[day] = by_day.get(day, 0) + count
        for day, count in by_day.items():
            child = self._day_children.get(day)
            if child is None:
                child = self._new_day(day)
            child.inc(count)

    def _day(self, minute: int) -> str:
        """The day a minute's events count on, as the worker decides it (every zone's days start on a whole minute)."""
        day = self._day_of_minute.get(minute)
        if day is None:
            if len(self._day_of_minute) > 10_000:
                self._day_of_minute.clear()
            day = self._day_of_minute[minute] = datetime.fromtimestamp(minute * 60, self._day_tz).date().isoformat()
        return day

    def _new_day(self, day: str) -> Counter:
        child = self._day_children[day] = self._accepted_by_day.labels(day)
        for old in sorted(self._day_children)[:-DAYS_KEPT]:
            del self._day_children[old]
            if not self.multiprocess:  # multiprocess files keep every series until the directory goes
                self._accepted_by_day.remove(old)
        return child

    def publish_failed(self, reason: str) -> None:
        self._failed.get(reason, self._failed["error"]).inc()

    def dropped(self, drops: Iterable[Drop]) -> None:
        for drop in drops:
            self._dropped[drop.reason].inc()

    # -- sampled -----------------------------------------------------------------------------------

    def sample_producer(self, in_flight: int, figures: Mapping[str, float]) -> None:
        """Copy the producer's figures (``producer.metrics()['producer-metrics']``) into the gauges."""
        self._in_flight.set(in_flight)
        for name, gauge in self._producer.items():
            if name in figures:
                gauge.set(figures[name])

    # -- out ---------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process)  # type: ignore[no-untyped-call]
        return generate_latest(every_process)

    def close(self) -> None:
        """In multiprocess mode, drop this process's live gauges from the sums."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
