"""Draw the overview dashboard from its own queries' results: docs/dashboard-overview.png.

Grafana cannot run here, so this runs what Grafana would: every ClickHouse
panel of ``dashboards/overview.json`` and the heat-map panel, expanded for the
last 7 days (stack/dashboards.py), on the local stack's ClickHouse, and draws
their rows with matplotlib in the dashboard's layout. The data is a week of
roll-ups of made-up traffic (a daily rhythm, a dozen labels of Zipf-like
popularity), written by the worker's own writer into a database of its own,
which is dropped afterwards.

    .venv/bin/python -m stack.render_dashboard [--out docs/dashboard-overview.png]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.patches import Rectangle

from aggregator.write import ClickHouseWriter, RollupRow
from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from stack import dashboards
from stack.stack import StackSettings

ROOT = Path(__file__).resolve().parents[1]
LABELS = [  # label, category, dom ids, weight
    ("home", "", [""], 40),
    ("signup_clicked", "forms", ["signup-top", "signup-footer"], 12),
    ("search", "nav", ["search-box"], 10),
    ("add_to_cart", "shop", ["pdp-buy", "pdp-buy-sticky"], 8),
    ("checkout", "shop", ["cart-checkout"], 4),
    ("newsletter", "email", ["nl-form"], 3),
    ("menu_opened", "nav", ["nav-burger"], 6),
    ("video_play", "media", ["hero-video"], 5),
    ("share", "social", ["share-tw", "share-fb"], 2),
    ("faq_expand", "help", ["faq-1", "faq-2", "faq-3"], 2),
]
BG, PANEL, TEXT, MUTED = "#111217", "#181b1f", "#ccccdc", "#8e8e9e"
HEAT = LinearSegmentedColormap.from_list("BlYlRd", ["#3274d9", "#fade2a", "#e02f44"])
SERIES = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9"]


def traffic(now: datetime, days: int, seed: int = 7) -> list[RollupRow]:
    """Hourly and daily roll-ups of a made-up site: a daily rhythm, a busier weekend, some noise."""
    rng = random.Random(seed)
    written = now.replace(tzinfo=None, microsecond=0)
    hourly: Counter[tuple[Any, ...]] = Counter()
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    hour = start
    while hour <= now:
        rhythm = 0.25 + 0.75 * math.sin(math.pi * max(0, hour.hour - 6) / 18) ** 2
        weekend = 1.3 if hour.weekday() >= 5 else 1.0
        for label, category, doms, weight in LABELS:
            for i, dom in enumerate(doms):
                mean = 30 * weight * rhythm * weekend / (i + 1)
                n = max(0, round(rng.gauss(mean, mean**0.5)))
                if n:
                    hourly[(hour.date(), hour, label, category, dom)] += n
        hour += timedelta(hours=1)
    daily: Counter[tuple[Any, ...]] = Counter()
    for (day, _, label, category, dom), n in hourly.items():
        daily[(day, None, label, category, dom)] += n
    return [RollupRow(day, hour, label, category, dom, n, 1, written)
            for (day, hour, label, category, dom), n in (hourly + daily).items()]  # fmt: skip


def run(settings: ClickHouseSettings, uid: str, title: str, time_range: dashboards.TimeRange) -> list[Any]:
    [query] = [q for q in dashboards.all_queries() if q.dashboard == uid and q.panel == title]
    variables: dict[str, str | list[str]] = {"category": [dashboards.ALL], "prefix": "", "dom_id": [dashboards.ALL]}
    sql = dashboards.expand(query.text, time_range, variables)
    with clickhouse_client(settings) as client:
        rows: list[Any] = client.execute(sql)
        return rows


def date_format(pattern: str) -> Any:
    return mdates.DateFormatter(pattern)  # type: ignore[no-untyped-call]  # matplotlib leaves it untyped


def panel(ax: Any, title: str) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(title, loc="left", color=TEXT, fontsize=10, fontweight="bold", pad=8)
    ax.tick_params(colors=MUTED, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(color="#2c3235", linewidth=0.6)
    ax.set_axisbelow(True)


def stat(ax: Any, title: str, value: str, color: str) -> None:
    ax.set_facecolor(PANEL)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.04, 0.82, title, color=TEXT, fontsize=10, fontweight="bold", transform=ax.transAxes, va="top")
    ax.text(0.5, 0.12, value, color=color, fontsize=24, fontweight="bold", transform=ax.transAxes, ha="center")


def draw(settings: ClickHouseSettings, now: datetime, out: Path) -> None:
    tr = dashboards.TimeRange(now - timedelta(days=6, hours=now.hour, minutes=now.minute), now, interval_s=600)
    q = {title: run(settings, "tally-overview", title, tr) for title in (
        "Events", "Labels", "dom ids", "Seconds since the last roll-up", "Events per day", "Events per hour",
        "Top 5 labels per hour", "Top labels", "By category")}  # fmt: skip
    heat = run(settings, "tally-heatmap", "Heat map: events by dom id", tr)

    fig = plt.figure(figsize=(16, 12.5), facecolor=BG)
    fig.suptitle("Tally: overview   ·   last 7 days   ·   Category: All", x=0.015, y=0.985, ha="left",
                 color=TEXT, fontsize=13, fontweight="bold")  # fmt: skip
    grid = fig.add_gridspec(5, 4, height_ratios=[0.55, 1.35, 1.35, 1.7, 1.9], hspace=0.42, wspace=0.18,
                            left=0.085, right=0.985, top=0.95, bottom=0.03)  # fmt: skip
    stat(fig.add_subplot(grid[0, 0]), "Events", f"{q['Events'][0][0]:,}", "#5794f2")
    stat(fig.add_subplot(grid[0, 1]), "Labels", f"{q['Labels'][0][0]:,}", "#5794f2")
    stat(fig.add_subplot(grid[0, 2]), "dom ids", f"{q['dom ids'][0][0]:,}", "#5794f2")
    fresh = q["Seconds since the last roll-up"][0][0]
    stat(fig.add_subplot(grid[0, 3]), "Seconds since the last roll-up", f"{fresh} s", "#73bf69")

    ax = fig.add_subplot(grid[1, :2])
    panel(ax, "Events per day")
    days = [row[0] for row in q["Events per day"]]
    ax.bar(days, [row[1] for row in q["Events per day"]], width=0.7, color="#73bf69", alpha=0.85)
    ax.xaxis.set_major_formatter(date_format("%a %d"))

    ax = fig.add_subplot(grid[1, 2:])
    panel(ax, "Events per hour")
    hours = [row[0] for row in q["Events per hour"]]
    ax.plot(hours, [row[1] for row in q["Events per hour"]], color="#73bf69", linewidth=1.6)
    ax.fill_between(hours, [row[1] for row in q["Events per hour"]], color="#73bf69", alpha=0.12)
    ax.xaxis.set_major_formatter(date_format("%a %d"))

    ax = fig.add_subplot(grid[2, :])
    panel(ax, "Top 5 labels per hour")
    by_label: dict[str, dict[datetime, int]] = {}
    for hour, label, n in q["Top 5 labels per hour"]:
        by_label.setdefault(label, {})[hour] = n
    all_hours: list[Any] = sorted({h for series in by_label.values() for h in series})
    ax.stackplot(all_hours, *[[s.get(h, 0) for h in all_hours] for s in by_label.values()], labels=list(by_label),
                 colors=SERIES[: len(by_label)], alpha=0.75)  # fmt: skip
    ax.xaxis.set_major_formatter(date_format("%a %d %H:%M"))
    ax.legend(loc="upper left", fontsize=8, frameon=False, labelcolor=TEXT, ncol=5)

    ax = fig.add_subplot(grid[3, :2])
    panel(ax, "Top labels")
    top = list(reversed(q["Top labels"]))
    counts = [n for _, n in top]
    ax.barh([label for label, _ in top], counts, color=[HEAT(n / max(counts)) for n in counts])
    ax.tick_params(axis="y", labelcolor=TEXT)

    ax = fig.add_subplot(grid[3, 2:])
    ax.set_facecolor(PANEL)
    ax.set_title("By category", loc="left", color=TEXT, fontsize=10, fontweight="bold", pad=8)
    wedges, _ = ax.pie([n for _, n in q["By category"]], colors=SERIES + ["#9fa7b3"] * 4, startangle=90,
                       wedgeprops={"width": 0.42, "edgecolor": PANEL})  # fmt: skip
    total = sum(n for _, n in q["By category"])
    ax.legend(wedges, [f"{name}  {n:,}  ({100 * n / total:.0f}%)" for name, n in q["By category"]],
              loc="center left", bbox_to_anchor=(0.95, 0.5), fontsize=8, frameon=False, labelcolor=TEXT)  # fmt: skip

    ax = fig.add_subplot(grid[4, :])
    ax.set_facecolor(PANEL)
    ax.axis("off")
    ax.set_title("Heat map: events by dom id (from the heat-map dashboard)", loc="left", color=TEXT, fontsize=10,
                 fontweight="bold", pad=8)  # fmt: skip
    shown = heat[:14]
    peak = max(n for _, _, n in shown)
    columns = 2
    per = math.ceil(len(shown) / columns)
    for i, (dom, label, n) in enumerate(shown):
        col, row = divmod(i, per)
        x, y = 0.01 + col * 0.5, 0.92 - row * (0.9 / per)
        ax.text(x, y, dom, color=TEXT, fontsize=9, transform=ax.transAxes, va="center")
        ax.text(x + 0.16, y, label, color=MUTED, fontsize=9, transform=ax.transAxes, va="center")
        ax.add_patch(Rectangle((x + 0.32, y - 0.045), 0.15, 0.09, transform=ax.transAxes,
                                   color=HEAT(n / peak), linewidth=0))  # fmt: skip
        ax.text(x + 0.395, y, f"{n:,}", color="#111217", fontsize=9, fontweight="bold", transform=ax.transAxes,
                ha="center", va="center")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=BG)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-overview.png")
    args = parser.parse_args()
    base = StackSettings.from_env(os.environ).clickhouse
    settings = ClickHouseSettings(base.host, base.port, f"picture_{uuid.uuid4().hex[:8]}", base.user, base.password)
    migrations.apply(settings)
    try:
        now = datetime.now(UTC)
        writer = ClickHouseWriter(settings)
        try:
            writer.write(traffic(now, days=7))
        finally:
            writer.close()
        draw(settings, now, args.out)
    finally:
        with clickhouse_client(settings, database="default") as admin:
            admin.execute(f"DROP DATABASE IF EXISTS `{settings.database}`")
    sys.stdout.write(f"wrote {args.out}\n")


if __name__ == "__main__":
    main()
