"""The seed's ``labels`` syntax and the input rules, as a caller sees them."""

import pytest

from ingest.errors import InvalidBeacon, TooLarge
from ingest.parse import RawLabel, TooManyFields, parse_labels
from ingest.validate import Limits, events_from_query

TS = 1_764_000_000_000


def test_seed_syntax_pipes_and_colons() -> None:
    assert parse_labels("user_connected|user_clicked_button:forms:btn1") == [
        RawLabel("user_connected", "", ""),
        RawLabel("user_clicked_button", "forms", "btn1"),
    ]


@pytest.mark.parametrize("raw", ["a+cat+dom", "a cat dom", "a:cat+dom"])
def test_plus_separates_fields_as_the_seed_code_accepted(raw: str) -> None:
    # An unescaped '+' in a query string arrives as a space.
    assert parse_labels(raw) == [RawLabel("a", "cat", "dom")]


def test_trailing_and_empty_segments_are_ignored() -> None:
    assert parse_labels("a||b|") == [RawLabel("a", "", ""), RawLabel("b", "", "")]


def test_category_may_be_empty_while_dom_id_is_given() -> None:
    assert parse_labels("a::dom") == [RawLabel("a", "", "dom")]


def test_four_fields_are_refused() -> None:
    with pytest.raises(TooManyFields):
        parse_labels("a:b:c:d")


def test_events_carry_fields_and_server_time() -> None:
    events = events_from_query("signup:forms:btn1|home", 30, Limits(), TS)
    assert [(e.label, e.category, e.dom_id, e.ts_ms) for e in events] == [
        ("signup", "forms", "btn1", TS),
        ("home", "", "", TS),
    ]


@pytest.mark.parametrize(
    ("labels", "field", "rule_part"),
    [
        (None, "labels", "is required"),
        ("|", "labels", "at least one label"),
        ("a:b:c:d", "labels[0]", "at most 3 fields"),
        ("ok|x?y=1", "labels[1].label", "only letters, digits"),
        ("ok|{json}", "labels[1].label", "only letters, digits"),
        ("x" * 65, "labels[0].label", "at most 64 characters"),
        ("a:c:bad<id>", "labels[0].dom_id", "only letters, digits"),
        ("a:c@t", "labels[0].category", "only letters, digits"),
        (".hidden", "labels[0].label", "starting with a letter"),
    ],
)
def test_bad_input_names_the_field_and_the_rule(labels: str | None, field: str, rule_part: str) -> None:
    with pytest.raises(InvalidBeacon) as caught:
        events_from_query(labels, 10, Limits(), TS)
    assert caught.value.status == 400
    assert caught.value.field == field
    assert rule_part in caught.value.rule


def test_too_many_labels_is_refused_whole() -> None:
    with pytest.raises(InvalidBeacon, match="at most 3 labels"):
        events_from_query("a|b|c|d", 10, Limits(max_labels_per_request=3), TS)


def test_oversized_query_string_is_413() -> None:
    with pytest.raises(TooLarge) as caught:
        events_from_query("a", 9000, Limits(max_query_string=8192), TS)
    assert caught.value.status == 413
    assert caught.value.field == "query"


def test_a_remembered_labels_value_keeps_every_rule() -> None:
    # The same value again is answered from memory: still refused when bad, and under each request's own limit.
    for _ in range(2):
        with pytest.raises(InvalidBeacon, match=r"labels\[1\]\.label"):
            events_from_query("ok|x?y=1", 10, Limits(), TS)
        assert len(events_from_query("a|b|c", 10, Limits(), TS)) == 3
        with pytest.raises(InvalidBeacon, match="at most 2 labels"):
            events_from_query("a|b|c", 10, Limits(max_labels_per_request=2), TS)
    later = events_from_query("a|b|c", 10, Limits(), TS + 1)
    assert [e.ts_ms for e in later] == [TS + 1] * 3
