"""Request bodies and the seed's ``labels`` syntax into raw fields; nothing is checked but the shape.

Two syntaxes. The seed's:

``a|b:cat:dom|c+cat`` -- labels separated by ``|``; within one, up to three
fields separated by ``:`` (or ``+``, which the seed's code also accepted; a
``+`` left unescaped in a query string arrives as a space, so a space counts
as ``+``). Empty segments are skipped, so the trailing ``|`` that the seed's
own page sends is harmless.

And JSON: ``{"events": [{"label": ..., "category": ..., "dom_id": ..., "ts": ...}, ...]}``,
a bare array of such events, or one event object. :func:`parse_json` only
finds the list of events; each event's fields are checked in
:mod:`ingest.validate`, which owns every rule.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

import orjson

_FIELD_SEPARATOR = re.compile(r"[:+ ]")


class RawLabel(NamedTuple):
    label: str
    category: str
    dom_id: str


class TooManyFields(ValueError):
    def __init__(self, index: int, segment: str) -> None:
        super().__init__(segment)
        self.index = index


def parse_labels(raw: str) -> list[RawLabel]:
    """Split a ``labels`` value; raise TooManyFields for ``a:b:c:d``."""
    found = []
    for index, segment in enumerate(s for s in raw.split("|") if s.strip()):
        fields = _FIELD_SEPARATOR.split(segment.strip())
        if len(fields) > 3:
            raise TooManyFields(index, segment)
        fields += [""] * (3 - len(fields))
        found.append(RawLabel(*fields))
    return found


class MalformedBody(ValueError):
    """A body that is not a JSON document of events; ``field`` and ``rule`` say what was expected."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def looks_like_json(body: bytes) -> bool:
    """What a ``text/plain`` body is: JSON if it starts with ``{`` or ``[``, else the labels syntax."""
    return body.lstrip()[:1] in (b"{", b"[")


def parse_json(body: bytes) -> list[object]:
    """The events of a JSON body, unchecked: one item per event the client meant to send."""
    try:
        doc = orjson.loads(body)  # much faster than json.loads for a batch
    except orjson.JSONDecodeError:
        # What orjson refuses and the standard library reads (a BOM, UTF-16, 1e400, a lone
        # surrogate) is read as before, so that both accept and refuse the same bodies.
        try:
            doc = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise MalformedBody("body", "a JSON document (UTF-8)") from exc
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if "events" not in doc:
            return [doc]
        events = doc["events"]
        if isinstance(events, list):
            return events
        raise MalformedBody("events", "a list of events")
    raise MalformedBody("body", 'a JSON object (one event, or {"events": [...]}) or an array of events')


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
