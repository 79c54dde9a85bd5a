"""The soak test's load: what browsers and backends send, mixed, with every outcome recorded client-side.

Requests go out open loop at a fixed rate (a request is due every 1/rate
seconds whatever the answers do; latency counts from when it was due):

- ``GET /track/?labels=...`` beacons of 1-3 labels, and the pixel ``/track.gif``;
- ``sendBeacon``-style ``text/plain`` POSTs in the labels syntax;
- JSON batches of 1-40 events, most with a client timestamp from the
  *simulated clock*, which runs from ``boundary - seconds/2`` to
  ``boundary + seconds/2`` during the run: about half of those events land
  on each side of a day boundary (the last local midnight), within ingest's
  bounds on client timestamps, so no event is restamped;
- about 5 % deliberately bad requests: a bad label among good ones (the
  labels syntax is all or nothing: 400), too many labels, a URL as a label,
  an unknown content type (415), broken JSON, a batch with invalid events
  among good ones (202, the good ones only), a crawler's user agent (202,
  nothing counted).

Labels follow a Zipf-like popularity; each label comes with a few
(category, dom_id) pairs.

Every request has an idempotency key (a UUID; in the ``Idempotency-Key``
header for JSON batches, in the ``idempotency_key`` parameter for the rest,
as tally.js and sendBeacon send it), and is sent again under it, with the
same body, until it gets an answer that is neither a 503 nor a 429: after
no answer (refused, reset, or nothing within ``timeout_s``), a 503 of
either kind or a 429, with an exponential backoff with jitter and at least
``Retry-After``, for ``retry_for_s`` at most (well inside the worker's
``TALLY_DEDUPE_WINDOW_S``). Every send is recorded; a request's outcome is
its last answer: the events of a 2xx (minus the ones it reports dropped)
are what must be counted, exactly; those of a 4xx never. A request that
never got such an answer gave up: its events may or may not be counted,
and any such request fails the run.

Probes: twice a second a beacon for a counter of its own
(``soak_probe:probe:pN``); freshness is from its 2xx to its count showing in
ClickHouse's ``daily_stats``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import quote

import aiohttp

Key = tuple[str, str, str, str]
"""(day, label, category, dom_id); day is ``YYYY-MM-DD``, or "?" when the server's stamp could fall either side."""
Counter3 = tuple[str, str, str]

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PROBE_LABEL = "soak_probe"
CATEGORIES = ("", "forms", "nav", "promo", "footer", "checkout")
WORDS = ("signup", "home", "pricing", "cart", "search", "video", "share", "login", "faq", "promo")
KINDS: tuple[tuple[str, float], ...] = (
    ("get", 0.40),
    ("pixel", 0.07),
    ("text", 0.25),
    ("json", 0.23),
    ("bad", 0.05),
)
BAD_KINDS = ("bad_label", "too_many", "url_label", "bad_type", "bad_json", "mixed_json", "bot")


@dataclass(frozen=True)
class LoadSettings:
    seconds: float
    rate: float = 150.0
    """Requests per second, open loop."""
    labels: int = 600
    seed: int = 9
    probe_every_s: float = 0.5
    max_in_flight: int = 512
    """Past this many requests waiting for an answer, a due request is not sent (and counted as such)."""
    timeout_s: float = 30.0
    """A send without an answer this long is given up, and the request sent again."""
    retry_for_s: float = 300.0
    """No send of a request starts later than this after its first (TALLY_DEDUPE_WINDOW_S is an hour)."""
    backoff_s: float = 0.5
    """The first wait before a request is sent again; it doubles (with jitter), at most 30 s, at least Retry-After."""


@dataclass
class Record:
    """One send of a request, as the client saw it."""

    due: float
    """Epoch seconds when it was due (the request's first send: when the request was due)."""
    latency: float
    """From due to answer (or failure), seconds."""
    kind: str
    status: int
    """HTTP status; 0 when no answer came (refused, reset, timed out)."""
    accepted: int
    """Events the answer says are in Kafka."""
    attempt: int = 0
    """0 for a request's first send, n for its n-th send again."""


@dataclass
class Outcomes:
    """Everything the load recorded."""

    records: list[Record] = field(default_factory=list)
    expected: Counter[Key] = field(default_factory=Counter)
    """Events answered 2xx: what must be counted."""
    gave_up: Counter[Key] = field(default_factory=Counter)
    """Events of requests still without a final answer after ``retry_for_s``: a failure of the run."""
    sent_again: Counter[str] = field(default_factory=Counter)
    """Sends again, by what the previous send got: "no answer", "503 none", "503 unknown", "429"."""
    answered_in: list[float] = field(default_factory=list)
    """Seconds from each request's due time to its final answer (2xx or 4xx), retries included."""
    refused: Counter[Key] = field(default_factory=Counter)
    """Good-looking events of refused (4xx) requests or dropped as invalid or bot: must never be counted."""
    anomalies: list[str] = field(default_factory=list)
    """Answers that contradict the documented contract (e.g. a 2xx accepting fewer events than sent)."""
    probes_acked: dict[str, float] = field(default_factory=dict)
    """Probe dom_id -> epoch seconds of its 2xx."""
    not_sent: int = 0
    after: dict[str, float] = field(default_factory=dict)
    """Named instants (e.g. when ingest was restarted), to split 2xx events by the process that took them."""
    expected_since: dict[str, Counter[str]] = field(default_factory=dict)
    """For each instant in ``after`` once set: 2xx events per day of sends made after it."""


class Universe:
    """Labels with Zipf-like popularity, each with a few (category, dom_id) pairs."""

    def __init__(self, labels: int, rng: random.Random, prefix: str = "") -> None:
        self.rng = rng
        self.labels = [f"{prefix}{WORDS[i % len(WORDS)]}_{i:04d}" for i in range(labels)]
        weights = [1.0 / (rank + 1) ** 1.1 for rank in range(labels)]
        self.cumulative = list(itertools.accumulate(weights))
        self.variants: dict[str, list[tuple[str, str]]] = {
            label: [
                (rng.choice(CATEGORIES), rng.choice(("", f"{label}.btn{n}", f"nav-{n}")))
                for n in range(rng.randint(1, 4))
            ]
            for label in self.labels
        }

    def pick(self) -> Counter3:
        label = self.labels[bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])]
        category, dom_id = self.rng.choice(self.variants[label])
        return label, category, dom_id


def labels_syntax(counters: list[Counter3], rng: random.Random) -> str:
    parts = []
    for label, category, dom_id in counters:
        sep = "+" if rng.random() < 0.1 else ":"
        if dom_id:
            parts.append(f"{label}{sep}{category}{sep}{dom_id}")
        elif category:
            parts.append(f"{label}{sep}{category}")
        else:
            parts.append(label)
    return "|".join(parts) + ("|" if rng.random() < 0.2 else "")


class Load:
    """Sends the load for ``settings.seconds`` and fills ``outcomes``."""

    def __init__(
        self,
        url: str,
        settings: LoadSettings,
        day_tz: tzinfo,
        boundary: datetime | None,
        keep_going: Callable[[], bool] = lambda: False,
    ) -> None:
        """``boundary``: the day boundary the simulated clock crosses (None: client timestamps are now);
        ``keep_going``: past ``settings.seconds``, the load goes on while it says so."""
        self.url = url
        self.keep_going = keep_going
        self.settings = settings
        self.day_tz = day_tz
        self.rng = random.Random(settings.seed)
        self.universe = Universe(settings.labels, self.rng)
        self.outcomes = Outcomes()
        self.boundary_ms = None if boundary is None else int(boundary.timestamp() * 1000)
        self.in_flight = 0
        self.started = 0.0
        self._probe_ids = itertools.count(1)

    def day(self, ts_s: float) -> str:
        return datetime.fromtimestamp(ts_s, self.day_tz).date().isoformat()

    def sim_ts_ms(self, now: float) -> int:
        """The simulated clock: crosses the day boundary halfway through the run."""
        if self.boundary_ms is None:
            return int(now * 1000) - self.rng.randint(0, 2000)
        elapsed = now - self.started
        return int(self.boundary_ms + (elapsed - self.settings.seconds / 2) * 1000) + self.rng.randint(-2000, 0)

    def mark(self, name: str) -> None:
        """Remember now as ``name``: 2xx events of requests due from now on are also summed per day apart."""
        self.outcomes.expected_since[name] = Counter()
        self.outcomes.after[name] = time.time()

    async def run(self) -> Outcomes:
        s = self.settings
        connector = aiohttp.TCPConnector(limit=256)
        timeout = aiohttp.ClientTimeout(total=s.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.started = time.time()
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            next_probe = 0.0
            for n in itertools.count():
                at = n / s.rate
                if at >= s.seconds and not self.keep_going():
                    break
                delay = start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                due = self.started + at
                if self.in_flight >= s.max_in_flight:
                    self.outcomes.not_sent += 1
                    continue
                coro = self.probe(session, due) if at >= next_probe else self.request(session, due)
                if at >= next_probe:
                    next_probe += s.probe_every_s
                task = asyncio.create_task(coro)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        return self.outcomes

    # -- one request -----------------------------------------------------------------------------

    async def request(self, session: aiohttp.ClientSession, due: float) -> None:
        rng = self.rng
        kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        if kind == "bad":
            kind = rng.choice(BAD_KINDS)
        builder = getattr(self, f"_{kind}")
        method, path, headers, body, counters, judge = builder()
        await self._send(session, due, kind, method, path, headers, body, counters, judge)

    async def probe(self, session: aiohttp.ClientSession, due: float) -> None:
        dom_id = f"p{next(self._probe_ids)}"
        counters = [(PROBE_LABEL, "probe", dom_id)]
        path = f"/track/?labels={quote(f'{PROBE_LABEL}:probe:{dom_id}')}"
        status = await self._send(
            session, due, "probe", "GET", path, {"user-agent": BROWSER_UA}, None, counters, _all_or_nothing
        )
        if 200 <= status < 300:
            self.outcomes.probes_acked[dom_id] = time.time()

    async def _send(
        self,
        session: aiohttp.ClientSession,
        due: float,
        kind: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        counters: list[Counter3] | list[tuple[Counter3, int | None]],
        judge: Any,
    ) -> int:
        """Send the request under a key of its own until it gets a final answer; record every send."""
        key = str(uuid.uuid4())
        if kind in ("json", "mixed_json", "bad_json", "bad_type"):
            headers = {**headers, "Idempotency-Key": key}
        else:
            path += ("&" if "?" in path else "?") + f"idempotency_key={key}"
        o = self.outcomes
        sent_at = due
        for attempt in itertools.count():
            status, answer, dropped_header, recorded, retry_after = await self._send_once(
                session, method, path, headers, body
            )
            answered = time.time()
            keys = [self._key(*_with_ts(c), due, answered) for c in counters]
            final = status not in (0, 429, 503)
            counted, refused = judge(status, answer, dropped_header, keys, o.anomalies, kind) if final else ([], [])
            o.records.append(
                Record(sent_at, answered - sent_at, kind, status, len(counted) if 200 <= status < 300 else 0, attempt)
            )
            if final:
                break
            wait = min(self.settings.backoff_s * 2.0**attempt, 30.0) * (0.5 + self.rng.random() / 2)
            wait = max(wait, retry_after)
            if answered + wait - due > self.settings.retry_for_s:
                o.gave_up.update(keys)
                o.anomalies.append(f"{kind}: no final answer within {self.settings.retry_for_s:.0f} s, last {status}")
                return status
            o.sent_again["no answer" if not status else f"503 {recorded}" if status == 503 else str(status)] += 1
            await asyncio.sleep(wait)
            sent_at = time.time()
        o.answered_in.append(answered - due)
        if 200 <= status < 300:
            o.expected.update(counted)
            for name, since in list(o.after.items()):
                if sent_at >= since:
                    o.expected_since[name].update(k[0] for k in counted)
        o.refused.update(refused)
        return status

    async def _send_once(
        self, session: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes, str | None, str | None, float]:
        """(status, body, X-Tally-Dropped, X-Tally-Recorded, Retry-After in seconds); status 0: no answer."""
        self.in_flight += 1
        try:
            async with session.request(method, self.url + path, headers=headers, data=body) as response:
                answer = await response.read()
                retry_after = response.headers.get("Retry-After", "")
                return (
                    response.status,
                    answer,
                    response.headers.get("X-Tally-Dropped"),
                    response.headers.get("X-Tally-Recorded"),
                    float(retry_after) if retry_after.isdigit() else 0.0,
                )
        except (aiohttp.ClientError, TimeoutError):
            return 0, b"", None, None, 0.0
        finally:
            self.in_flight -= 1

    def _key(self, counter: Counter3, ts_ms: int | None, sent: float, answered: float) -> Key:
        if ts_ms is not None:
            return (self.day(ts_ms / 1000), *counter)
        first, last = self.day(sent), self.day(answered)
        return (first if first == last else "?", *counter)

    # -- the request kinds: (method, path, headers, body, counters, judge) ------------------------

    def _beacon(self, n: int) -> list[Counter3]:
        return [self.universe.pick() for _ in range(n)]

    def _get(self) -> tuple[Any, ...]:
        counters = self._beacon(self.rng.randint(1, 3))
        path = f"/track/?labels={quote(labels_syntax(counters, self.rng), safe='|:')}"
        return "GET", path, {"user-agent": BROWSER_UA}, None, counters, _all_or_nothing

    def _pixel(self) -> tuple[Any, ...]:
        counters = self._beacon(self.rng.randint(1, 2))
        path = f"/track.gif?labels={quote(labels_syntax(counters, self.rng), safe='|:')}"
        return "GET", path, {"user-agent": BROWSER_UA}, None, counters, _all_or_nothing

    def _text(self) -> tuple[Any, ...]:
        counters = self._beacon(self.rng.randint(1, 5))
        body = labels_syntax(counters, self.rng).encode()
        headers = {"user-agent": BROWSER_UA, "content-type": "text/plain;charset=UTF-8"}
        return "POST", "/track/", headers, body, counters, _all_or_nothing

    def _json_events(self, n: int) -> list[tuple[Counter3, int | None]]:
        now = time.time()
        return [(self.universe.pick(), self.sim_ts_ms(now) if self.rng.random() < 0.7 else None) for _ in range(n)]

    def _json(self) -> tuple[Any, ...]:
        events = self._json_events(self.rng.randint(1, 40))
        body = json.dumps({"events": [_event_json(c, ts) for c, ts in events]}).encode()
        headers = {"user-agent": BROWSER_UA, "content-type": "application/json"}
        return "POST", "/track/", headers, body, events, _all_or_nothing

    def _mixed_json(self) -> tuple[Any, ...]:
        """Good events and invalid ones: the good ones count, the invalid ones are dropped (202)."""
        good = self._json_events(3)
        docs = [_event_json(c, ts) for c, ts in good]
        bad_at = sorted(self.rng.sample(range(5), 2))
        for index in bad_at:
            docs.insert(index, {"label": "bad label!", "category": "forms"})
        headers = {"user-agent": BROWSER_UA, "content-type": "application/json"}

        def judge(status: int, answer: bytes, dropped: str | None, keys: list[Key], anomalies: list[str], kind: str):
            counted, refused = _all_or_nothing(status, answer, dropped, keys, anomalies, kind, expect_dropped=2)
            if 200 <= status < 300:
                indices = [d.get("index") for d in json.loads(answer).get("dropped", [])]
                if indices != bad_at:
                    anomalies.append(f"mixed_json: dropped {indices}, sent bad at {bad_at}")
            return counted, refused

        return "POST", "/track/", headers, json.dumps({"events": docs}).encode(), good, judge

    def _bad_label(self) -> tuple[Any, ...]:
        counters = self._beacon(2)
        labels = labels_syntax(counters, self.rng).rstrip("|") + "|b@d label"
        return "GET", f"/track/?labels={quote(labels)}", {"user-agent": BROWSER_UA}, None, counters, _refused(400)

    def _too_many(self) -> tuple[Any, ...]:
        counters = self._beacon(51)
        body = labels_syntax(counters, self.rng).encode()
        headers = {"user-agent": BROWSER_UA, "content-type": "text/plain"}
        return "POST", "/track/", headers, body, counters, _refused(400)

    def _url_label(self) -> tuple[Any, ...]:
        headers = {"user-agent": BROWSER_UA, "content-type": "text/plain"}
        return "POST", "/track/", headers, b"https://shop.example/cart?id=1", [], _refused(400)

    def _bad_type(self) -> tuple[Any, ...]:
        counters = self._beacon(1)
        headers = {"user-agent": BROWSER_UA, "content-type": "application/xml"}
        body = f"<label>{counters[0][0]}</label>".encode()
        return "POST", "/track/", headers, body, counters, _refused(415)

    def _bad_json(self) -> tuple[Any, ...]:
        counters = self._beacon(1)
        body = ('{"events": [{"label": "' + counters[0][0] + '"}').encode()  # cut short
        headers = {"user-agent": BROWSER_UA, "content-type": "application/json"}
        return "POST", "/track/", headers, body, counters, _refused(400)

    def _bot(self) -> tuple[Any, ...]:
        counters = self._beacon(self.rng.randint(1, 3))
        path = f"/track/?labels={quote(labels_syntax(counters, self.rng), safe='|:')}"
        return "GET", path, {"user-agent": BOT_UA}, None, counters, _bot_judge


def _with_ts(item: Counter3 | tuple[Counter3, int | None]) -> tuple[Counter3, int | None]:
    """A beacon's counter (the server stamps it), or a JSON event's (counter, client ts ms or None)."""
    if len(item) == 3:
        return item, None  # type: ignore[return-value]
    return item  # type: ignore[return-value]


def _event_json(counter: Counter3, ts_ms: int | None) -> dict[str, Any]:
    label, category, dom_id = counter
    doc: dict[str, Any] = {"label": label}
    if category:
        doc["category"] = category
    if dom_id:
        doc["dom_id"] = dom_id
    if ts_ms is not None:
        doc["ts"] = ts_ms
    return doc


def _all_or_nothing(
    status: int,
    answer: bytes,
    dropped: str | None,
    keys: list[Key],
    anomalies: list[str],
    kind: str,
    expect_dropped: int = 0,
) -> tuple[list[Key], list[Key]]:
    """Every event counts on a 2xx; the answer must say so. (Judged on a final answer only: not 0, 429, 503.)"""
    if not 200 <= status < 300:
        anomalies.append(f"{kind}: status {status} for a good request: {answer[:200]!r}")
        return [], []
    if kind == "pixel":
        accepted = len(keys) - int(dropped or 0)
    else:
        doc = json.loads(answer)
        accepted = doc.get("accepted", -1)
        if doc.get("restamped"):
            anomalies.append(f"{kind}: {doc['restamped']} client timestamps restamped")
    if accepted != len(keys) or int(dropped or 0) != expect_dropped:
        anomalies.append(f"{kind}: accepted {accepted} of {len(keys)}, dropped {dropped}")
    return keys, []


def _refused(expected: int) -> Any:
    def judge(
        status: int, answer: bytes, dropped: str | None, keys: list[Key], anomalies: list[str], kind: str
    ) -> tuple[list[Key], list[Key]]:
        if status != expected:
            anomalies.append(f"{kind}: status {status}, expected {expected}: {answer[:200]!r}")
        if 200 <= status < 300:  # should not happen; then its events are in Kafka
            return keys, []
        return [], keys

    return judge


def _bot_judge(
    status: int, answer: bytes, dropped: str | None, keys: list[Key], anomalies: list[str], kind: str
) -> tuple[list[Key], list[Key]]:
    if 200 <= status < 300:
        doc = json.loads(answer)
        if doc.get("accepted") != 0 or int(dropped or 0) != len(keys):
            anomalies.append(f"bot: accepted {doc.get('accepted')}, dropped {dropped} of {len(keys)}")
        return [], keys
    anomalies.append(f"bot: status {status}")
    return [], []


def boundary_for(now: datetime, seconds: float, max_past_s: int = 86_400, margin_s: float = 120) -> datetime | None:
    """The day boundary the simulated clock crosses halfway: the start of ``now``'s day (``now`` in the
    day's zone), if the oldest simulated time stays within ingest's bound on client timestamps; else None
    (the run starts within ``seconds/2`` of the next midnight, and crosses a real one)."""
    midnight = datetime.combine(now.date(), datetime.min.time(), now.tzinfo)
    if now.timestamp() - (midnight.timestamp() - seconds / 2) > max_past_s - margin_s:
        return None
    return midnight
