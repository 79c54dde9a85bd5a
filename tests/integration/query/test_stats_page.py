"""The stats page at /stats/ in real headless Chromium (Debian's), driven from Python by Playwright.

A real ``tally ingest`` serves the page and the API on real ClickHouse; the
test types the token, picks dates, filters by category, searches labels and
reads the table and the heat map as a person would. Its screenshot is the
docs' docs/stats-page.png; ``TALLY_UPDATE_SCREENSHOT=1`` writes it again.
"""

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from aggregator.write import ClickHouseWriter, RollupRow
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.paths import ROOT
from tests.support.servers import Services

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.browser]

SCREENSHOT = ROOT / "docs" / "stats-page.png"
DAYS = 14
# label, category, dom_id, and a typical day's count
COUNTERS = [
    ("page_view", "", "", 400),
    ("signup", "forms", "signup-btn", 40),
    ("signup", "forms", "signup-link", 12),
    ("login", "forms", "login-btn", 90),
    ("add_to_cart", "shop", "buy-btn", 60),
    ("checkout/step1", "shop", "checkout-btn", 25),
    ("checkout/step2", "shop", "pay-btn", 14),
    ("newsletter", "forms", "footer-subscribe", 6),
    ("search", "nav", "search-box", 120),
    ("menu_open", "nav", "menu", 75),
]


def count_on(days_ago: int, index: int, typical: int) -> int:
    """A week's rhythm, a different one per counter, and a slow rise."""
    return typical + typical * ((days_ago * (index + 2)) % 7) // 10 + (DAYS - days_ago) * (index % 3)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make install` installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def served(services: Services) -> Services:
    today = datetime.now(UTC).date()
    written = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    rows = [
        RollupRow(today - timedelta(days=d), None, label, category, dom_id, count_on(d, i, count), 1, written)
        for d in range(DAYS)
        for i, (label, category, dom_id, count) in enumerate(COUNTERS)
    ]
    writer = ClickHouseWriter(services.clickhouse)
    writer.write(rows)
    writer.close()
    services.start_ingest(TALLY_INGEST_ROUTES="query", TALLY_API_PUBLIC_GET_STATS="false")
    return services


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="UTC")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
    yield page
    context.close()
    assert errors == []


def rows(page: Page) -> list[str]:
    return page.locator("#labels tbody tr").evaluate_all("trs => trs.map(tr => tr.dataset.label)")


def test_stats_page_in_chromium(served: Services, page: Page, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    page.goto(f"{served.ingest_url}/stats/")
    expect(page.locator("#error")).to_have_text("Type the read token to see the counts.")

    page.fill("#token", "not-the-read-token-at-all")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#error")).to_contain_text("this token is not one")

    page.fill("#token", served.read_token)
    page.fill("#from", (today - timedelta(days=DAYS - 1)).isoformat())
    page.fill("#to", today.isoformat())
    page.click("#token-form button[type=submit]")
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator("#error")).to_be_hidden()

    # The table: labels by total, highest first, with a sparkline and one column per day.
    totals = {}
    for i, (label, _, _, count) in enumerate(COUNTERS):
        totals[label] = totals.get(label, 0) + sum(count_on(d, i, count) for d in range(DAYS))
    assert rows(page) == sorted(totals, key=lambda label: (-totals[label], label))  # signup's two dom ids: one row
    assert page.locator("#labels thead th.day").count() == DAYS
    assert page.locator("#labels tbody svg.spark").count() == len(totals)
    first_days = page.locator("#labels tbody tr").first.locator("td.day").all_inner_texts()
    assert first_days == [str(count_on(d, 0, 400)) for d in reversed(range(DAYS))]  # page_view, oldest day first
    expect(page.locator("#freshness")).to_contain_text("Counts as of")

    # The heat map: one tile per dom id, the hottest red, the coldest blue.
    tiles = page.locator("#heatmap .tile")
    expect(tiles).to_have_count(9)
    assert tiles.first.get_attribute("data-dom-id") == "search-box"
    assert "hsl(240," in (tiles.last.get_attribute("style") or "")
    assert "hsl(0," in (tiles.first.get_attribute("style") or "")
    expect(page.locator("#heatmap-note")).to_contain_text("without a dom id")

    # The category filter.
    expect(page.locator("#category option")).to_have_count(5)  # all, (none), forms, nav, shop
    page.select_option("#category", "shop")
    expect(page.locator("#labels tbody tr")).to_have_count(3)
    assert sorted(rows(page)) == ["add_to_cart", "checkout/step1", "checkout/step2"]
    expect(tiles).to_have_count(3)

    # The label search, across categories again.
    page.select_option("#category", "*")
    page.fill("#search", "CHECK")
    page.click("#filters button[type=submit]")
    expect(page.locator("#labels tbody tr")).to_have_count(2)
    assert rows(page) == ["checkout/step1", "checkout/step2"]

    # Back to everything, for the picture.
    page.fill("#search", "")
    page.click("#filters button[type=submit]")
    expect(page.locator("#labels tbody tr")).to_have_count(len(totals))
    shot = tmp_path / "stats-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TALLY_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
