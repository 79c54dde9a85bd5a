"""How fast the read side answers at 500 requests/s, beside ClickHouse itself.

    flock /tmp/tally-bench.lock .venv/bin/python -m bench.query [--rate 500] [--duration 10]

Loads 10,000 labels x 90 days of daily roll-ups into a database of its own on
the running ClickHouse (the local stack's, `make up`), starts ``tally ingest``
serving the query routes on it, and sends, open loop at a fixed rate (latency
is counted from when each request was due, so a stall is not hidden):

    get_stats   ``/get_stats/`` for 20 dom ids (a page's heat map), today
    api_30d     ``/api/v1/counts?label=L&group_by=day`` over 30 days (a label's chart)

each three ways, in the same run: to the app with its cache (the default
1 s), to the app with the cache off (``TALLY_API_CACHE_TTL_S=0``: every
request reaches ClickHouse), and the same SQL straight to ClickHouse over
HTTP. ``api_30d`` also runs with a different label per request
(``api_30d_varied``), the case no cache helps. The table (p50, p99, max,
errors, achieved rate) goes to stdout and bench/results/query-<rate>rps.txt.

The load generator, the app and ClickHouse share the machine's two cores,
so the app's figures include the cost of the load generator beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
from clickhouse_driver.util.escape import escape_params

from query.counts import grouped_sql
from query.heatmap import STATS_BY_DOM_IDS
from query.params import CountsRequest
from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client, config_from
from stack.ports import free_port
from stack.processes import Managed, http_status
from stack.stack import StackSettings, tally_command

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LABELS = 10_000
DAYS = 90
CATEGORIES = ("forms", "nav", "shop", "video", "")
TOKEN = "bench-read-token-0123456789"
DOM_IDS = 20


@dataclass
class Scenario:
    name: str
    target: str  # "app (cache 1 s)", "app (no cache)", "clickhouse http"
    request: Callable[[int], tuple[str, dict[str, str], bytes | None]]
    """i -> (url, headers, body)"""


@dataclass
class Result:
    scenario: Scenario
    latencies_ms: list[float]
    errors: int
    wall_s: float

    def row(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        rate = len(lat) / self.wall_s if self.wall_s else 0
        return (
            f"{self.scenario.name:<15} {self.scenario.target:<17} {p50:>8.2f} {p99:>8.2f} {lat[-1] if lat else 0:>8.2f}"
            f" {self.errors:>6} {rate:>6.0f}"
        )


# -- data -------------------------------------------------------------------------------


def load(settings: ClickHouseSettings, today: date) -> None:
    migrations.apply(settings)
    with clickhouse_client(settings) as client:
        written = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        rng = random.Random(5)
        for day_index in range(DAYS):
            day = today - timedelta(days=day_index)
            rows = [
                (day, f"label_{i:05d}", CATEGORIES[i % 5], f"dom_{i:05d}", rng.randint(1, 5000), 1, written)
                for i in range(LABELS)
            ]
            client.execute(
                "INSERT INTO daily_counts (day, label, category, dom_id, counter, version, written_at) VALUES", rows
            )
        client.execute("OPTIMIZE TABLE daily_counts FINAL")  # merged, as a long-running table mostly is


def drop(settings: ClickHouseSettings) -> None:
    with clickhouse_client(settings, database="default") as admin:
        admin.execute(f"DROP DATABASE IF EXISTS `{settings.database}`")


# -- the app ------------------------------------------------------------------------------


@contextmanager
def app(settings: ClickHouseSettings, port: int, cache_ttl_s: str) -> Iterator[None]:
    env = {
        **os.environ,
        "TALLY_INGEST_ROUTES": "query",
        "TALLY_INGEST_PORT": str(port),
        "TALLY_CLICKHOUSE_HOST": settings.host,
        "TALLY_CLICKHOUSE_PORT": str(settings.port),
        "TALLY_CLICKHOUSE_DATABASE": settings.database,
        "TALLY_API_READ_TOKENS": TOKEN,
        "TALLY_API_PUBLIC_GET_STATS": "false",
        "TALLY_API_CACHE_TTL_S": cache_ttl_s,
    }
    stack = StackSettings.from_env(os.environ)
    server = Managed(f"bench-query-{port}", stack.root / "bench" / "run", stack.root / "bench", stack.start_timeout_s)
    try:
        server.start_and_wait(
            [tally_command(), "ingest"], ready=lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, env=env
        )
        yield
    finally:
        server.stop(timeout_s=15)


# -- load -----------------------------------------------------------------------------------


async def run(scenario: Scenario, rate: float, duration_s: float, warmup_s: float) -> Result:
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one(i: int, due: float, measured: bool) -> None:
            nonlocal errors
            url, headers, body = scenario.request(i)
            try:
                method = session.post if body is not None else session.get
                async with method(url, headers=headers, data=body) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if not measured:
                return
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        tasks = []
        total = int((warmup_s + duration_s) * rate)
        start = time.perf_counter() + 0.05
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due, measured=i >= warmup_s * rate)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - (start + warmup_s)
    return Result(scenario, latencies, errors, wall)


# -- scenarios --------------------------------------------------------------------------------


class Requests:
    """The two queries, sent to the app (``/get_stats/``, ``/api/v1``) or as their SQL to ClickHouse over HTTP."""

    def __init__(self, settings: ClickHouseSettings, http_port: int, today: date) -> None:
        rng = random.Random(7)
        self.settings = settings
        self.http_port = http_port
        self.today = today
        self.start = today - timedelta(days=29)
        self.dom_ids = sorted(f"dom_{rng.randrange(LABELS):05d}" for _ in range(DOM_IDS))
        self.labels = [f"label_{rng.randrange(LABELS):05d}" for _ in range(5000)]

    def label(self, query: str, i: int) -> str:
        return self.labels[i % len(self.labels)] if query == "api_30d_varied" else self.labels[0]

    def app(self, url: str, query: str) -> Callable[[int], tuple[str, dict[str, str], bytes | None]]:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        if query == "get_stats":
            return lambda i: (f"{url}/get_stats/?dom_ids={'|'.join(self.dom_ids)}|", auth, None)
        path = f"{url}/api/v1/counts?from={self.start}&to={self.today}&group_by=day&label="
        return lambda i: (path + self.label(query, i), auth, None)

    def clickhouse(self, query: str) -> Callable[[int], tuple[str, dict[str, str], bytes | None]]:
        params = urllib.parse.urlencode({"database": self.settings.database, "enable_optimize_predicate_expression": 1})
        url = f"http://{self.settings.host}:{self.http_port}/?{params}"

        def request(i: int) -> tuple[str, dict[str, str], bytes | None]:
            if query == "get_stats":
                sql, values = STATS_BY_DOM_IDS, {"day": self.today, "dom_ids": tuple(self.dom_ids)}
            else:
                wanted = CountsRequest(
                    start=self.start, end=self.today, labels=(self.label(query, i),), group_by=("day",)
                )
                sql, values = grouped_sql(wanted)
            return url, {}, ((sql % escape_params(values, None)) + "\nFORMAT JSONCompact").encode()

        return request


QUERIES = ("get_stats", "api_30d", "api_30d_varied")


def wait_until_idle(settings: ClickHouseSettings, http_port: int, timeout_s: float = 120) -> None:
    """Until ClickHouse runs no query but this one (a saturated run leaves a queue behind it)."""
    url = f"http://{settings.host}:{http_port}/?query=SELECT+count()+FROM+system.processes"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:
            if int(response.read()) <= 1:
                return
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (default 500)")
    parser.add_argument(
        "--overhead-rate", type=float, default=100.0, help="a rate ClickHouse alone sustains, for the app's overhead"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent first and not measured (default 2)")
    parser.add_argument("--clickhouse-http-port", type=int, default=8123)
    args = parser.parse_args()

    base = ClickHouseSettings.from_config(config_from(os.environ))
    settings = ClickHouseSettings(base.host, base.port, f"bench_query_{uuid.uuid4().hex[:8]}", base.user, base.password)
    today = datetime.now(UTC).date()
    version = urllib.request.urlopen(f"http://{base.host}:{args.clickhouse_http_port}/?query=SELECT+version()")
    lines = [
        f"# bench/query.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores",
        f"# {LABELS} labels x {DAYS} days of daily roll-ups ({LABELS * DAYS:,} rows), "
        f"ClickHouse {version.read().decode().strip()}",
        f"# open loop, {args.duration:.0f} s measured after {args.warmup:.0f} s warm-up; latencies in ms from when"
        " each request was due",
        f"{'rate':>5} {'query':<15} {'target':<17} {'p50':>8} {'p99':>8} {'max':>8} {'errors':>6} {'req/s':>6}",
    ]
    print("\n".join(lines), flush=True)
    t0 = time.monotonic()
    load(settings, today)
    print(f"# loaded in {time.monotonic() - t0:.0f} s", flush=True)
    requests = Requests(settings, args.clickhouse_http_port, today)
    direct, cached, uncached = "clickhouse http", "app (cache 1 s)", "app (no cache)"
    # What a rate ClickHouse sustains shows first (the app's own cost), then the target rate: cached runs,
    # then those that saturate the machine. Each app run gets a fresh process and an idle ClickHouse, so
    # no run inherits the backlog of the one before.
    plan = [(args.overhead_rate, q, t) for q in QUERIES[:2] for t in (direct, uncached)]
    plan += [(args.rate, q, cached) for q in QUERIES]
    plan += [(args.rate, q, t) for q in QUERIES for t in (direct, uncached)]
    try:
        for rate, query, target in plan:
            wait_until_idle(settings, args.clickhouse_http_port)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with app(settings, port, "1.0" if target == cached else "0"):
                send = requests.clickhouse(query) if target == direct else requests.app(url, query)
                result = asyncio.run(run(Scenario(query, target, send), rate, args.duration, args.warmup))
            lines.append(f"{rate:>5.0f} {result.row()}")
            print(lines[-1], flush=True)
    finally:
        drop(settings)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"query-{args.rate:.0f}rps.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
