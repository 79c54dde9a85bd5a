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

Exactly once: every call is one request with an idempotency key (a new
UUID, or the caller's ``idempotency_key``). When Kafka does not confirm in
time, the call publishes the same events (the same timestamps) again under
the same key, after a backoff with jitter and at least the ``Retry-After``
that ingest would answer, for ``retry_for_s`` at most; the worker counts a
keyed request once however many times it arrives (docs/exactness.md). Only
then does ``BrokerUnavailable`` reach the caller, who may call again with
the same ``idempotency_key`` (a task queue's retry, say) within the
server's ``TALLY_DEDUPE_WINDOW_S``.

A tracker holds a Kafka producer (connections and an I/O thread): make one
per process and ``close()`` it at shutdown (or use ``with``), which flushes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from ingest.errors import BrokerUnavailable, InvalidBeacon
from ingest.outcome import Outcome
from ingest.pipeline import Pipeline
from ingest.publish import BlockingPublisher, KafkaPublisher, Publisher
from ingest.settings import IngestSettings
from schema.event import InvalidField, check_idempotency_key

__all__ = ["AsyncTracker", "BrokerUnavailable", "InvalidBeacon", "Retries", "Tracker"]

MAX_BACKOFF_S: Final = 30.0


@dataclass(frozen=True)
class Retries:
    """How a tracker sends a call's events again when Kafka did not confirm them (``BrokerUnavailable``).

    The waits start at ``backoff_s`` and double (with jitter: half to all of it), at least the refusal's
    ``retry_after_s`` (what a 503 says in ``Retry-After``), at most 30 s; no send starts later than
    ``retry_for_s`` after the first. Keep ``retry_for_s`` well under the server's ``TALLY_DEDUPE_WINDOW_S``:
    past the window a repeat could count twice. ``Retries(retry_for_s=0)`` sends once.
    """

    retry_for_s: float = 30.0
    backoff_s: float = 0.5

    def wait(self, attempt: int, refusal: BrokerUnavailable, started: float, rng: random.Random) -> float | None:
        """Seconds to wait before send ``attempt + 1`` (``attempt`` from 0), or None: give up."""
        backoff = min(self.backoff_s * 2.0**attempt, MAX_BACKOFF_S) * (0.5 + rng.random() / 2)
        delay = max(backoff, float(refusal.retry_after_s))
        if time.monotonic() + delay - started > self.retry_for_s:
            return None
        return delay


class Tracker:
    """Blocking: for threads (Django views, scripts, Celery tasks)."""

    def __init__(
        self,
        settings: IngestSettings | None = None,
        publisher: BlockingPublisher | None = None,
        retries: Retries | None = None,
    ) -> None:
        settings = settings or IngestSettings.from_env(os.environ)
        self._pipeline = _pipeline(settings)
        self._publisher = publisher or KafkaPublisher.from_settings(settings.kafka, settings.publish)
        self._retries = retries or Retries()
        self._rng = random.Random()

    def incr_labels(self, labels: str, idempotency_key: str | None = None) -> Outcome:
        """Count each label of ``labels`` (``a|b:category:dom_id``) once; return once Kafka has them.

        ``idempotency_key`` names the call (1-64 of ``A-Z a-z 0-9 _ -``; a new UUID when None): a call
        made again with the same key and labels within the server's window counts once.
        """
        key = _key(idempotency_key)
        outcome = self._pipeline.labels(labels)
        if not outcome.events:
            return outcome
        started = time.monotonic()
        for attempt in itertools.count():
            try:
                self._publisher.publish_blocking(outcome.events, key)
            except BrokerUnavailable as refusal:
                delay = self._retries.wait(attempt, refusal, started, self._rng)
                if delay is None:
                    raise
                time.sleep(delay)
            else:
                break
        return outcome

    def close(self) -> None:
        self._publisher.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncTracker:
    """For async code: awaits Kafka's acks without blocking the event loop."""

    def __init__(
        self, settings: IngestSettings | None = None, publisher: Publisher | None = None, retries: Retries | None = None
    ) -> None:
        settings = settings or IngestSettings.from_env(os.environ)
        self._pipeline = _pipeline(settings)
        self._publisher = publisher or KafkaPublisher.from_settings(settings.kafka, settings.publish)
        self._retries = retries or Retries()
        self._rng = random.Random()

    async def incr_labels(self, labels: str, idempotency_key: str | None = None) -> Outcome:
        """Count each label of ``labels`` once; return once Kafka has them (``idempotency_key`` as in
        :meth:`Tracker.incr_labels`)."""
        key = _key(idempotency_key)
        outcome = self._pipeline.labels(labels)
        if not outcome.events:
            return outcome
        started = time.monotonic()
        for attempt in itertools.count():
            try:
                await self._publisher.publish(outcome.events, key)
            except BrokerUnavailable as refusal:
                delay = self._retries.wait(attempt, refusal, started, self._rng)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
            else:
                break
        return outcome

    async def close(self) -> None:
        await asyncio.to_thread(self._publisher.close)  # flushing blocks

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _key(idempotency_key: str | None) -> str:
    """The caller's key, checked as ingest checks one (a 400 there, InvalidBeacon here), or a new UUID."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    try:
        return check_idempotency_key(idempotency_key)
    except InvalidField as exc:
        raise InvalidBeacon(exc.field, exc.rule) from exc


def _pipeline(settings: IngestSettings) -> Pipeline:
    return Pipeline(settings.limits, settings.policy, settings.day_tz)
