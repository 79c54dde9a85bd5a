"""The seed's ``labels`` syntax into raw (label, category, dom_id) triples.

``a|b:cat:dom|c+cat`` -- labels separated by ``|``; within one, up to three
fields separated by ``:`` (or ``+``, which the seed's code also accepted; a
``+`` left unescaped in a query string arrives as a space, so a space counts
as ``+``). Empty segments are skipped, so the trailing ``|`` that the seed's
own page sends is harmless. Nothing is checked here beyond the shape: field
rules live in :mod:`ingest.validate`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

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
