"""A read request into SQL on the views, and the rows back into counts.

Only ``daily_stats`` and ``hourly_stats`` are read: they give one correct
number per counter whether or not ClickHouse has merged its parts, on
ClickHouse 18.16 and on current versions (never the ``*_counts`` tables).

Every value from a request is a query parameter (clickhouse-driver's
``%(name)s``, escaped by the driver). What is written into the SQL text is
chosen from constants here by validated names: the view, the grouping
columns and the order. No user input is ever formatted into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from query.params import CountsRequest

_SELECT: Final = {
    "day": "day",
    "hour": "toUnixTimestamp(hour) AS hour_start",
    "label": "label",
    "category": "category",
    "dom_id": "dom_id",
}


@dataclass(frozen=True)
class Counts:
    """What a read answers: the rows, the total of every matching counter, and how fresh they are."""

    columns: tuple[str, ...]
    """The group keys, then ``counter``."""
    rows: list[tuple[Any, ...]]
    total: int
    truncated: bool
    fresh_as_of: datetime | None
    """The latest ``written_at`` of the rows counted: the worker's last roll-up that this answer reflects."""

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def view(request: CountsRequest) -> str:
    return "hourly_stats" if "hour" in request.group_by else "daily_stats"


def where(request: CountsRequest) -> tuple[str, dict[str, Any]]:
    clauses = ["day >= %(start)s", "day <= %(end)s"]
    params: dict[str, Any] = {"start": request.start, "end": request.end}
    for column, values in (("label", request.labels), ("category", request.categories), ("dom_id", request.dom_ids)):
        if values:
            clauses.append(f"{column} IN %({column}s)s")
            params[f"{column}s"] = values
    if request.search is not None:
        clauses.append("positionCaseInsensitive(label, %(search)s) > 0")
        params["search"] = request.search
    return " AND ".join(clauses), params


def grouped_sql(request: CountsRequest) -> tuple[str, dict[str, Any]]:
    """The rows of ``request``, one more than its limit (to tell a truncated answer)."""
    keys = request.group_by
    assert keys, "an ungrouped request is total_sql's"
    conditions, params = where(request)
    group = ", ".join(keys)
    order = group if request.order == "key" else f"counter DESC, {group}"
    params["limit"] = request.limit + 1
    sql = (
        f"SELECT {', '.join(_SELECT[k] for k in keys)}, sum(counter) AS counter, max(written_at) AS written_at\n"
        f"FROM {view(request)}\nWHERE {conditions}\nGROUP BY {group}\nORDER BY {order}\nLIMIT %(limit)s"
    )
    return sql, params


def total_sql(request: CountsRequest) -> tuple[str, dict[str, Any]]:
    """One row: the sum of every matching counter, the latest written_at, how many counters matched."""
    conditions, params = where(request)
    sql = (
        "SELECT sum(counter) AS counter, max(written_at) AS written_at, count() AS counters\n"
        f"FROM {view(request)}\nWHERE {conditions}"
    )
    return sql, params


def from_grouped(request: CountsRequest, rows: list[tuple[Any, ...]]) -> tuple[Counts, bool]:
    """The counts of a grouped query's rows, and whether the total still has to be asked for."""
    truncated = len(rows) > request.limit
    kept = rows[: request.limit]
    counts = Counts(
        columns=(*request.group_by, "counter"),
        rows=[(*(_key(k, v) for k, v in zip(request.group_by, row, strict=False)), int(row[-2])) for row in kept],
        total=sum(int(row[-2]) for row in kept),
        truncated=truncated,
        fresh_as_of=max((_utc(row[-1]) for row in kept), default=None),
    )
    return counts, truncated


def with_total(counts: Counts, total_row: tuple[Any, ...]) -> Counts:
    counter, written_at, counters = total_row
    return Counts(
        columns=counts.columns,
        rows=counts.rows,
        total=int(counter) if counters else 0,
        truncated=counts.truncated,
        fresh_as_of=_utc(written_at) if counters else None,
    )


def ungrouped(total_row: tuple[Any, ...]) -> Counts:
    """No grouping: one row, the total."""
    counts = with_total(Counts(("counter",), [], 0, False, None), total_row)
    return Counts(counts.columns, [(counts.total,)], counts.total, False, counts.fresh_as_of)


def _key(name: str, value: Any) -> Any:
    return datetime.fromtimestamp(int(value), UTC) if name == "hour" else value


def _utc(written_at: datetime) -> datetime:
    """The worker writes naive UTC times; the driver hands them back as written."""
    return written_at.replace(tzinfo=UTC) if written_at.tzinfo is None else written_at.astimezone(UTC)
