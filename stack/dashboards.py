"""The Grafana dashboards' queries, as Grafana would send them.

``deploy/grafana/dashboards/*.json`` are provisioned into Grafana as they
are. This module reads them back the way Grafana and the ClickHouse plugin
(grafana-clickhouse-datasource 4.x) turn a panel into SQL, so the same SQL
can be run and checked without Grafana (tests/, and the picture in docs/dashboards.md):

1. the panel's ``rawSql``;
2. ``$__conditionalAll(condition, $var)`` (the plugin, in the browser):
   ``1=1`` when the variable is "All" or empty, else the condition;
3. dashboard variables (Grafana, in the browser): ``${name:singlequote}``
   and ``${name:raw}``; a bare ``$name`` is refused, since its format
   depends on the Grafana version;
4. the plugin's macros (its backend, ``pkg/macros``): ``$__timeFilter(c)``,
   ``$__dateFilter(c)``, ``$__dateTimeFilter(d, t)``, ``$__fromTime``,
   ``$__toTime``, ``$__interval_s``, with the same output. ``$__timeInterval``
   is refused: it is ``toStartOfInterval``, which ClickHouse 18.16 lacks.

Prometheus panels keep their PromQL; :func:`promql` gives it with Grafana's
``$__rate_interval`` and ``$__interval`` filled in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"
PROMETHEUS = "prometheus"
ALL = "$__all"
"""The value Grafana gives a variable whose "All" option is picked (no custom all value)."""


class UnsupportedQuery(ValueError):
    """A query uses something Grafana would expand differently, or ClickHouse 18.16 cannot run."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime
    interval_s: int = 60
    """Grafana's ``$__interval`` for the panel, in seconds."""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a dashboard time range is aware (Grafana sends UTC instants)")


@dataclass(frozen=True, slots=True)
class Query:
    """One target of one panel (or the query of a variable)."""

    dashboard: str
    """The dashboard's uid."""
    panel: str
    """The panel's title (``$name`` for a variable's query)."""
    ref_id: str
    datasource: str
    """The data source's type: the ClickHouse plugin, or prometheus."""
    text: str
    """The raw SQL, or the PromQL expression."""
    kind: str
    """``table`` or ``timeSeries`` for ClickHouse (the plugin's queryType); ``prometheus`` otherwise."""

    @property
    def key(self) -> str:
        return f"{self.dashboard}: {self.panel}" + ("" if self.ref_id == "A" else f" [{self.ref_id}]")


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: Mapping[str, Any]) -> Iterator[Query]:
    """Every query the dashboard sends: its variables' and its panels' targets."""
    uid = dashboard["uid"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            source = variable["datasource"]["type"]
            text = variable["query"] if isinstance(variable["query"], str) else variable["query"]["rawSql"]
            yield Query(uid, f"${variable['name']}", "A", source, text, "table")
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            source = (target.get("datasource") or panel["datasource"])["type"]
            if source == CLICKHOUSE_PLUGIN:
                yield Query(uid, panel["title"], target["refId"], source, target["rawSql"], target["queryType"])
            else:
                yield Query(uid, panel["title"], target["refId"], source, target["expr"], PROMETHEUS)


def all_queries() -> list[Query]:
    return [query for path in dashboard_files() for query in queries(load(path))]


# -- step 2: the plugin's $__conditionalAll ------------------------------------------------


def _conditional_all(sql: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    marker = "$__conditionalAll("
    while (start := sql.find(marker)) >= 0:
        depth, end = 1, start + len(marker)
        while depth:
            if end >= len(sql):
                raise UnsupportedQuery("unbalanced $__conditionalAll(")
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        condition, _, variable = sql[start + len(marker) : end - 1].rpartition(",")
        name = variable.strip().removeprefix("$").strip("{}")
        value = variables.get(name, "")
        everything = value in ("", ALL) or (not isinstance(value, str) and (not value or ALL in value))
        sql = sql[:start] + ("1=1" if everything else condition.strip()) + sql[end:]
    return sql


# -- step 3: Grafana's variables -----------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)|\[\[(\w+)\]\]")


def _singlequote(value: str) -> str:
    """Grafana's ``singlequote`` format: quotes escaped with a backslash, nothing else."""
    return "'" + value.replace("'", "\\'") + "'"


def _variables(sql: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, form = match[1], match[2]
        if name is None:
            raise UnsupportedQuery(f"{match[0]}: give variables a format, e.g. ${{{match[3] or match[4]}:singlequote}}")
        if name not in variables:
            raise UnsupportedQuery(f"{match[0]}: no value for the variable {name!r}")
        value = variables[name]
        values = [value] if isinstance(value, str) else list(value)
        if form == "singlequote":
            return ",".join(_singlequote(v) for v in values)
        if form == "raw" and len(values) == 1:
            return values[0]
        raise UnsupportedQuery(f"{match[0]}: format {form!r} is not one the dashboards use")

    return _VARIABLE.sub(replace, sql)


# -- step 4: the plugin's macros (pkg/macros/macros.go) --------------------------------------


def _date(moment: datetime) -> str:
    return f"toDate('{moment.astimezone(UTC):%Y-%m-%d}')"


def _datetime(moment: datetime) -> str:
    return f"toDateTime({int(moment.timestamp())})"


def _macros(sql: str, time_range: TimeRange) -> str:
    start, end = time_range.start, time_range.end

    def one(args: list[str], name: str) -> str:
        if len(args) != 1:
            raise UnsupportedQuery(f"$__{name} takes one argument, got {args}")
        return args[0]

    expansions = {
        "timeFilter": lambda a: f"{one(a, 'timeFilter')} >= {_datetime(start)} AND {a[0]} <= {_datetime(end)}",
        "dateFilter": lambda a: f"{one(a, 'dateFilter')} >= {_date(start)} AND {a[0]} <= {_date(end)}",
        "dateTimeFilter": lambda a: _date_time_filter(a, time_range),
        "fromTime": lambda a: _datetime(start),
        "toTime": lambda a: _datetime(end),
        "interval_s": lambda a: str(max(time_range.interval_s, 1)),
    }

    def replace(match: re.Match[str]) -> str:
        name, args = match[1], match[2]
        if name not in expansions:
            raise UnsupportedQuery(f"$__{name}: not a macro these dashboards may use")
        arguments = [a.strip() for a in args.split(",")] if args is not None else []
        return expansions[name](arguments)

    return re.sub(r"\$__(\w+)(?:\(([^()]*)\))?", replace, sql)


def _date_time_filter(args: list[str], time_range: TimeRange) -> str:
    if len(args) != 2:
        raise UnsupportedQuery(f"$__dateTimeFilter takes two arguments, got {args}")
    day, time = args
    start, end = time_range.start, time_range.end
    return (
        f"({day} >= {_date(start)} AND {day} <= {_date(end)}) AND "
        f"({time} >= {_datetime(start)} AND {time} <= {_datetime(end)})"
    )


def expand(sql: str, time_range: TimeRange, variables: Mapping[str, str | Sequence[str]] | None = None) -> str:
    """``sql`` as the ClickHouse plugin sends it to the server for ``time_range`` and ``variables``."""
    values = variables or {}
    return _macros(_variables(_conditional_all(sql, values), values), time_range)


def promql(expr: str, time_range: TimeRange) -> str:
    """A Prometheus panel's expression with Grafana's interval variables filled in."""
    rate = f"{max(4 * 15, time_range.interval_s + 15)}s"  # Grafana: max(4 x scrape interval, interval + scrape)
    return expr.replace("$__rate_interval", rate).replace("$__interval", f"{time_range.interval_s}s")
