"""The soak test's reconciliation and its report (text summary and PNG).

Reconciliation, per (day, label, category, dom_id) over every counter that
was sent, counted or served: the events answered 2xx (client side) ==
``daily_stats`` == the sum of the day's ``hourly_stats`` == what
``/api/v1/counts`` serves, exactly; per (day, dom_id, label),
``/get_stats/`` == the 2xx events summed over categories. Every request
carries an idempotency key and is sent again until it gets a final answer
(soak.load), so no event has an allowance: one counted twice, or one of a
request that got a 503 or no answer and then its 2xx, counted other than
once, is a difference. Events of refused or bot requests appear nowhere
(they would be a difference: nothing expects them). A
server-stamped event whose request straddled a real midnight may count on
either day: for its counter the days are compared summed.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

from schema.settings import clickhouse_client
from soak.load import Key, Record

if TYPE_CHECKING:
    from soak.harness import Run, SoakStack

SOURCES = ("2xx", "clickhouse", "hourly", "api")
BUCKET_S = 5


@dataclass
class Reconciliation:
    values: dict[Key, dict[str, int]]
    """Per key: each source's count."""
    differences: list[Key]
    get_stats_differences: list[str]
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    """(what, passed, detail): the reconciliation metrics and the other checks."""

    @property
    def ok(self) -> bool:
        return not self.differences and not self.get_stats_differences and all(ok for _, ok, _ in self.checks)


RECOVERED_SHARE = 0.5
RECOVERY_LIMIT_S = 15.0
"""How soon after a fault is over (the service ready again) 2xx events must be back to RECOVERED_SHARE of
before it. Ingest's producer sheds what it held through a Kafka outage within its delivery timeout (5 s),
and a request waits for its acks up to 6 s: so a few seconds, on a loaded machine more."""
RECOVERY_PROBE_S = 2.0
"""The span over which the 2xx rate is measured when looking for the recovery."""
"""After a fault, the 2xx events/s of the 'after' window must be at least this share of the 'before' window's."""


@dataclass
class Report:
    text: str
    ok: bool
    """Every count reconciled and every check passed."""
    recovered: bool
    """After each fault, the system took events again at its earlier rate."""
    txt: Path
    png: Path
    figures: dict[str, float]


# -- reconciliation ------------------------------------------------------------------------------


def reconcile(run: Run, stack: SoakStack) -> Reconciliation:
    outcomes = run.outcomes
    with clickhouse_client(stack.clickhouse) as client:
        daily = _rows(client, "daily_stats")
        hourly = _rows(client, "hourly_stats")
    days = sorted({k[0] for k in (*outcomes.expected, *daily) if k[0] != "?"})
    api = _api_counts(stack, days)
    sources: dict[str, Counter[Key]] = {"2xx": outcomes.expected, "clickhouse": daily, "hourly": hourly, "api": api}
    ambiguous = {k[1:] for k in outcomes.expected if k[0] == "?"}
    if ambiguous:
        sources = {name: _collapse(counts, ambiguous) for name, counts in sources.items()}
    keys = set().union(*sources.values())
    values = {key: {name: counts.get(key, 0) for name, counts in sources.items()} for key in keys}
    differences = sorted(key for key, v in values.items() if len(set(v.values())) != 1)
    result = Reconciliation(values, differences, _get_stats_differences(stack, daily, days, ambiguous))
    gave_up = sum(outcomes.gave_up.values())
    result.checks.append(
        (
            "every request got a final answer (not 503, 429 or none) within its retries",
            not gave_up,
            f"{gave_up:,} events of requests that never did" if gave_up else "all did",
        )
    )
    never = {
        k
        for k in outcomes.refused
        if k not in outcomes.expected and k not in outcomes.gave_up and k[1:] not in ambiguous
    }
    counted_never = sorted(k for k in never if daily.get(k))
    result.checks.append(
        (
            "events of refused requests and bots counted nowhere they were not also sent in a 2xx",
            not counted_never,
            f"{len(never)} such counters, {len(counted_never)} counted"
            + (f": {counted_never[:5]}" if counted_never else ""),
        )
    )
    result.checks.extend(_metric_checks(run, stack, ambiguous, daily))
    anomalies = Counter(a.split(":")[0] + ": " + a.split(": ", 1)[-1][:80] for a in outcomes.anomalies)
    result.checks.append(
        (
            "every answer as the contract says (a good request is never refused, a bad one never accepted)",
            not anomalies,
            "; ".join(f"{n} x {a}" for a, n in anomalies.most_common(8)) or "none otherwise",
        )
    )
    result.checks.append(
        (
            "no service died on its own",
            not run.deaths,
            ", ".join(f"{name} at +{t - run.started:.0f} s" for t, name in run.deaths) or "none",
        )
    )
    return result


def _rows(client: Any, view: str) -> Counter[Key]:
    rows = client.execute(
        f"SELECT toString(day), label, category, dom_id, sum(counter) FROM {view} GROUP BY day, label, category, dom_id"
    )
    return Counter({(day, label, category, dom_id): int(n) for day, label, category, dom_id, n in rows if n})


def _api_counts(stack: SoakStack, days: Sequence[str]) -> Counter[Key]:
    from soak.harness import READ_TOKEN

    if not days:
        return Counter()
    query = urlencode(
        [*(("group_by", g) for g in ("day", "label", "category", "dom_id")),
         ("from", days[0]), ("to", days[-1]), ("limit", "100000")]
    )  # fmt: skip
    request = urllib.request.Request(
        f"{stack.ingest_url}/api/v1/counts?{query}", headers={"Authorization": f"Bearer {READ_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        doc = json.load(response)
    assert not doc["truncated"], "the API cut the rows: raise TALLY_API_MAX_ROWS"
    return Counter({(r["day"], r["label"], r["category"], r["dom_id"]): int(r["counter"]) for r in doc["rows"]})


def _get_stats_differences(
    stack: SoakStack, daily: Counter[Key], days: Sequence[str], ambiguous: set[tuple[str, str, str]]
) -> list[str]:
    """``/get_stats/?day=D&dom_ids=...`` for every dom id counted, against ``daily_stats`` summed over categories
    (which the reconciliation holds against the 2xx events)."""
    skip = {(dom_id, label) for label, _, dom_id in ambiguous}
    differences = []
    for day in days:
        want: Counter[tuple[str, str]] = Counter()
        for (d, label, _category, dom_id), n in daily.items():
            if d == day and dom_id and (dom_id, label) not in skip:
                want[(dom_id, label)] += n
        dom_ids = sorted({dom_id for dom_id, _ in want})
        got: Counter[tuple[str, str]] = Counter()
        for start in range(0, len(dom_ids), 300):
            chunk = "|".join(dom_ids[start : start + 300]) + "|"
            url = f"{stack.ingest_url}/get_stats/?{urlencode({'dom_ids': chunk, 'day': day})}"
            with urllib.request.urlopen(url, timeout=60) as response:
                for dom_id, counter, label in json.load(response):
                    if (dom_id, label) not in skip:
                        got[(dom_id, label)] += int(counter)
        for pair in sorted(set(want) | set(got)):
            if want[pair] != got[pair]:
                differences.append(
                    f"{day} dom_id={pair[0]} label={pair[1]}: daily_stats {want[pair]}, /get_stats/ {got[pair]}"
                )
    return differences


def _collapse(counts: Counter[Key], ambiguous: set[tuple[str, str, str]]) -> Counter[Key]:
    out: Counter[Key] = Counter()
    for key, n in counts.items():
        out[("*", *key[1:]) if key[1:] in ambiguous else key] += n
    return out


def _samples(text: str, name: str) -> dict[str, float]:
    """Value by ``day`` label of the samples of ``name``."""
    return {
        s.labels.get("day", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _metric_checks(
    run: Run, stack: SoakStack, ambiguous: set[tuple[str, str, str]], daily: Counter[Key]
) -> list[tuple[str, bool, str]]:
    outcomes = run.outcomes
    by_day: Counter[str] = Counter()
    for key, n in outcomes.expected.items():
        by_day[key[0]] += n
    counted_by_day: Counter[str] = Counter()
    for key, n in daily.items():
        counted_by_day[key[0]] += n
    checks = []
    # Workers: the table-derived gauge, refreshed every 5 s; give it time after a late rebalance.
    summed: Counter[str] = Counter()
    deadline = time.time() + 60
    while True:
        summed = Counter()
        for text in stack.worker_metrics().values():
            for day, value in _samples(text, "tally_worker_day_events").items():
                summed[day] += int(value)
        matches = summed == counted_by_day
        if matches or time.time() > deadline:
            break
        time.sleep(2)
    checks.append(
        (
            "tally_worker_day_events summed over the workers == daily_stats, per day",
            matches,
            f"workers {dict(sorted(summed.items()))}; daily_stats {dict(sorted(counted_by_day.items()))}",
        )
    )
    accepted = {
        day: int(v) for day, v in _samples(stack.ingest_metrics(), "tally_ingest_events_accepted_by_day_total").items()
    }
    since = outcomes.expected_since.get("ingest restart")
    want = dict(sorted((since if since is not None else by_day).items()))
    exact = {d: n for d, n in want.items() if n}
    ok = sum(accepted.values()) == sum(want.values()) if ambiguous else accepted == exact
    whose = "sends made after the ingest restart" if since is not None else "all requests"
    checks.append(
        (
            f"tally_ingest_events_accepted_by_day_total (the running ingest) == 2xx events of {whose}, per day",
            ok,
            f"ingest {dict(sorted(accepted.items()))}; 2xx {want}",
        )
    )
    return checks


# -- the report ----------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def recovery_time(run: Run, records: Sequence[Record], ready_at: float, rate: float) -> float | None:
    """Seconds from ``ready_at`` until 2xx events/s reach ``rate`` again; None if not within the limit."""
    waited = 0.0
    while waited <= RECOVERY_LIMIT_S:
        start = ready_at + waited
        if window_figures(run, records, start, start + RECOVERY_PROBE_S)["events_s"] >= rate:
            return waited
        waited += 0.5
    return None


def window_figures(run: Run, records: Sequence[Record], start: float, end: float) -> dict[str, float]:
    inside = [r for r in records if start <= r.due < end]
    seconds = max(end - start, 1e-9)
    answered = [r.latency for r in inside if r.status]
    fresh = [f for at, f in run.freshness if start <= at < end]
    return {
        "seconds": end - start,
        "req_s": len(inside) / seconds,
        "events_s": sum(r.accepted for r in inside) / seconds,
        "ok_pct": 100 * sum(1 for r in inside if 200 <= r.status < 300) / max(len(inside), 1),
        "s503": sum(1 for r in inside if r.status == 503) / seconds,
        "s0": sum(1 for r in inside if r.status == 0) / seconds,
        "p50_ms": 1000 * pct(answered, 50),
        "p99_ms": 1000 * pct(answered, 99),
        "fresh_p50": pct(fresh, 50),
        "fresh_p99": pct(fresh, 99),
        "fresh_max": max(fresh, default=float("nan")),
    }


def write_report(run: Run, rec: Reconciliation, machine: str) -> Report:
    s = run.settings
    o = run.outcomes
    records = o.records
    t0 = run.started
    statuses = Counter(r.status for r in records)
    requests = [r for r in records if r.attempt == 0]
    answered = [r.latency for r in records if r.status]
    fresh = [f for _, f in run.freshness]
    load_s = run.load_ended - t0
    events = sum(o.expected.values())
    bad = sum(1 for r in requests if r.kind in ("bad_label", "too_many", "url_label", "bad_type", "bad_json", "bot"))
    figures = {
        "load_seconds": load_s,
        "requests": len(requests),
        "sent_again": len(records) - len(requests),
        "events_2xx": events,
        "events_per_s": events / load_s,
        "requests_per_s": len(requests) / load_s,
        "latency_p50_ms": 1000 * pct(answered, 50),
        "latency_p99_ms": 1000 * pct(answered, 99),
        "latency_max_ms": 1000 * max(answered, default=float("nan")),
        "freshness_p50_s": pct(fresh, 50),
        "freshness_p99_s": pct(fresh, 99),
        "freshness_max_s": max(fresh, default=float("nan")),
        "drain_s": run.drained - run.load_ended,
        "differences": len(rec.differences) + len(rec.get_stats_differences),
    }
    lines = [
        f"Soak test: {s.seconds:.0f} s nominal ({load_s:.0f} s of load), {s.rate:.0f} requests/s, {s.workers} workers "
        f"({s.store})"
        " -- reconciliation RECONCILED_PLACEHOLDER",
        f"run {datetime.fromtimestamp(t0, UTC):%Y-%m-%d %H:%M:%S} UTC; {machine}; load average "
        f"{' '.join(f'{x:.2f}' for x in run.load_before)} before, {' '.join(f'{x:.2f}' for x in run.load_after)} after"
        " (the machine is shared: other work may run beside the soak)",
        f"command: python -m soak --seconds {s.seconds:.0f} --rate {s.rate:.0f} --store {s.store}"
        + (f" --kafka-outage {s.kafka_outage_s:g}" if s.kafka_outage_s else "")
        + "".join(f" ({key}={os.environ[key]})" for key in sorted(os.environ) if key.startswith("TALLY_")),
        f"day zone {s.day_tz}; simulated day boundary (client timestamps of JSON events): "
        + (f"{run.boundary.isoformat()}" if run.boundary else "none (a real midnight instead)"),
        "",
        "Load (client side; every request keyed and sent again until a final answer; latency from when each send "
        "was due, answered sends only)",
        f"  requests        {len(requests):,} ({len(requests) / load_s:,.1f}/s); "
        f"not sent (client backlog) {o.not_sent}",
        f"  sent again      {len(records) - len(requests):,} sends, after "
        + (", ".join(f"{why}: {n:,}" for why, n in sorted(o.sent_again.items())) or "nothing")
        + f"; gave up {sum(1 for a in o.anomalies if 'no final answer' in a):,} requests",
        "  answers         "
        + ", ".join(f"{k if k else 'no answer'}: {v:,}" for k, v in sorted(statuses.items()))
        + " (every send)",
        f"  final answer    from due, retries included: p50 {1000 * pct(o.answered_in, 50):.1f} ms, "
        f"p99 {1000 * pct(o.answered_in, 99):.1f} ms, max {1000 * max(o.answered_in, default=float('nan')):.0f} ms",
        f"  bad requests    {bad:,} ({100 * bad / max(len(requests), 1):.1f} %), plus JSON batches with invalid events",
        f"  events 2xx      {events:,} ({events / load_s:,.1f}/s)",
        f"  latency         p50 {figures['latency_p50_ms']:.1f} ms, p90 {1000 * pct(answered, 90):.1f} ms, "
        f"p99 {figures['latency_p99_ms']:.1f} ms, max {figures['latency_max_ms']:.0f} ms",
        f"  freshness       {len(fresh)} probes, 2xx -> count in daily_stats (polled every 0.25 s): "
        f"p50 {figures['freshness_p50_s']:.2f} s, p99 {figures['freshness_p99_s']:.2f} s, "
        f"max {figures['freshness_max_s']:.2f} s; never seen {run.probes_unseen}",
        f"  drain           {figures['drain_s']:.1f} s from the end of the load to ClickHouse holding every 2xx event",
        "",
        "Faults, with the windows before, during (from the fault to the service answering again) and after "
        f"({s.window_s:.0f} s)",
        f"  {'window':<48} {'s':>5} {'sends/s':>7} {'ev/s':>7} {'2xx %':>6} {'503/s':>6} {'unans/s':>7} "
        f"{'p50 ms':>7} {'p99 ms':>8} {'fresh p50':>9} {'p99':>6} {'max':>6}",
    ]
    recovery: list[tuple[str, bool, str]] = []
    for fault in run.faults:
        before = window_figures(run, records, fault.started - s.window_s, fault.started)["events_s"]
        after = window_figures(run, records, fault.recovered, fault.recovered + s.window_s)["events_s"]
        back = recovery_time(run, records, fault.recovered, RECOVERED_SHARE * before)
        recovery.append(
            (
                fault.name,
                back is not None,
                f"{before:,.0f} events/s before, {after:,.0f} in the {s.window_s:.0f} s after; "
                + (
                    f"back {back:.1f} s after it was ready"
                    if back is not None
                    else f"not back {RECOVERY_LIMIT_S:.0f} s after it was ready"
                ),
            )
        )
        marks = ", ".join(f"{k} +{v - fault.started:.1f} s" for k, v in fault.marks.items())
        lines.append(f"  {fault.name} at +{fault.started - t0:.0f} s ({marks})")
        for name, start, end in (
            ("before", fault.started - s.window_s, fault.started),
            ("during", fault.started, fault.recovered),
            ("after", fault.recovered, fault.recovered + s.window_s),
        ):
            f = window_figures(run, records, start, end)
            lines.append(
                f"    {name:<46} {f['seconds']:>5.0f} {f['req_s']:>7.1f} {f['events_s']:>7.1f} {f['ok_pct']:>6.1f} "
                f"{f['s503']:>6.1f} {f['s0']:>7.1f} {f['p50_ms']:>7.1f} {f['p99_ms']:>8.1f} "
                f"{f['fresh_p50']:>9.2f} {f['fresh_p99']:>6.2f} {f['fresh_max']:>6.2f}"
            )
    lines.append(
        f"  Recovery (2xx events/s over {RECOVERY_PROBE_S:.0f} s back to >= {RECOVERED_SHARE:.0%} of before, "
        f"within {RECOVERY_LIMIT_S:.0f} s of the service being ready again):"
    )
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}" for name, ok, detail in recovery]
    recovered = all(ok for _, ok, _ in recovery)
    lines += [
        "",
        f"Reconciliation: {len(rec.values):,} counters over days "
        f"{sorted({k[0] for k in rec.values})}; sources {', '.join(SOURCES)} (+ /get_stats/ per dom_id and label)",
        f"  differences     {len(rec.differences)} counters, {len(rec.get_stats_differences)} /get_stats/ rows",
    ]
    if rec.differences:
        lines.append(
            f"  {'day':<10} {'label':<14} {'category':<9} {'dom_id':<18} "
            + " ".join(f"{n:>10}" for n in SOURCES)
            + f" {'gave up':>9} {'refused':>8}"
        )
        for key in rec.differences[:200]:
            v = rec.values[key]
            lines.append(
                f"  {key[0]:<10} {key[1]:<14} {key[2]:<9} {key[3]:<18} "
                + " ".join(f"{v[n]:>10}" for n in SOURCES)
                + f" {o.gave_up.get(key, 0):>9} {o.refused.get(key, 0):>8}"
            )
        if len(rec.differences) > 200:
            lines.append(f"  ... and {len(rec.differences) - 200} more")
    lines += [f"  {d}" for d in rec.get_stats_differences[:50]]
    lines.append(
        "  no allowance: every counter equals its 2xx events exactly, those of requests sent again after no answer "
        "or a 503 of either kind included"
    )
    for what, ok, detail in rec.checks:
        lines.append(f"  [{'ok' if ok else 'FAIL'}] {what}: {detail}")
    lines += [f"  note: {n}" for n in run.notes]
    lines.append(
        f"  totals: 2xx {events:,}; {'; '.join(f'{n} {sum(v[n] for v in rec.values.values()):,}' for n in SOURCES[1:])}"
    )
    lines.append("")
    lines[0] = lines[0].replace(
        "RECONCILED_PLACEHOLDER",
        f"{'PASS' if rec.ok else 'FAIL'}, {figures['differences']} differences; "
        f"recovery after every fault {'PASS' if recovered else 'FAIL'}",
    )
    text = "\n".join(lines)
    s.results.mkdir(parents=True, exist_ok=True)
    txt = s.results / f"{s.stem}.txt"
    png = s.results / f"{s.stem}.png"
    txt.write_text(text)
    plot(run, png)
    return Report(text, rec.ok, recovered, txt, png, figures)


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = run.outcomes.records
    t0 = run.started
    end = int(run.load_ended - t0) + 1
    per_s: dict[str, list[float]] = {k: [0.0] * end for k in ("events", "ok", "503", "none", "4xx")}
    latencies: dict[int, list[float]] = defaultdict(list)
    for r in records:
        second = min(int(r.due - t0), end - 1)
        per_s["events"][second] += r.accepted
        kind = "ok" if 200 <= r.status < 300 else "503" if r.status == 503 else "none" if r.status == 0 else "4xx"
        per_s[kind][second] += 1
        if r.status:
            latencies[second // BUCKET_S].append(r.latency * 1000)
    fig, axes = plt.subplots(5, 1, figsize=(12, 13), sharex=True)
    xs = list(range(end))
    axes[0].plot(xs, per_s["events"], lw=0.8, label="events answered 2xx /s")
    axes[0].plot(xs, per_s["ok"], lw=0.8, label="requests 2xx /s")
    axes[0].set_ylabel("per second")
    axes[0].legend(loc="upper right", fontsize=8)
    for kind, color in (("503", "tab:red"), ("none", "tab:purple"), ("4xx", "tab:gray")):
        axes[1].plot(xs, per_s[kind], lw=0.8, color=color, label={"none": "no answer"}.get(kind, kind) + " /s")
    axes[1].set_ylabel("requests / s")
    axes[1].legend(loc="upper right", fontsize=8)
    buckets = sorted(latencies)
    for q, style in ((50, "-"), (99, "--")):
        axes[2].plot(
            [b * BUCKET_S + BUCKET_S / 2 for b in buckets],
            [pct(latencies[b], q) for b in buckets],
            style,
            lw=1,
            label=f"latency p{q} ({BUCKET_S} s windows)",
        )
    axes[2].set_yscale("log")
    axes[2].set_ylabel("ms")
    axes[2].legend(loc="upper right", fontsize=8)
    axes[3].scatter([at - t0 for at, _ in run.freshness], [f for _, f in run.freshness], s=4)
    axes[3].set_yscale("log")
    axes[3].set_ylabel("freshness, s")
    sampled = [(at - t0, f) for at, f in run.samples if at - t0 <= end]
    for name, label in (
        ("accepted", "ingest: tally_ingest_events_accepted_total (resets when ingest restarts)"),
        ("counted", "workers: sum of tally_worker_day_events"),
        ("failed_timeout", "ingest: 503s, tally_ingest_publish_failed_total{reason=timeout}"),
    ):
        axes[4].plot([t for t, _ in sampled], [f.get(name, float("nan")) for _, f in sampled], lw=1, label=label)
    axes[4].set_ylabel("events (scraped every 2 s)")
    axes[4].legend(loc="upper left", fontsize=8)
    axes[4].set_xlabel("seconds since the load started")
    for fault in run.faults:
        for ax in axes:
            ax.axvspan(fault.started - t0, fault.recovered - t0, color="orange", alpha=0.2)
        axes[0].annotate(
            fault.name, (fault.started - t0, 1), xycoords=("data", "axes fraction"), fontsize=7, va="top", rotation=0
        )
    s = run.settings
    fig.suptitle(
        f"Tally soak: {s.rate:.0f} requests/s, {s.workers} workers, faults shaded; "
        f"{datetime.fromtimestamp(t0, UTC):%Y-%m-%d %H:%M} UTC"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
