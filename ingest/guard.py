"""Who and what may be counted: bots, the label allow-list, the daily cap of new labels.

Policy, not input rules: nothing here refuses a request. An event that
passed validation is published, dropped, or published under the overflow
label, and the answer says which (:class:`ingest.outcome.DropReason`):

- a known bot's events are dropped, answered 2xx so that it does not retry;
- a label off the allow-list (``TALLY_LABEL_ALLOWLIST``, when set) is dropped;
- past ``TALLY_MAX_NEW_LABELS_PER_DAY`` distinct labels in a day, an event
  with a label not yet seen that day is published as ``_overflow`` (category
  and dom id emptied too, so a flood of junk becomes one counter, not many).

The cap is kept per process, in memory bounded by the cap: sharing it
between processes would put a shared store on every request's path. With
N ingest processes, at most N x cap distinct labels reach Kafka per day.
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from ingest.outcome import Drop, DropReason, Outcome
from schema.event import LabelEvent

OVERFLOW_LABEL: Final = "_overflow"
_label: Final = operator.attrgetter("label")

# Well-known crawlers, link-preview fetchers, headless browsers and uptime
# monitors, matched on the lower-cased User-Agent (a case-insensitive regex
# costs far more per request). Small on purpose: a false positive
# loses a real visitor's count. "bot" counts only as a product name
# ("Googlebot/2.1", "PetalBot;", "DuckDuckBot-Https"): "CUBOT P40" is a phone.
BOT_USER_AGENTS: Final = re.compile(
    "|".join(
        [
            r"bot[/;)\-]|bot$|crawl|spider|slurp",
            r"\+https?:",  # "(+http://www.google.com/bot.html)": a crawler's info URL
            r"facebookexternalhit|meta-externalagent|embedly|skypeuripreview|whatsapp|ia_archiver|chatgpt-user",
            r"headless|phantomjs|lighthouse|pagespeed|gtmetrix",
            r"pingdom|uptimerobot|statuscake|site24x7",
        ]
    )
)


def is_bot(user_agent: str | None) -> bool:
    return user_agent is not None and _is_bot(user_agent)


@functools.lru_cache(maxsize=4096)
def _is_bot(user_agent: str) -> bool:
    """Remembered: most requests come with one of a few browsers' User-Agents."""
    return BOT_USER_AGENTS.search(user_agent.lower()) is not None


@dataclass(frozen=True)
class Policy:
    drop_bots: bool = True
    """TALLY_DROP_BOTS: drop events from well-known bots' user agents (BOT_USER_AGENTS)."""
    label_allowlist: tuple[str, ...] = ()
    """TALLY_LABEL_ALLOWLIST: comma-separated label names or glob patterns (``signup_*``); empty: any label."""


class Guard:
    """Applies a Policy and the daily cap; holds this process's labels of the day."""

    def __init__(self, policy: Policy, max_new_labels_per_day: int) -> None:
        self.policy = policy
        self._allowed = _matcher(policy.label_allowlist)
        self._labels_today = LabelsOfTheDay(max_new_labels_per_day)

    def admit(self, outcome: Outcome, user_agent: str | None, today: date) -> Outcome:
        if self.policy.drop_bots and is_bot(user_agent):
            bot_drops = [Drop(position, DropReason.BOT) for position in outcome.positions]
            return Outcome([], [], [*outcome.drops, *bot_drops])
        if self._allowed is None and self._labels_today.knows_all(outcome.events, today):
            return outcome  # the usual request: nothing to drop or relabel, so no new lists
        events: list[LabelEvent] = []
        positions: list[int] = []
        drops = list(outcome.drops)
        for event, position in zip(outcome.events, outcome.positions, strict=True):
            if self._allowed is not None and not self._allowed(event.label):
                drops.append(Drop(position, DropReason.NOT_ALLOWED, rule="not on the label allow-list"))
                continue
            if not self._labels_today.admit(event.label, today):
                rule = f"more than {self._labels_today.cap} new labels today; counted as {OVERFLOW_LABEL}"
                drops.append(Drop(position, DropReason.OVERFLOW, rule=rule))
                event = LabelEvent(OVERFLOW_LABEL, "", "", event.ts_ms)
            events.append(event)
            positions.append(position)
        return Outcome(events, positions, drops, outcome.restamped)


class LabelsOfTheDay:
    """The distinct labels admitted today, at most ``cap`` of them; forgotten when the day changes.

    Not locked: threads (a shared Tracker) racing for the last free place may
    each take it, going over the cap by at most their number; still bounded.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._day: date | None = None
        self._seen: set[str] = set()

    def knows_all(self, events: Sequence[LabelEvent], today: date) -> bool:
        """Whether every event's label was admitted today already."""
        if today != self._day:
            return False
        return self._seen.issuperset(map(_label, events))

    def admit(self, label: str, today: date) -> bool:
        if today != self._day:
            self._day, self._seen = today, set()
        if label in self._seen:
            return True
        if len(self._seen) >= self.cap:
            return False
        self._seen.add(label)
        return True


def _matcher(patterns: Sequence[str]) -> Callable[[str], object] | None:
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).fullmatch
