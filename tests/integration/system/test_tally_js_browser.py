"""tally.js, the demo and the seed's snippet in real headless Chromium (Debian's), driven by Playwright.

With the real pipeline (``tally ingest`` → Kafka → ``tally worker`` → ClickHouse): clicks on the
demo, and a navigation right after a click, reach ``daily_stats`` exactly; clicks through a network
that loses answers after ingest took the request, and through 503s of both kinds, are each counted
exactly once (the batch's idempotency key); the heat map colours and counts the links; a page on
another origin sends through CORS; the library sends a batch again after 503s and each event is
counted once; the seed's jQuery snippet works unchanged.

Without servers (the library against a fake endpoint, Playwright answering): batching, one key per
batch through its retries and into the beacon, the transports when the page goes away, the retry
bounds, do-not-track, no cookies.

The browser says it is a desktop Chromium: ingest rightly drops "HeadlessChrome" as a bot.
``TALLY_UPDATE_SCREENSHOT=1`` writes the picture of the heat map in docs/tally-js.md, docs/heatmap.png.
"""

from __future__ import annotations

import colorsys
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, expect, sync_playwright

from ingest.web import LIBRARY
from stack.stack import tally_command
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.paths import ROOT
from tests.support.servers import Services, daily_stats

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.browser]

SCREENSHOT = ROOT / "docs" / "heatmap.png"
T = TypeVar("T")
COUNTS_TIMEOUT_S = 90.0
CORS_HEADERS = {  # what ingest's CORS middleware adds to an answer for another origin
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "X-Tally-Dropped, X-Tally-Error, Retry-After, X-Tally-Fresh-As-Of",
}  # a shared 2-core machine: the worker writes every second, but may wait its turn


def desktop_user_agent() -> str:
    """What a visitor's Chromium of this version says (ingest drops "HeadlessChrome" as a bot)."""
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=True).stdout
    major = re.search(r"(\d+)\.\d+\.\d+", version)
    assert major, version
    return (
        f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major[1]}.0.0.0 Safari/537.36"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make install` installs Debian's chromium"
    # The flag, not the context's user_agent: a beacon that outlives its page leaves without the context's.
    args = [*CHROMIUM_ARGS, f"--user-agent={desktop_user_agent()}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


@dataclass
class Visit:
    """A browser context (one visitor) and what it sent to Tally."""

    context: BrowserContext
    page: Page
    sent: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def beacons(self) -> list[Request]:
        return [r for r in self.sent if "/track" in r.url]

    def events_sent(self) -> int:
        return sum(len(json.loads(r.post_data or "")["events"]) for r in self.beacons() if r.method == "POST")


@pytest.fixture
def visit(browser: Browser) -> Iterator[Visit]:
    desktop = (
        f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{browser.version} Safari/537.36"
    )
    context = browser.new_context(viewport={"width": 820, "height": 420}, user_agent=desktop, timezone_id="UTC")
    page = context.new_page()
    visit = Visit(context, page)
    context.on(
        "request", lambda request: visit.sent.append(request)
    )  # the context's: beacons sent as a page unloads are seen too
    page.on("pageerror", lambda exc: visit.errors.append(str(exc)))
    yield visit
    assert context.cookies() == []  # tally.js sets none, and Tally neither
    assert all("cookie" not in r.headers for r in visit.beacons())
    context.close()
    assert visit.errors == []


@pytest.fixture
def live(services: Services) -> Services:
    """The whole pipeline for one test: its own topic, worker and database (ingest starts while the worker joins)."""
    ingest = services.process("ingest")
    ingest.start([tally_command(), "ingest"], env=services.env())
    services.start_worker()
    ingest.wait_until(lambda: _answers(f"{services.ingest_url}/readyz"))
    return services


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Site:
    """A second origin: a static server on another port, as a customer's site would be."""

    root: Path
    url: str

    def page(self, name: str, body: str) -> str:
        (self.root / name).write_text(
            f'<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f"</head><body>{body}</body></html>"
        )
        return f"{self.url}/{name}"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    shutil.copyfile(LIBRARY, root / "tally.js")  # for the tests without servers: the file /tally.js serves
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(root, f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()
    thread.join()


def loaded(page: Page) -> None:
    page.wait_for_function("() => window.tally && typeof window.tally.track === 'function'")


def until(page: Page, check: Callable[[], T], timeout_s: float = 10.0, interval_ms: int = 50) -> T:
    """``eventually``, waiting in the browser: Playwright's sync API answers routes and records
    requests only while Python is inside one of its calls, never during a ``time.sleep``."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"still {value!r} after {timeout_s}s"
        page.wait_for_timeout(interval_ms)
    return value


def counts_become(page: Page, services: Services, expected: dict[tuple[str, str, str], int]) -> None:
    """``daily_stats`` shows exactly ``expected`` (every counter of the test), and still does a moment later."""
    seen: list[dict[tuple[str, str, str], int]] = [{}]

    def counted() -> bool:
        seen[0] = daily_stats(services.clickhouse)
        return seen[0] == expected

    try:
        until(page, counted, COUNTS_TIMEOUT_S, 500)
    except AssertionError:
        assert seen[0] == expected  # the difference, named
    page.wait_for_timeout(2500)  # a duplicate would land within the worker's next flushes
    assert daily_stats(services.clickhouse) == expected


def hue(css_colour: str) -> float:
    """The hue in degrees of a computed ``rgb(r, g, b)``."""
    r, g, b = (int(n) / 255 for n in re.findall(r"\d+", css_colour)[:3])
    return colorsys.rgb_to_hls(r, g, b)[0] * 360


def demo_links(page: Page) -> dict[str, dict[str, str]]:
    return page.eval_on_selector_all(
        "#tracked-links a",
        """links => Object.fromEntries(links.map(a => [a.id, {
             text: a.textContent, background: getComputedStyle(a).backgroundColor, colour: getComputedStyle(a).color,
             box: JSON.stringify(a.getBoundingClientRect())}]))""",
    )


# With the real pipeline.


def test_demo_counts_every_click_exactly_then_draws_the_heat_map(live: Services, visit: Visit) -> None:
    page = visit.page
    demo = f"{live.ingest_url}/demo/"
    page.goto(demo)
    loaded(page)

    for _ in range(4):
        page.click("#link1")
    page.click("#link2")
    page.click("#link2")
    until(page, lambda: visit.events_sent() == 6, 10)  # in batches, a second after a first click
    assert len(visit.beacons()) < 6
    assert {r.resource_type for r in visit.beacons()} == {"fetch"}  # the page lives: an answer it can read

    # Leaving right after a click: the queued click leaves with the page (sendBeacon on pagehide).
    page.click("#link2")
    page.goto(f"{live.ingest_url}/healthz")
    page.goto(demo)
    loaded(page)
    # Harsher: the click and the navigation in one task.
    with page.expect_navigation():
        page.evaluate("() => { document.getElementById('link3').click(); location.href = '/healthz'; }")
    # (Requests that outlive their page are out of Playwright's sight: ClickHouse is the witness.)

    clicks = {"link1": 4, "link2": 3, "link3": 1}
    counts_become(page, live, {("link_clicked", "demo", dom_id): n for dom_id, n in clicks.items()})

    # The heat map, as the seed's page drew it: each link coloured from cold blue to hot red, with its count.
    page.goto(demo)
    loaded(page)
    before = demo_links(page)
    page.click("#get-stats")
    badges = page.locator("#tracked-links [data-tally-count]")
    expect(badges).to_have_count(4)
    links = demo_links(page)
    assert {i: link["text"] for i, link in links.items()} == {
        "link1": "Test link 1 (clicked 4 times)",
        "link2": "Test link 2 (clicked 3 times)",
        "link3": "Test link 3 (clicked 1 time)",
        "link4": "Test link 4 (clicked 0 times)",
    }
    hues = {i: hue(link["background"]) for i, link in links.items()}
    assert hues["link1"] == pytest.approx(0, abs=2)  # the most clicked: red
    assert hues["link4"] == pytest.approx(240, abs=2)  # never clicked: blue
    assert hues["link1"] < hues["link2"] < hues["link3"] < hues["link4"]
    assert all(link["colour"] == "rgb(255, 255, 255)" for link in links.values())
    shot = page.screenshot(full_page=True)
    if os.environ.get("TALLY_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(shot)

    # As an overlay: the same colours and counts over the links, whose own styles stay as they were.
    page.reload()
    loaded(page)
    page.click("#get-overlay")
    boxes = page.locator("#tally-heatmap [data-tally-count]")
    expect(boxes).to_have_count(4)
    assert demo_links(page) == before
    overlay = boxes.evaluate_all(
        """boxes => boxes.map(b => ({id: b.dataset.tallyFor, text: b.textContent,
             background: getComputedStyle(b).backgroundColor, box: b.getBoundingClientRect().toJSON()}))"""
    )
    assert {b["id"]: b["text"] for b in overlay} == {
        "link1": "clicked 4 times",
        "link2": "clicked 3 times",
        "link3": "clicked 1 time",
        "link4": "clicked 0 times",
    }
    for b in overlay:
        assert hue(b["background"]) == pytest.approx(hues[b["id"]], abs=1)
        link_box = json.loads(before[b["id"]]["box"])
        assert [round(b["box"][k]) for k in ("x", "y", "width", "height")] == [
            round(link_box[k]) for k in ("x", "y", "width", "height")
        ]


def test_page_on_another_origin_sends_through_cors_and_through_503s(live: Services, visit: Visit, site: Site) -> None:
    page = visit.page
    shop = site.page(
        "shop.html",
        # Events pushed before the script loads are kept; the endpoint is where tally.js came from.
        '<script>(window.tally = window.tally || []).push("page_view:shop")</script>'
        f'<script src="{live.ingest_url}/tally.js" async></script>'
        '<button id="buy" data-tally-label="add_to_cart" data-tally-category="shop">Buy</button>'
        '<a id="next" href="/other.html" data-tally-label="next_page" data-tally-category="shop"><span>Next</span></a>',
    )
    site.page("other.html", "<p>Another page of the shop.</p>")
    page.goto(shop)
    loaded(page)
    page.click("#buy")
    page.click("#buy")
    page.evaluate("() => tally.track(['search:shop:box', 'filter+shop'])")
    until(page, lambda: len(visit.beacons()) >= 1, 10)
    first = visit.beacons()[0]
    assert first.all_headers()["origin"] == site.url
    response = first.response()
    assert response is not None and response.status == 202
    assert response.headers["access-control-allow-origin"] == "*"  # the library can read the answer

    # Tally answers 503 three times (as ingest does when Kafka cannot take events), then recovers.
    answers: list[int] = []
    times: list[float] = []

    def tally_is_down(route: Route) -> None:
        times.append(time.monotonic())
        if len(answers) < 3:
            answers.append(503)
            route.fulfill(
                status=503,
                headers={"Retry-After": "1", **CORS_HEADERS},
                json={"error": "unavailable", "message": "Kafka did not acknowledge in time"},
            )
        else:
            answers.append(0)  # passed through to ingest
            route.continue_()

    until(page, lambda: visit.events_sent() == 5, 10)
    sent_before = len(visit.beacons())
    visit.context.route(re.compile(r".*/track/(\?.*)?$"), tally_is_down)
    page.click("#buy")
    page.evaluate("() => tally.track('retry_probe:shop')")
    until(page, lambda: answers == [503, 503, 503, 0], 30)
    attempts = [json.loads(r.post_data or "")["events"] for r in visit.beacons()[sent_before:]]
    assert len(attempts) == 4
    assert all(events == attempts[0] for events in attempts)  # the same events, with their first timestamps
    assert [e["label"] for e in attempts[0]] == ["add_to_cart", "retry_probe"]
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times))  # Retry-After, read cross-origin
    assert page.evaluate("() => tally.dropped") == 0
    visit.context.unroute_all()

    with page.expect_navigation():
        page.click("#next span")  # a click inside a tracked link counts for the link; it leaves with the page
    assert page.url == f"{site.url}/other.html"

    counts_become(
        page,
        live,
        {
            ("page_view", "shop", ""): 1,
            ("add_to_cart", "shop", "buy"): 3,
            ("search", "shop", "box"): 1,
            ("filter", "shop", ""): 1,
            ("retry_probe", "shop", ""): 1,
            ("next_page", "shop", "next"): 1,
        },
    )

    # The heat map reads /get_stats/ across origins too.
    page.goto(shop)
    loaded(page)
    assert page.evaluate("() => tally.heatmap(document.body)") == {"buy": 3, "next": 1}
    expect(page.locator("#buy")).to_have_text("Buy (clicked 3 times)")
    assert all(r.url.startswith(live.ingest_url) for r in visit.beacons())


def key_of(request: Request) -> str:
    """The idempotency key a request of tally.js carries in its query ("" when none)."""
    return parse_qs(urlsplit(request.url).query).get("idempotency_key", [""])[0]


# What happens to each send of a batch, by the batch's number (cycling) and the send's: "lost" reaches ingest,
# which counts it, and the browser never sees the answer; "unknown" reaches ingest too, and the browser sees a
# 503 that says "recorded": "unknown"; "none" is a 503 that says "none" (it never reached ingest); "pass" is
# ingest's own answer.
FATES = (
    ("lost", "unknown", "pass"),
    ("none", "lost", "lost", "pass"),
    ("unknown", "pass"),
    ("pass",),
)


def test_lost_answers_and_503s_every_click_counts_exactly_once(live: Services, visit: Visit) -> None:
    page = visit.page
    sends: dict[str, list[str]] = {}  # key -> the fate of each of its sends, batches in the order they came
    bodies: dict[str, set[str]] = {}

    def unreliable_network(route: Route) -> None:
        key = key_of(route.request)
        plan = FATES[list(sends).index(key) % len(FATES)] if key in sends else FATES[len(sends) % len(FATES)]
        fate = plan[min(len(sends.setdefault(key, [])), len(plan) - 1)]
        sends[key].append(fate)
        bodies.setdefault(key, set()).add(route.request.post_data or "")
        if fate in ("lost", "unknown"):
            route.fetch()  # ingest took it: its events are in Kafka
        if fate == "lost":
            route.abort("connectionreset")  # and the answer never reaches the page
        elif fate in ("none", "unknown"):
            route.fulfill(
                status=503,
                headers={"Retry-After": "0", "X-Tally-Recorded": fate},
                json={"error": "unavailable", "recorded": fate, "message": "Kafka did not acknowledge in time"},
            )
        else:
            route.fulfill(response=route.fetch())

    visit.context.route(re.compile(r".*/track/.*"), unreliable_network)
    page.goto(f"{live.ingest_url}/demo/")
    loaded(page)
    page.evaluate("() => Object.assign(tally.options, {interval: 100, backoff: 100, batch: 2})")
    clicks = {"link1": 7, "link2": 5, "link3": 4, "link4": 2}
    for n in range(max(clicks.values())):
        for link, times in clicks.items():
            if n < times:
                page.click(f"#{link}")
        page.wait_for_timeout(150)  # batches of a few clicks, each with its own fate

    def answered() -> int:  # events of the batches whose last send got ingest's answer
        return sum(len(json.loads(next(iter(bodies[k])))["events"]) for k, f in sends.items() if f[-1] == "pass")

    until(page, lambda: answered() == sum(clicks.values()), 60)
    assert len(sends) >= len(FATES) * 2, sends  # every plan was played, twice
    assert all(re.fullmatch(r"[0-9a-f-]{36}", key) for key in sends)  # crypto.randomUUID, one per batch
    assert all(len(b) == 1 for b in bodies.values())  # a batch's every send is the same request
    assert all(f == list(FATES[i % len(FATES)]) for i, f in enumerate(sends.values())), sends
    assert page.evaluate("() => tally.dropped") == 0
    counts_become(page, live, {("link_clicked", "demo", link): n for link, n in clicks.items()})


def test_seed_jquery_snippet_works_unchanged_from_the_same_origin(live: Services, visit: Visit) -> None:
    page = visit.page
    page.goto(f"{live.ingest_url}/demo/seed/")
    page.wait_for_function("() => window.jQuery !== undefined")
    with page.expect_response(lambda r: "/track/?labels=link_clicked:seed:link1" in unquote(r.url)) as answer:
        page.click("#link1")
    assert answer.value.status == 202
    page.click("#link1")
    page.click("#link3")
    counts_become(page, live, {("link_clicked", "seed", "link1"): 2, ("link_clicked", "seed", "link3"): 1})

    with page.expect_response(lambda r: "/get_stats/?dom_ids=link1|link2|link3|link4|" in unquote(r.url)) as stats:
        page.click("#get-stats")
    assert stats.value.json() == [["link1", 2, "link_clicked"], ["link3", 1, "link_clicked"]]
    expect(page.locator("#link1")).to_have_text("clicked 2 time.")
    expect(page.locator("#link3")).to_have_text("clicked 1 time.")
    expect(page.locator("#link2")).to_have_text("Test link 2")


# The library alone, against a fake Tally that Playwright answers: no servers needed.


@dataclass
class FakeTally:
    """Answers the library's requests on the site's own origin: the statuses of ``first`` in turn, then
    ``status``, for POSTs (0: no answer at all), a GIF for the pixel."""

    status: int = 202
    first: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)

    def __call__(self, route: Route) -> None:
        if "/track.gif" in route.request.url:
            route.fulfill(status=200, content_type="image/gif", body=b"GIF89a")
            return
        status = self.first.pop(0) if self.first else self.status
        self.answered.append(status)
        if status == 0:
            route.abort("connectionreset")
        else:
            route.fulfill(status=status, headers={"Retry-After": "0"}, json={"accepted": 0})


def open_page(visit: Visit, site: Site, attributes: str = "", copies: int = 1) -> FakeTally:
    fake = FakeTally()
    visit.context.unroute_all()
    visit.context.route(re.compile(r".*/fake/track(/|\.gif).*"), lambda route: fake(route))
    url = site.page(
        "page.html",
        f'<script src="tally.js" data-endpoint="{site.url}/fake" {attributes}></script>'
        * copies
        + '<button id="a" data-tally-label="tap" data-tally-category="ui">A</button>'
        '<button id="b" data-tally-label="tap" data-tally-category="ui">B</button>',
    )
    visit.page.goto(url)
    loaded(visit.page)
    return fake


def labels(requests: list[Request]) -> list[list[str]]:
    """Each request's events as label:category:dom_id."""
    out = []
    for r in requests:
        if r.method == "POST":
            events = json.loads(r.post_data or "")["events"]
            out.append([f"{e['label']}:{e['category']}:{e['dom_id']}" for e in events])
        else:
            out.append(re.sub(r".*labels=", "", r.url).replace("%3A", ":").replace("%7C", "|").split("|"))
    return out


def hide(page: Page) -> None:
    """What a phone does when the visitor switches apps: the page is hidden, and may never come back."""
    page.evaluate(
        """() => { Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                   document.dispatchEvent(new Event('visibilitychange')); }"""
    )


def show(page: Page) -> None:
    """The visitor switches back: the page is visible again."""
    page.evaluate(
        """() => { Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
                   document.dispatchEvent(new Event('visibilitychange')); }"""
    )


def test_batches_on_interval_when_full_and_when_hidden(visit: Visit, site: Site) -> None:
    page = visit.page
    open_page(visit, site, 'data-interval="400"')
    started = time.monotonic()
    page.evaluate("() => { for (const id of ['a', 'b', 'a']) document.getElementById(id).click(); }")
    until(page, lambda: len(visit.beacons()) == 1, 5)
    assert time.monotonic() - started >= 0.4  # the interval after the first click, then one batch of all three
    page.wait_for_timeout(200)
    assert labels(visit.beacons()) == [["tap:ui:a", "tap:ui:b", "tap:ui:a"]]
    visit.sent.clear()

    open_page(visit, site, 'data-batch="3" data-interval="60000"')
    page.click("#a")
    page.click("#b")
    page.wait_for_timeout(500)
    assert visit.beacons() == []  # the interval is a minute, and the batch not full
    page.click("#a")  # the third: full, sent at once
    until(page, lambda: len(visit.beacons()) == 1, 5)
    page.evaluate("() => tally.track('x|y:z')")
    hide(page)
    until(page, lambda: len(visit.beacons()) == 2, 5)
    assert labels(visit.beacons()) == [["tap:ui:a", "tap:ui:b", "tap:ui:a"], ["x::", "y:z:"]]
    assert [r.resource_type for r in visit.beacons()] == ["fetch", "ping"]


def test_without_send_beacon_fetch_keepalive_then_the_pixel(visit: Visit, site: Site) -> None:
    page = visit.page
    # An old browser: no sendBeacon, and no crypto.randomUUID (a page served over plain http has none either).
    page.add_init_script("delete Navigator.prototype.sendBeacon; delete Crypto.prototype.randomUUID")
    open_page(visit, site)
    page.click("#a")
    hide(page)
    until(page, lambda: len(visit.beacons()) == 1, 5)
    assert visit.beacons()[0].resource_type == "fetch"
    page.evaluate("() => { window.fetch = undefined; tally.track('pixel_only:mail|pixel_only:mail:2'); }")
    hide(page)
    until(page, lambda: len(visit.beacons()) == 2, 5)
    assert visit.beacons()[1].method == "GET"
    assert labels(visit.beacons()) == [["tap:ui:a"], ["pixel_only:mail:", "pixel_only:mail:2"]]
    keys = [key_of(r) for r in visit.beacons()]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", keys[0])  # the fallback: 22 random characters of those allowed
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}-0", keys[1])  # a pixel's: its batch's and its number
    assert keys[0] != keys[1][:-2]


def test_a_batch_keeps_its_key_through_every_retry_and_into_the_beacon(visit: Visit, site: Site) -> None:
    page = visit.page
    fake = open_page(visit, site, 'data-backoff="50" data-interval="50"')
    fake.first = [0, 503, 429, 500]  # no answer (it may have been counted), 503, 429, a proxy's 500: all sent again
    page.click("#a")
    until(page, lambda: fake.answered == [0, 503, 429, 500, 202], 10)
    first = visit.beacons()
    assert labels(first) == [["tap:ui:a"]] * 5
    assert len({key_of(r) for r in first}) == 1 and key_of(first[0])
    assert len({r.post_data for r in first}) == 1  # the same events, with their first timestamps

    fake.status = 400  # a bad batch: sending it again would not help
    page.click("#b")
    until(page, lambda: fake.answered[5:] == [400], 5)
    page.wait_for_timeout(500)
    assert fake.answered[5:] == [400]

    fake.status = 503  # Tally away; the visitor leaves while the batch waits for its next try
    page.evaluate("() => tally.options.backoff = 3000")  # the next try in 1.5 to 3 s
    page.click("#a")
    until(page, lambda: fake.answered[6:] == [503], 5)
    hide(page)
    until(page, lambda: len(visit.beacons()) == 8, 5)
    waiting, beacon = visit.beacons()[6:]
    assert beacon.resource_type == "ping"
    assert key_of(beacon) == key_of(waiting) != key_of(first[0])  # the same request: it counts once
    assert beacon.post_data == waiting.post_data
    assert len({key_of(r) for r in visit.beacons()}) == 3  # one key per batch
    assert page.evaluate("() => tally.dropped") == 0

    # The visitor comes back: a beacon's answer is never seen, so the batch goes again, under its key, by fetch
    # (once Tally's backoff is over).
    fake.status = 202
    show(page)
    until(page, lambda: len(visit.beacons()) == 9, 8)
    again = visit.beacons()[8]
    assert again.resource_type == "fetch" and key_of(again) == key_of(beacon) and again.post_data == beacon.post_data
    until(page, lambda: fake.answered[-1:] == [202], 5)
    hide(page)  # nothing waits: nothing leaves
    show(page)
    page.wait_for_timeout(300)
    assert len(visit.beacons()) == 9


def test_retries_are_bounded_then_sending_goes_on(visit: Visit, site: Site) -> None:
    page = visit.page
    fake = open_page(visit, site, 'data-retries="2" data-backoff="50" data-interval="50"')
    fake.status = 503
    page.click("#a")
    until(page, lambda: page.evaluate("() => tally.dropped") == 1, 10)  # sent 1 + 2 times, then given up
    assert fake.answered == [503, 503, 503]
    fake.status = 202
    page.click("#b")
    until(page, lambda: fake.answered == [503, 503, 503, 202], 10)
    assert labels(visit.beacons()) == [["tap:ui:a"]] * 3 + [["tap:ui:b"]]

    # Bounded in time too: no send later than retryFor after the batch's first, so well inside Tally's window.
    page.evaluate("() => Object.assign(tally.options, {retries: 100, retryFor: 600, backoff: 150})")
    fake.status = 0
    started = time.monotonic()
    page.click("#a")
    until(page, lambda: page.evaluate("() => tally.dropped") == 2, 10)
    assert time.monotonic() - started < 3
    tries = fake.answered[4:]
    assert 2 <= len(tries) <= 4 and set(tries) == {0}  # 150, 300 ms... until the next would pass 600 ms


def test_do_not_track_is_respected_when_the_site_asks(visit: Visit, site: Site) -> None:
    page = visit.page
    page.add_init_script("Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})")
    open_page(visit, site, 'data-respect-dnt="true" data-interval="50"')
    page.click("#a")
    page.evaluate("() => tally.track('ignored')")
    hide(page)
    page.wait_for_timeout(500)
    assert visit.beacons() == []

    page.evaluate("() => { tally.options.respectDnt = false; tally.track('counted'); }")
    until(page, lambda: labels(visit.beacons()) == [["counted::"]], 5)


def test_loaded_twice_counts_a_click_once(visit: Visit, site: Site) -> None:
    page = visit.page
    open_page(visit, site, 'data-interval="50"', copies=2)
    page.click("#a")
    until(page, lambda: len(visit.beacons()) == 1, 5)
    page.wait_for_timeout(300)
    assert labels(visit.beacons()) == [["tap:ui:a"]]


def test_offline_visitor_keeps_events_until_the_network_is_back(visit: Visit, site: Site) -> None:
    page = visit.page
    fake = open_page(visit, site, 'data-interval="50"')
    visit.context.set_offline(True)
    page.click("#a")
    page.click("#b")
    page.wait_for_timeout(500)
    assert fake.answered == []
    visit.context.set_offline(False)
    until(page, lambda: fake.answered == [202], 5)
    assert labels(visit.beacons()) == [["tap:ui:a", "tap:ui:b"]]
