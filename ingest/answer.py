"""How ingest answers: small JSON for callers that read it, a 1x1 GIF for pixels.

Every answer of a beacon route says ``Cache-Control: no-store`` (a cached
answer would be an uncounted event) and sets no cookie. A pixel answers an
image whatever its status, so an ``<img>`` never shows a broken icon; what
went wrong is then in the ``X-Tally-Error`` header, the same JSON a JSON
caller gets in the body.

An :class:`Answer` is the status, raw headers and body, as Starlette's
``Response`` would send them: the beacon routes send it as two ASGI
messages (:mod:`ingest.track`), every other route as a ``Response``.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Final, NamedTuple

from starlette.responses import Response

from ingest.outcome import Outcome

TRANSPARENT_GIF: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE: Final = {"Cache-Control": "no-store"}


class Answer(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    """Lower-case names, as ASGI sends them; ``content-length`` and ``content-type`` included."""
    body: bytes

    def response(self) -> Response:
        response = Response(self.body, status_code=self.status)
        response.raw_headers = list(self.headers)
        return response


def accepted(outcome: Outcome) -> Answer:
    """202: every published event is in Kafka; ``dropped`` says what was not counted, and why."""
    if not outcome.drops and not outcome.restamped:
        length_and_type, body = _accepted_body(outcome.accepted)
        return Answer(202, [*_ACCEPTED_HEADERS, *length_and_type], body)
    return _json(202, outcome.as_json(), {**NO_STORE, **outcome.headers()})


def pixel(outcome: Outcome) -> Answer:
    return _gif(200, outcome.headers())


def refused(status: int, body: dict[str, object], headers: dict[str, str], as_pixel: bool) -> Answer:
    """A 4xx or 5xx: the error's JSON as the body, or as ``X-Tally-Error`` on a pixel."""
    if as_pixel:
        return _gif(status, {**headers, "X-Tally-Error": json.dumps(body, separators=(",", ":"))})
    return _json(status, body, {**NO_STORE, **headers})


_ACCEPTED_HEADERS: Final = [(b"cache-control", b"no-store")]


@functools.lru_cache(maxsize=1024)
def _accepted_body(accepted: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """``{"accepted": n}`` and its length and type: the same few answers, again and again."""
    answer = _json(202, {"accepted": accepted}, {})
    return answer.headers, answer.body


def _json(status: int, doc: dict[str, object], headers: dict[str, str]) -> Answer:
    # What Starlette's JSONResponse sends.
    body = json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
    return Answer(status, [*_raw(headers), (b"content-length", b"%d" % len(body)), _JSON_TYPE], body)


def _gif(status: int, headers: dict[str, str]) -> Answer:
    raw = _raw({**NO_STORE, **headers})
    return Answer(status, [*raw, (b"content-length", b"%d" % len(TRANSPARENT_GIF)), _GIF_TYPE], TRANSPARENT_GIF)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


_JSON_TYPE: Final = (b"content-type", b"application/json")
_GIF_TYPE: Final = (b"content-type", b"image/gif")
