"""Counting from backend code, the seed's way, straight to Kafka.

    from ingest.client import Tracker
    tracker = Tracker()                     # once per process: it holds a Kafka producer
    tracker.incr_labels("user_connected|user_clicked_button:forms:btn1")

    async with AsyncTracker() as tracker:   # from async code
        await tracker.incr_labels("user_connected")

The same pipeline as the HTTP routes (:mod:`ingest.pipeline`: parse ->
validate -> guard -> publish), the same ``TALLY_*`` settings, the same
promise: ``incr_labels`` returns only once Kafka has acknowledged every
event (acks from all in-sync replicas). It raises :class:`InvalidBeacon`
when a label breaks a rule (nothing is published) and
:class:`BrokerUnavailable` when Kafka cannot take the events in time. It
returns the :class:`~ingest.outcome.Outcome`: what was accepted, and what
the guard dropped or counted as overflow.

A tracker holds a Kafka producer (connections and an I/O thread): make one
per process and ``close()`` it at shutdown (or use ``with``), which flushes.
"""

from __future__ import annotations

import asyncio
import os
from types import TracebackType

from ingest.errors import BrokerUnavailable, InvalidBeacon
from ingest.outcome import Outcome
from ingest.pipeline import Pipeline
from ingest.publish import BlockingPublisher, KafkaPublisher, Publisher
from ingest.settings import IngestSettings

__all__ = ["AsyncTracker", "BrokerUnavailable", "InvalidBeacon", "Tracker"]


class Tracker:
    """Blocking: for threads (Django views, scripts, Celery tasks)."""

    def __init__(self, settings: IngestSettings | None = None, publisher: BlockingPublisher | None = None) -> None:
        settings = settings or IngestSettings.from_env(os.environ)
        self._pipeline = _pipeline(settings)
        self._publisher = publisher or KafkaPublisher.from_settings(settings.kafka, settings.publish)

    def incr_labels(self, labels: str) -> Outcome:
        """Count each label of ``labels`` (``a|b:category:dom_id``) once; return once Kafka has them."""
        outcome = self._pipeline.labels(labels)
        if outcome.events:
            self._publisher.publish_blocking(outcome.events)
        return outcome

    def close(self) -> None:
        self._publisher.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncTracker:
    """For async code: awaits Kafka's acks without blocking the event loop."""

    def __init__(self, settings: IngestSettings | None = None, publisher: Publisher | None = None) -> None:
        settings = settings or IngestSettings.from_env(os.environ)
        self._pipeline = _pipeline(settings)
        self._publisher = publisher or KafkaPublisher.from_settings(settings.kafka, settings.publish)

    async def incr_labels(self, labels: str) -> Outcome:
        """Count each label of ``labels`` once; return once Kafka has them."""
        outcome = self._pipeline.labels(labels)
        if outcome.events:
            await self._publisher.publish(outcome.events)
        return outcome

    async def close(self) -> None:
        await asyncio.to_thread(self._publisher.close)  # flushing blocks

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _pipeline(settings: IngestSettings) -> Pipeline:
    return Pipeline(settings.limits, settings.policy, settings.day_tz)
