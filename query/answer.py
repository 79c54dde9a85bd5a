"""A read's HTTP answer: its counts as JSON or CSV, saying how fresh they are, or the error it met.

Counts and errors both say ``Cache-Control: no-store``; the seed's
``/get_stats/`` answers its rows as they are (:mod:`query.heatmap`).
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from query.counts import Counts
from query.errors import QueryError
from query.params import CountsRequest

FRESH_HEADER: Final = "X-Tally-Fresh-As-Of"
NO_STORE: Final = {"Cache-Control": "no-store"}


def counts_response(endpoint: str, wanted: CountsRequest, counts: Counts) -> Response:
    headers = {**NO_STORE, "X-Tally-Total": str(counts.total)}
    if counts.fresh_as_of is not None:
        headers[FRESH_HEADER] = _iso(counts.fresh_as_of)
    if wanted.format == "csv":
        headers["X-Tally-Truncated"] = "true" if counts.truncated else "false"
        name = f"tally-{endpoint}-{wanted.start}-{wanted.end}.csv"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(_csv(counts), media_type="text/csv; charset=utf-8", headers=headers)
    body = {
        "from": wanted.start.isoformat(),
        "to": wanted.end.isoformat(),
        "group_by": list(wanted.group_by),
        "rows": [{k: _json_value(v) for k, v in record.items()} for record in counts.records()],
        "total": counts.total,
        "truncated": counts.truncated,
        "fresh_as_of": _iso(counts.fresh_as_of) if counts.fresh_as_of else None,
    }
    return JSONResponse(body, headers=headers)


async def error_response(request: Request, exc: Exception) -> Response:
    """The app's handler for QueryError: the error's status, JSON body and headers."""
    assert isinstance(exc, QueryError)
    return JSONResponse(exc.body(), status_code=exc.status, headers={**NO_STORE, **exc.headers()})


def _csv(counts: Counts) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(counts.columns)
    writer.writerows([_json_value(v) for v in row] for row in counts.rows)
    return out.getvalue()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
