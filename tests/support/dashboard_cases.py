"""Known events, and what each dashboard query must answer for them.

The same events are counted by the real pipeline on ClickHouse 18.16
(tests/integration/deploy/test_dashboards.py) and written as roll-ups into current
ClickHouse (tests/unit/deploy/test_dashboards_current_clickhouse.py); the answers
below are computed from the events in plain Python, the way a person would
count them, for the dashboards' fixed time range and variables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from stack.dashboards import ALL, TimeRange


@dataclass(frozen=True)
class Event:
    label: str
    category: str
    dom_id: str
    at: datetime

    @property
    def day(self) -> date:
        return self.at.date()  # TALLY_DAY_TZ is UTC in these tests

    @property
    def hour(self) -> datetime:
        return self.at.replace(minute=0, second=0, microsecond=0)


def known_events(now: datetime) -> list[Event]:
    """Six labels at three moments: now, 25 hours ago (inside the range), and half an hour before the range starts.

    The last is on the range's first date, so the daily panels count it and the hourly ones must not.
    """
    recent, yesterday, before = (
        now - timedelta(seconds=30),
        now - timedelta(hours=25),
        range_start(now) - timedelta(minutes=30),
    )
    spec: list[tuple[str, datetime, int]] = [
        ("signup:forms:btn1", recent, 5),
        ("signup:forms:btn1", yesterday, 2),
        ("signup:forms:btn1", before, 1),
        ("signup:forms:btn2", recent, 3),
        ("home", recent, 4),
        ("home", yesterday, 1),
        ("checkout:shop:buy", yesterday, 2),
        ("newsletter:email", recent, 1),
        ("click:home:hp-hero", recent, 6),
        ("click:home:hp-nav", recent, 2),
        ("click:home:hp-footer", yesterday, 1),
        ("click:home:hp-hero", before, 3),
        ("cta:home:hp-hero", yesterday, 1),
        ("click:pricing:pr-buy", recent, 3),
    ]
    events = []
    for labels, at, times in spec:
        label, category, dom_id = [*labels.split(":"), "", ""][:3]
        events += [Event(label, category, dom_id, at)] * times
    return events


def range_start(now: datetime) -> datetime:
    """The start of the hour 26 hours ago, or of the next one if that is midnight (an hour of its date comes before)."""
    start = (now - timedelta(hours=26)).replace(minute=0, second=0, microsecond=0)
    return start + timedelta(hours=1) if start.hour == 0 else start


def fixed_range(now: datetime) -> TimeRange:
    """From :func:`range_start` to two minutes from now."""
    return TimeRange(range_start(now), now + timedelta(minutes=2), interval_s=300)


VARIABLE_CASES: dict[str, dict[str, str | list[str]]] = {
    "all": {"category": [ALL], "label": "signup", "prefix": "", "dom_id": [ALL]},
    "picked": {"category": ["forms", "shop"], "label": "click", "prefix": "hp-", "dom_id": ["hp-hero", "hp-nav"]},
}


@dataclass(frozen=True)
class Case:
    events: Sequence[Event]
    time_range: TimeRange
    variables: dict[str, str | list[str]] = field(default_factory=dict)

    def _picked(self, name: str, value: str) -> bool:
        chosen = self.variables[name]
        values = [chosen] if isinstance(chosen, str) else chosen
        return ALL in values or value in values

    # -- what the filters keep ----------------------------------------------------------

    def days(self) -> list[Event]:
        """$__dateFilter(day): the range's UTC dates, whole."""
        first, last = self.time_range.start.astimezone(UTC).date(), self.time_range.end.astimezone(UTC).date()
        return [e for e in self.events if first <= e.day <= last]

    def hours(self) -> list[Event]:
        """$__timeFilter(hour)."""
        return [e for e in self.events if self.time_range.start <= e.hour <= self.time_range.end]

    def category(self, events: Iterable[Event]) -> list[Event]:
        return [e for e in events if self._picked("category", e.category)]

    def label(self, events: Iterable[Event]) -> list[Event]:
        return [e for e in events if e.label == self.variables["label"]]

    def page(self, events: Iterable[Event]) -> list[Event]:
        prefix = str(self.variables["prefix"])
        return [e for e in events if e.dom_id and e.dom_id.startswith(prefix)]

    def doms(self, events: Iterable[Event]) -> list[Event]:
        return [e for e in self.page(events) if self._picked("dom_id", e.dom_id)]


Row = tuple[Any, ...]


def grouped(events: Iterable[Event], key: Callable[[Event], Any]) -> Counter[Any]:
    return Counter(key(e) for e in events)


def by_count(counts: Counter[Any], limit: int | None = None) -> list[Row]:
    """ORDER BY events DESC, key."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [(*(k if isinstance(k, tuple) else (k,)), n) for k, n in rows]


def by_key(counts: Counter[Any]) -> list[Row]:
    return [(*(k if isinstance(k, tuple) else (k,)), n) for k, n in sorted(counts.items())]


def none(value: str) -> str:
    return value or "(none)"


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)  # noqa: DTZ001 - naive UTC, as clickhouse-driver reads DateTime


def top_labels_per_hour(c: Case) -> list[Row]:
    top = [label for label, _ in by_count(grouped(c.category(c.days()), lambda e: e.label), 5)]
    return by_key(grouped([e for e in c.category(c.hours()) if e.label in top], lambda e: (e.hour, e.label)))


FRESHNESS = "seconds since the last roll-up"
"""Panels whose answer is a time, checked against when the events were sent rather than computed."""

EXPECTED: dict[str, Callable[[Case], list[Row]]] = {
    # overview
    "tally-overview: $category": lambda c: [(k,) for k in sorted({e.category for e in c.days()})],
    "tally-overview: Events": lambda c: [(len(c.category(c.days())),)],
    "tally-overview: Labels": lambda c: [(len({e.label for e in c.category(c.days())}),)],
    "tally-overview: dom ids": lambda c: [(len({e.dom_id for e in c.category(c.days()) if e.dom_id}),)],
    "tally-overview: Events per day": lambda c: by_key(grouped(c.category(c.days()), lambda e: midnight(e.day))),
    "tally-overview: Events per hour": lambda c: by_key(grouped(c.category(c.hours()), lambda e: e.hour)),
    "tally-overview: Top 5 labels per hour": top_labels_per_hour,
    "tally-overview: Top labels": lambda c: by_count(grouped(c.category(c.days()), lambda e: e.label), 20),
    "tally-overview: By category": lambda c: by_count(grouped(c.category(c.days()), lambda e: none(e.category))),
    # label drill-down
    "tally-label: $label": lambda c: [(k,) for k, _ in by_count(grouped(c.days(), lambda e: e.label), 1000)],
    "tally-label: Events": lambda c: [(len(c.label(c.days())),)],
    "tally-label: dom ids": lambda c: [(len({e.dom_id for e in c.label(c.days()) if e.dom_id}),)],
    "tally-label: Categories": lambda c: [(len({e.category for e in c.label(c.days())}),)],
    "tally-label: Per day": lambda c: by_key(grouped(c.label(c.days()), lambda e: midnight(e.day))),
    "tally-label: Per hour": lambda c: by_key(grouped(c.label(c.hours()), lambda e: e.hour)),
    "tally-label: By dom id": lambda c: by_count(grouped(c.label(c.days()), lambda e: none(e.dom_id)), 100),
    "tally-label: By category": lambda c: by_count(grouped(c.label(c.days()), lambda e: none(e.category))),
    # heat map
    "tally-heatmap: $dom_id": lambda c: [(k,) for k in sorted({e.dom_id for e in c.page(c.days())})],
    "tally-heatmap: Heat map: events by dom id": lambda c: by_count(
        grouped(c.doms(c.days()), lambda e: (e.dom_id, e.label)), 500
    ),
    "tally-heatmap: Heat map: dom id by day": lambda c: by_key(
        grouped(c.doms(c.days()), lambda e: (e.dom_id, e.day.isoformat()))
    ),
}


def normalized(rows: Iterable[Sequence[Any]]) -> list[tuple[str, ...]]:
    """Rows as text, the same whichever client read them: numbers, dates and UTC times."""

    def text(value: Any) -> str:
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(value, date):
            return value.isoformat()
        return str(value)

    return [tuple(text(v) for v in row) for row in rows]
