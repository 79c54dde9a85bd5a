"""The keys of the worker's count table: one format, written and read only through this module.

A counter's key is its window, then its counter (``LabelEvent.counter_key``,
``label:category:dom_id``), joined by ``:``::

    d2026-11-25:signup:forms:btn1      the day, in the configured zone
    h1795611600:signup:forms:btn1      the hour: the UTC start of the local hour, in epoch seconds

No field of an event may contain ``:`` (schema.event's rules), nor may a
window, so a key splits into exactly four parts. Beside the counters the table
holds, per events partition, the last offset it counted: ``through:<partition>``
(aggregator.gaps), a prefix no window starts with; and, per events partition, the idempotency keys it counted
within the dedupe window (aggregator.dedupe): ``seen:<partition>:<key>``.

Counting builds two keys per event, so ``aggregator.count`` writes
``f"{window}{SEP}{counter}"`` inline rather than calling :func:`counter_key`
(a call per key is a measurable share of counting an event); the windows
themselves come from :func:`day_window` and :func:`hour_window`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import NamedTuple

SEP = ":"
DAY = "d"
"""The first character of a daily counter's key."""
HOUR = "h"
"""The first character of an hourly counter's key."""
THROUGH = "through:"
"""The prefix of the table's per-partition position; no counter key starts with it."""
SEEN = "seen:"
"""The prefix of the idempotency keys a partition counted (aggregator.dedupe); no counter key starts with it."""


def day_window(day: date) -> str:
    return f"{DAY}{day.isoformat()}"


def hour_window(hour_start: datetime) -> str:
    """The window of the hour starting at ``hour_start`` (a zone-aware time)."""
    return f"{HOUR}{int(hour_start.timestamp())}"


def counter_key(window: str, counter: str) -> str:
    """The key of ``counter`` (``label:category:dom_id``) in ``window`` (:func:`day_window`, :func:`hour_window`)."""
    return f"{window}{SEP}{counter}"


def day_of_daily(key: str) -> str | None:
    """The day (``YYYY-MM-DD``) of a daily counter's key; None for any other key."""
    return key[1:11] if key.startswith(DAY) else None


def is_counter(key: str) -> bool:
    """Whether ``key`` is a counter's (not the table's position in a partition, nor a key it counted)."""
    return not key.startswith((THROUGH, SEEN))


def through_key(partition: int) -> str:
    return f"{THROUGH}{partition}"


def seen_key(partition: int, idempotency_key: str) -> str:
    """The table key of an idempotency key that events partition ``partition`` counted."""
    return f"{SEEN}{partition}{SEP}{idempotency_key}"


def seen_prefix(partition: int) -> str:
    """What the table keys of every idempotency key ``partition`` counted start with."""
    return f"{SEEN}{partition}{SEP}"


class CounterKey(NamedTuple):
    """A counter's key, parsed."""

    day: date
    hour: datetime | None
    """UTC start of the local hour for an hourly counter; None for a daily one."""
    label: str
    category: str
    dom_id: str

    def encode(self) -> str:
        window = day_window(self.day) if self.hour is None else hour_window(self.hour)
        return counter_key(window, f"{self.label}{SEP}{self.category}{SEP}{self.dom_id}")

    @classmethod
    def parse(cls, key: str, tz: tzinfo) -> CounterKey:
        """The parts of a counter's ``key``; ``tz`` is the zone of the days (an hour's day is its local day)."""
        window, label, category, dom_id = key.split(SEP)
        if window[0] == DAY:
            return cls(date.fromisoformat(window[1:]), None, label, category, dom_id)
        hour = datetime.fromtimestamp(int(window[1:]), UTC)
        return cls(hour.astimezone(tz).date(), hour, label, category, dom_id)
