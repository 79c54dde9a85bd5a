"""The OpenAPI document states what the server enforces: each parameter's pattern accepts exactly the values
the server reads, and ``/get_stats/`` asks for a token exactly when the server does."""

import re
from datetime import date, timedelta

import pytest

from query.errors import InvalidParameter
from query.heatmap import _dom_ids
from query.openapi import document
from query.params import FIRST_DAY, LAST_DAY, PARAMS, parse_day
from query.settings import QuerySettings
from schema.event import InvalidField, check_field


def pattern_of(schema: dict[str, object]) -> re.Pattern[str]:
    pattern = schema["pattern"]
    assert isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")
    return re.compile(pattern)


def server_reads_day(raw: str) -> bool:
    try:
        parse_day("to", raw)
    except InvalidParameter:
        return False
    return True


def documented_day(raw: str) -> bool:
    """The date parameters' pattern and ``format: date`` (a real calendar day)."""
    if not pattern_of(dict(PARAMS["to"].schema)).search(raw):
        return False
    try:
        date.fromisoformat(raw)
    except ValueError:
        return False
    return True


EDGE_DAYS = [
    str(FIRST_DAY - timedelta(days=1)),
    str(FIRST_DAY),
    str(LAST_DAY),
    str(LAST_DAY + timedelta(days=1)),
    "9426-07-12",
    "0001-01-01",
    "2024-02-29",
    "2026-02-29",
    "2026-13-01",
    "2026-04-31",
    "2026-4-01",
    "2026-04-01x",
    "٢٠٢٦-04-01",  # Arabic-Indic digits
    "",
]


@pytest.mark.parametrize("raw", EDGE_DAYS)
def test_the_documented_dates_are_the_ones_the_server_reads(raw: str) -> None:
    assert documented_day(raw) == server_reads_day(raw)


def test_every_year_the_server_reads_and_none_other_is_documented() -> None:
    for year in range(FIRST_DAY.year - 30, LAST_DAY.year + 30):
        for raw in (f"{year:04d}-01-01", f"{year:04d}-12-31"):
            assert documented_day(raw) == server_reads_day(raw), raw


def field_reads(name: str, value: str) -> bool:
    try:
        check_field(name, value)
    except InvalidField:
        return False
    return True


FIELD_VALUES = ["", "a", "_a", ".a", "a.b-c/d", "a b", "a:b", "é", "a|b", "x" * 64, "x" * 65, "x" * 128, "x" * 129]


@pytest.mark.parametrize("name", ["label", "category", "dom_id"])
def test_the_documented_filters_are_the_field_rules(name: str) -> None:
    schema = dict(PARAMS[name].schema)
    pattern, shortest, longest = pattern_of(schema), int(schema["minLength"]), int(schema["maxLength"])
    for value in FIELD_VALUES:
        documented = bool(pattern.search(value)) and shortest <= len(value) <= longest
        assert documented == field_reads(name, value), (name, value)


def dom_ids_read(raw: str) -> bool:
    try:
        _dom_ids(raw)
    except InvalidParameter:
        return False
    return True


@pytest.mark.parametrize(
    "raw",
    ["btn1|", "btn1", "|btn1||btn2|", "", "|", "||", "btn 1|", "a" * 128, "a" * 129, "|".join(["a"] * 500),
     "|".join(["a"] * 501), "|".join(["a"] * 500) + "|||"],
)  # fmt: skip
def test_the_documented_dom_ids_are_the_ones_get_stats_reads(raw: str) -> None:
    (dom_ids,) = [
        p for p in document(QuerySettings())["paths"]["/get_stats/"]["get"]["parameters"] if p["name"] == "dom_ids"
    ]
    assert bool(pattern_of(dom_ids["schema"]).search(raw)) == dom_ids_read(raw)


def test_get_stats_asks_for_a_token_in_the_document_exactly_when_the_server_does() -> None:
    closed = document(QuerySettings(public_get_stats=False))["paths"]["/get_stats/"]["get"]
    public = document(QuerySettings(public_get_stats=True))["paths"]["/get_stats/"]["get"]
    assert "security" not in closed and "401" in closed["responses"]  # the document's default: a bearer token
    assert public["security"] == [] and "401" not in public["responses"]
    assert document(QuerySettings())["security"] == [{"bearer": []}]
