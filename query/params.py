"""The read API's parameters: named limits, one spec per parameter, parsed or refused.

Every parameter of ``/api/v1`` is declared once here (:data:`PARAMS`), with
its description and the JSON schema of its value. The same specs validate a
request (:func:`parse`) and document it (:mod:`query.openapi`), so the
OpenAPI document cannot drift from what the app accepts.

Any rule broken is a 400 naming the field and the rule: a malformed or
out-of-range date, a range longer than ``max_days``, too many values in a
list, a value that breaks its field rule (:mod:`schema.event`), an unknown
parameter, or a single-valued one given twice. Nothing is truncated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final, Literal

from starlette.datastructures import QueryParams

from query.errors import InvalidParameter
from query.settings import QuerySettings
from schema.event import CATEGORY_RULE, MAX_LABEL_LEN, RULES, InvalidField, check_field

# ClickHouse's Date: days since 1970 in a UInt16. Kept well inside it, on whole years, so that one
# pattern says which dates are read (:data:`DATE_PATTERN`, also the OpenAPI document's).
FIRST_DAY: Final = date(1970, 1, 1)
LAST_DAY: Final = date(2105, 12, 31)
DEFAULT_DAYS: Final = 7
"""Without ``from``, a range ends ``to`` (default: today) and spans this many days."""
MAX_VALUES_PER_FILTER: Final = 500
"""Values of one list parameter (``label``, ``category``, ``dom_id``); as ``/get_stats/``'s dom ids."""
MAX_SEARCH_LEN: Final = MAX_LABEL_LEN
DEFAULT_LIMIT: Final = 1000
DEFAULT_TOP: Final = 10

GROUP_KEYS: Final = ("day", "hour", "label", "category", "dom_id")
"""What counts can be grouped by, in the order their columns come out."""
TOP_KEYS: Final = ("label", "category", "dom_id")
FORMATS: Final = ("json", "csv")
ORDERS: Final = ("key", "counter")

DATE_PATTERN: Final = r"(19[7-9][0-9]|20[0-9][0-9]|210[0-5])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
"""What :func:`parse_day` reads, as the OpenAPI document states it (with ``format: date``, which refuses Feb 30):
``YYYY-MM-DD`` in ASCII digits, from FIRST_DAY's year to LAST_DAY's."""
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WHOLE: Final = re.compile(r"[0-9]{1,9}")
_SEARCH: Final = CATEGORY_RULE  # letters, digits and _ . - /: any part of a label


# -- the parameters -------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: Mapping[str, Any]
    """JSON schema of one value."""
    repeated: bool = False
    """A list, given as the parameter repeated: ``label=a&label=b``."""


def _date_param(name: str, description: str) -> Param:
    return Param(name, description, {"type": "string", "format": "date", "pattern": f"^{DATE_PATTERN}$"})


def _field_param(name: str, description: str) -> Param:
    """A filter on one field of the counter, its values checked by the field's rule (schema.event)."""
    return Param(name, description, field_schema(name), repeated=True)


def field_schema(name: str) -> dict[str, Any]:
    """The JSON schema of one value of field ``name``: its rule in :data:`schema.event.RULES`, exactly."""
    pattern, min_len, max_len, _ = RULES[name]
    return {"type": "string", "minLength": min_len, "maxLength": max_len, "pattern": f"^{pattern.pattern}$"}


PARAMS: Final = {
    p.name: p
    for p in (
        _date_param("from", f"First day (YYYY-MM-DD, in TALLY_DAY_TZ), inclusive. Default: `to` - {DEFAULT_DAYS - 1}."),
        _date_param("to", "Last day (YYYY-MM-DD), inclusive. Default: today."),
        _field_param("label", "Only these labels; repeat for several."),
        _field_param("category", "Only these categories (empty: none); repeat for several."),
        _field_param("dom_id", "Only these dom ids (empty: none); repeat for several."),
        Param(
            "q",
            "Labels containing this text, ignoring case.",
            {"type": "string", "minLength": 1, "maxLength": MAX_SEARCH_LEN, "pattern": f"^{_SEARCH.pattern}$"},
        ),
        Param(
            "group_by",
            "Group counts by these keys (repeat for several); none: one total. `hour` reads the hourly counts.",
            {"type": "string", "enum": list(GROUP_KEYS)},
            repeated=True,
        ),
        Param("order", "Rows by their keys, or by counter (highest first).", {"type": "string", "enum": list(ORDERS)}),
        Param("limit", "The most rows to return.", {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT}),
        Param("by", "What to rank.", {"type": "string", "enum": list(TOP_KEYS), "default": "label"}),
        Param("n", "How many to return.", {"type": "integer", "minimum": 1, "default": DEFAULT_TOP}),
        Param("format", "JSON, or CSV with a header row.", {"type": "string", "enum": [*FORMATS], "default": "json"}),
    )
}

_FILTERS: Final = ("from", "to", "label", "category", "dom_id", "q")
ENDPOINT_PARAMS: Final[Mapping[str, tuple[str, ...]]] = {
    "counts": (*_FILTERS, "group_by", "order", "limit", "format"),
    "top": (*_FILTERS, "by", "n", "format"),
    "labels": ("from", "to", "category", "q", "limit", "format"),
    "categories": ("from", "to", "label", "limit", "format"),
}


# -- parsed ---------------------------------------------------------------------


@dataclass(frozen=True)
class CountsRequest:
    """One read: filters, grouping, order and size. Every endpoint of /api/v1 is one of these."""

    start: date
    end: date
    labels: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    dom_ids: tuple[str, ...] = ()
    search: str | None = None
    group_by: tuple[str, ...] = ()
    order: Literal["key", "counter"] = "key"
    limit: int = DEFAULT_LIMIT
    format: Literal["json", "csv"] = "json"


def parse(endpoint: str, query: QueryParams, settings: QuerySettings, today: date) -> CountsRequest:
    """The request of ``endpoint`` (a key of :data:`ENDPOINT_PARAMS`), or InvalidParameter."""
    allowed = ENDPOINT_PARAMS[endpoint]
    for name in query:
        if name not in allowed:
            raise InvalidParameter(name, f"unknown parameter; this endpoint takes {', '.join(allowed)}")
    values = {name: query.getlist(name) for name in allowed if name in query}
    for name, given in values.items():
        if not PARAMS[name].repeated and len(given) > 1:
            raise InvalidParameter(name, "given once")
    one = {name: given[0] for name, given in values.items() if not PARAMS[name].repeated}

    start, end = _range(one.get("from"), one.get("to"), settings.max_days, today)
    fields: dict[str, Any] = {
        "start": start,
        "end": end,
        "labels": _field_values("label", values.get("label", [])),
        "categories": _field_values("category", values.get("category", [])),
        "dom_ids": _field_values("dom_id", values.get("dom_id", [])),
        "search": _search(one.get("q")),
        "format": _choice("format", one.get("format", "json"), FORMATS),
    }
    if endpoint == "counts":
        fields["group_by"] = _group_by(values.get("group_by", []))
        fields["order"] = _choice("order", one.get("order", "key"), ORDERS)
        fields["limit"] = _whole("limit", one.get("limit"), DEFAULT_LIMIT, settings.max_rows)
    elif endpoint == "top":
        fields["group_by"] = (_choice("by", one.get("by", "label"), TOP_KEYS),)
        fields["order"] = "counter"
        fields["limit"] = _whole("n", one.get("n"), DEFAULT_TOP, settings.max_rows)
    else:  # labels, categories: what is known, with its count
        fields["group_by"] = ("label",) if endpoint == "labels" else ("category",)
        fields["limit"] = _whole("limit", one.get("limit"), DEFAULT_LIMIT, settings.max_rows)
    return CountsRequest(**fields)


def parse_day(name: str, raw: str) -> date:
    """A date as ``YYYY-MM-DD`` that ClickHouse can store, or InvalidParameter naming ``name``."""
    if not _DATE.fullmatch(raw):
        raise InvalidParameter(name, "a date as YYYY-MM-DD")
    try:
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidParameter(name, "a date as YYYY-MM-DD") from exc
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidParameter(name, f"between {FIRST_DAY} and {LAST_DAY}")
    return day


def _range(raw_from: str | None, raw_to: str | None, max_days: int, today: date) -> tuple[date, date]:
    end = parse_day("to", raw_to) if raw_to is not None else today
    if raw_from is not None:
        start = parse_day("from", raw_from)
    else:
        start = max(FIRST_DAY, end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise InvalidParameter("from", f"on or before to ({end})")
    if (end - start).days + 1 > max_days:
        raise InvalidParameter("from", f"a range of at most {max_days} days (from {start} to {end} is longer)")
    return start, end


def _field_values(name: str, given: Sequence[str]) -> tuple[str, ...]:
    if len(given) > MAX_VALUES_PER_FILTER:
        raise InvalidParameter(name, f"at most {MAX_VALUES_PER_FILTER} values")
    for index, value in enumerate(given):
        try:
            check_field(name, value)
        except InvalidField as exc:
            raise InvalidParameter(f"{name}[{index}]", exc.rule) from exc
    return tuple(dict.fromkeys(given))


def _search(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_SEARCH_LEN:
        raise InvalidParameter("q", f"1 to {MAX_SEARCH_LEN} characters")
    if not _SEARCH.fullmatch(raw):
        raise InvalidParameter("q", "only letters, digits and _ . - /")
    return raw


def _group_by(given: Sequence[str]) -> tuple[str, ...]:
    if len(given) > MAX_VALUES_PER_FILTER:  # the same bound as every repeated parameter (OpenAPI maxItems)
        raise InvalidParameter("group_by", f"at most {MAX_VALUES_PER_FILTER} values")
    for index, key in enumerate(given):
        _choice(f"group_by[{index}]", key, GROUP_KEYS)
    return tuple(key for key in GROUP_KEYS if key in given)


def _choice(name: str, raw: str, choices: Sequence[str]) -> Any:
    if raw not in choices:
        raise InvalidParameter(name, f"one of {', '.join(choices)}")
    return raw


def _whole(name: str, raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return min(default, maximum)
    if not _WHOLE.fullmatch(raw):
        raise InvalidParameter(name, f"a whole number from 1 to {maximum}")
    value = int(raw)
    if not 1 <= value <= maximum:
        raise InvalidParameter(name, f"a whole number from 1 to {maximum}")
    return value
