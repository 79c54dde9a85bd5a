"""Keyed requests published as v2 records, each sent one to three times, as clients that retry send them.

Each request is one idempotency key and several events; a send publishes it
through ingest's publisher (``KafkaPublisher.publish_blocking``: one record
per partition its counters fall in, with the key), or, where a test chooses
the records' time, as the same records from a producer of its own. A send that Kafka did not take whole is
sent again until it is (a client retrying a 503). The truth is the events of
every distinct request that was taken at least once.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kafka import KafkaProducer

from ingest.partition import RememberingPartitioner
from ingest.publish import KafkaPublisher, PublishSettings
from schema.event import LabelEvent, encode_record
from tests.support.servers import PARTITIONS

Key = tuple[str, str, str]


@dataclass
class Request:
    key: str
    events: list[LabelEvent]
    sends_left: int
    taken: bool = False


@dataclass(order=True)
class _Due:
    at: float
    n: int
    request: Request = field(compare=False)


class KeyedLoad:
    """Keyed requests in the background; every one sent 1-3 times: some at once, some seconds later."""

    def __init__(self, bootstrap: str, topic: str, seed: int, *, later_s: tuple[float, float] = (0.5, 8.0)) -> None:
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            linger_ms=5,
            retries=3,
            request_timeout_ms=10_000,
            max_block_ms=10_000,
        )
        # Generous waits, as tests.support.load's: what is measured is the worker, not ingest's limits.
        patient = PublishSettings(delivery_timeout_ms=30_000, max_block_ms=10_000)
        self.publisher = KafkaPublisher(bootstrap, topic, patient)
        self.topic = topic
        self.rng = random.Random(seed)
        self.partitioner = RememberingPartitioner()
        self.later_s = later_s
        self.requests: list[Request] = []
        self.sends = 0
        self.failed_sends = 0
        self._due: list[_Due] = []
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    # --- what was sent --------------------------------------------------------------------------------------

    def truth(self) -> Counter[Key]:
        """Events of every distinct request Kafka took at least once."""
        sent: Counter[Key] = Counter()
        for request in self.requests:
            if request.taken:
                sent.update((e.label, e.category, e.dom_id) for e in request.events)
        return sent

    def repeats(self) -> int:
        """Sends of a request Kafka had taken already."""
        return self.sends - sum(1 for r in self.requests if r.taken) - self.failed_sends

    # --- making and sending requests ------------------------------------------------------------------------

    def request(self, ts_ms: int | None = None, labels: int | None = None, key: str | None = None) -> Request:
        now = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
        n = labels if labels is not None else self.rng.randint(2, 6)
        events = [
            LabelEvent(f"k{self.rng.randrange(12)}", f"c{self.rng.randrange(2)}", f"d{self.rng.randrange(3)}", now)
            for _ in range(n)
        ]
        request = Request(key or uuid.uuid4().hex, events, self.rng.randint(1, 3))
        self.requests.append(request)
        return request

    def records(self, request: Request) -> dict[int, list[LabelEvent]]:
        """The request's events grouped by the partition their counters fall in, as ingest publishes them."""
        return self.partitioner.group(request.events, range(PARTITIONS))

    def send(self, request: Request, record_ms: int | None = None) -> bool:
        """One send of ``request`` (through ingest's publisher, unless ``record_ms`` stamps its records).

        True if Kafka took all of its records.
        """
        self.sends += 1
        if record_ms is None:
            try:
                self.publisher.publish_blocking(request.events, request.key)
            except Exception:  # a 503: sent again, as a client does
                self.failed_sends += 1
                return False
            request.taken = True
            return True
        futures = [
            self.producer.send(
                self.topic,
                value=encode_record(events, request.key),
                key=request.key.encode(),
                partition=partition,
                timestamp_ms=record_ms,
            )
            for partition, events in self.records(request).items()
        ]
        try:
            for future in futures:
                future.get(timeout=30)
        except Exception:
            self.failed_sends += 1
            return False
        request.taken = True
        return True

    def send_all(self, request: Request, record_ms: int | None = None) -> None:
        """Every send of ``request`` at once (one after the other, no wait between)."""
        for _ in range(request.sends_left):
            self.send(request, record_ms)
        request.sends_left = 0

    def _schedule(self, request: Request, delay_s: float) -> None:
        self._n += 1
        heapq.heappush(self._due, _Due(time.monotonic() + delay_s, self._n, request))

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(5):
                request = self.request()
                at_once = self.rng.random() < 0.3
                for _ in range(request.sends_left if at_once else 1):
                    if not self.send(request):
                        break
                    request.sends_left -= 1
                if request.sends_left > 0 or not request.taken:
                    self._schedule(request, self.rng.uniform(*self.later_s))
            self._send_due()
            time.sleep(0.02)
        while self._due:  # every request gets all its sends, and is taken at least once
            self._send_due(wait=True)

    def _send_due(self, wait: bool = False) -> None:
        while self._due and (wait or self._due[0].at <= time.monotonic()):
            due = heapq.heappop(self._due)
            if wait:
                time.sleep(max(0.0, due.at - time.monotonic()))
            request = due.request
            if self.send(request):
                request.sends_left -= 1
            if request.sends_left > 0 or not request.taken:  # not taken: retried, as a client retries a 503
                self._schedule(request, self.rng.uniform(0.5, 2.0))

    @contextmanager
    def running(self) -> Iterator[KeyedLoad]:
        self._thread.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.producer.close()
        self.publisher.close()
