"""The system benchmark's load generator: tally.js-shaped JSON batches and seed-style GETs, open loop.

    python -m bench.system_load --url http://127.0.0.1:PORT --rate EVENTS_PER_S --seconds S --prefix t3.

Requests are due at ``rate`` events a second whatever the answers do (open
loop); each is one of

- a JSON batch, ``POST /track/`` ``{"events": [...]}`` as web/tally.js sends
  it: 2 to 50 events (most a dozen or fewer), each with its client ``ts``;
- the seed's ``GET /track/?labels=a|b:cat:dom`` with 1 to 3 labels,

about three JSON batches to one GET, over the labels of
:class:`soak.load.Universe` (Zipf-like popularity, a few category and dom_id
pairs each) named with ``prefix``. Every ``probe_every_s`` one probe: a GET
for a counter of its own (``<prefix>probe:p:<prefix>pN``), printed as a JSON
line (``{"probe": dom_id, "acked": epoch s}``) as soon as its 2xx comes.

To stay off the critical path on a 2-core machine it is one process on
uvloop speaking HTTP/1.1 itself over a pool of keep-alive connections: no
client library's per-request machinery. A request that finds every
connection busy and ``max_queued`` waiting is not sent (``not_sent``).

At the end one JSON line: events offered, the 2xx events per counter
(``expected``: what must be counted), statuses, request latency (from when
it was due), and the process's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote, urlsplit

from soak.load import BROWSER_UA, Universe, labels_syntax
from soak.report import pct

Counter3 = tuple[str, str, str]
JSON_SHARE = 0.75
"""Of the requests (probes aside), the share that are JSON batches; the rest are the seed's GETs."""
MAX_BATCH = 50  # web/tally.js's default batch
CONNECTIONS = 256
"""Keep-alive connections, as many browsers' would be: enough that ingest's ack wait (a request is answered once
Kafka has its events) does not cap the rate."""
MAX_QUEUED = 4000
PROBE_EVERY_S = 0.2
TICK_S = 0.005


class Request(NamedTuple):
    due: float
    """Monotonic seconds."""
    raw: bytes
    counters: list[Counter3]
    probe: str
    """The probe's dom_id, or ""."""


@dataclass
class Tally:
    """What the load saw."""

    offered: int = 0
    not_sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    expected: Counter[Counter3] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)


def batch_size(rng: random.Random) -> int:
    """2 to 50 events, a dozen on average: most pages send a few, a busy one a full batch."""
    return min(MAX_BATCH, 2 + int(rng.expovariate(1 / 10)))


class Requests:
    """Builds the raw HTTP/1.1 requests of the load."""

    def __init__(self, host: str, port: int, prefix: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.universe = Universe(300, self.rng, prefix=prefix)
        self.prefix = prefix
        self.host = f"{host}:{port}"
        self.probes = 0

    def _head(self, method: str, path: str, extra: str = "") -> str:
        return (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: {BROWSER_UA}\r\n"
            f"Origin: http://shop.example\r\n{extra}"
        )

    def next(self, due: float) -> Request:
        rng = self.rng
        if rng.random() < JSON_SHARE:
            counters = [self.universe.pick() for _ in range(batch_size(rng))]
            now_ms = int(time.time() * 1000)
            events = [{"label": label, "category": cat, "dom_id": dom, "ts": now_ms} for label, cat, dom in counters]
            body = json.dumps({"events": events}, separators=(",", ":")).encode()
            head = self._head("POST", "/track/", f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
            return Request(due, head.encode() + b"\r\n" + body, counters, "")
        counters = [self.universe.pick() for _ in range(rng.randint(1, 3))]
        path = f"/track/?labels={quote(labels_syntax(counters, rng), safe='|:')}"
        return Request(due, self._head("GET", path).encode() + b"\r\n", counters, "")

    def probe(self, due: float) -> Request:
        dom_id = f"{self.prefix}p{self.probes}"
        self.probes += 1
        counter = (f"{self.prefix}probe", "p", dom_id)
        path = f"/track/?labels={quote(':'.join(counter))}"
        return Request(due, self._head("GET", path).encode() + b"\r\n", [counter], dom_id)


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """The status and body of the answer; status 0 if none came."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    close = True
                elif name == b"transfer-encoding":
                    raise ValueError("chunked answers are not read here")
            body = await self.reader.readexactly(length) if length else b""
            if close:
                self.close()
            return status, body
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return 0, b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(url: str, rate: float, seconds: float, prefix: str, seed: int) -> Tally:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = Requests(host, port, prefix, seed)
    tally = Tally()
    queue: asyncio.Queue[Request | None] = asyncio.Queue()

    async def connection() -> None:
        conn = Connection(host, port)
        while (request := await queue.get()) is not None:
            status, body = await conn.send(request.raw)
            tally.latencies.append(time.monotonic() - request.due)
            tally.statuses[status] += 1
            if not 200 <= status < 300:
                continue
            accepted = json.loads(body).get("accepted") if body.startswith(b"{") else None
            if accepted != len(request.counters):
                tally.anomalies.append(f"{status}: accepted {accepted} of {len(request.counters)}")
                continue
            tally.expected.update(request.counters)
            if request.probe:
                print(json.dumps({"probe": request.probe, "acked": time.time()}), flush=True)
        conn.close()

    senders = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    started = time.monotonic()
    next_probe = 0.0
    while (elapsed := time.monotonic() - started) < seconds:
        now = time.monotonic()
        if elapsed >= next_probe:
            queue.put_nowait(requests.probe(started + next_probe))
            next_probe += PROBE_EVERY_S
        while tally.offered < rate * elapsed:
            request = requests.next(now)
            tally.offered += len(request.counters)
            if queue.qsize() >= MAX_QUEUED:
                tally.not_sent += 1
                continue
            queue.put_nowait(request)
        await asyncio.sleep(TICK_S)
    for _ in senders:
        queue.put_nowait(None)
    await asyncio.gather(*senders)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="events/s offered")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--prefix", required=True, help="of every label, so that a step's counters are its own")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    import uvloop

    cpu_before, started = time.process_time(), time.monotonic()
    tally = uvloop.run(run(args.url, args.rate, args.seconds, args.prefix, args.seed))
    elapsed = time.monotonic() - started
    summary = {
        "offered": tally.offered,
        "not_sent": tally.not_sent,
        "statuses": {str(k): v for k, v in tally.statuses.items()},
        "events_2xx": sum(tally.expected.values()),
        "expected": {"\t".join(k): v for k, v in tally.expected.items()},
        "seconds": elapsed,
        "latency_p50": pct(tally.latencies, 50),
        "latency_p99": pct(tally.latencies, 99),
        "cpu_s": time.process_time() - cpu_before,
        "anomalies": tally.anomalies[:20],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
