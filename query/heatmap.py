"""The seed's heat-map call: ``GET /get_stats/?dom_ids=a|b|`` and its query.

A day's counts (default: today) of the dom ids given, as
``[[dom_id, counter, label], ...]``: one row per (dom_id, label), summed over
categories, out of the ``daily_stats`` view. Parameters are checked like the
read API's (:mod:`query.params`): a rule broken is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Final

from query.errors import InvalidParameter
from query.params import parse_day
from query.store import Rows
from schema.event import InvalidField, check_field

MAX_DOM_IDS_PER_QUERY: Final = 500

STATS_BY_DOM_IDS: Final = """
SELECT dom_id, sum(counter) AS counter, label
FROM daily_stats
WHERE day = %(day)s AND dom_id IN %(dom_ids)s
GROUP BY dom_id, label
ORDER BY dom_id, label
"""


def parse(query: Mapping[str, str], today: date) -> dict[str, Any]:
    """The parameters of :data:`STATS_BY_DOM_IDS` from the request's, or InvalidParameter."""
    dom_ids = _dom_ids(query.get("dom_ids"))
    raw_day = query.get("day")
    return {"day": today if raw_day is None else parse_day("day", raw_day), "dom_ids": tuple(dom_ids)}


def _dom_ids(raw: str | None) -> list[str]:
    if raw is None:
        raise InvalidParameter("dom_ids", "is required, e.g. dom_ids=link1|link2|")
    dom_ids = [d for d in raw.split("|") if d]
    if not dom_ids:
        raise InvalidParameter("dom_ids", "at least one dom id")
    if len(dom_ids) > MAX_DOM_IDS_PER_QUERY:
        raise InvalidParameter("dom_ids", f"at most {MAX_DOM_IDS_PER_QUERY} dom ids")
    for index, dom_id in enumerate(dom_ids):
        try:
            check_field("dom_id", dom_id)
        except InvalidField as exc:
            raise InvalidParameter(f"dom_ids[{index}]", exc.rule) from exc
    return dom_ids


def stats_rows(rows: Rows) -> list[list[Any]]:
    """The seed's answer: ``[[dom_id, counter, label], ...]``."""
    return [[dom_id, int(counter), label] for dom_id, counter, label in rows]
