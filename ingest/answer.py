"""How ingest answers: small JSON for callers that read it, a 1x1 GIF for pixels.

Every answer of a beacon route says ``Cache-Control: no-store`` (a cached
answer would be an uncounted event) and sets no cookie. A pixel answers an
image whatever its status, so an ``<img>`` never shows a broken icon; what
went wrong is then in the ``X-Tally-Error`` header, the same JSON a JSON
caller gets in the body.
"""

from __future__ import annotations

import base64
import json
from typing import Final

from starlette.responses import JSONResponse, Response

from ingest.outcome import Outcome

TRANSPARENT_GIF: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE: Final = {"Cache-Control": "no-store"}


def accepted(outcome: Outcome) -> Response:
    """202: every published event is in Kafka; ``dropped`` says what was not counted, and why."""
    return JSONResponse(outcome.as_json(), status_code=202, headers={**NO_STORE, **outcome.headers()})


def pixel(outcome: Outcome) -> Response:
    return _gif(200, outcome.headers())


def refused(status: int, body: dict[str, object], headers: dict[str, str], as_pixel: bool) -> Response:
    """A 4xx or 5xx: the error's JSON as the body, or as ``X-Tally-Error`` on a pixel."""
    if as_pixel:
        return _gif(status, {**headers, "X-Tally-Error": json.dumps(body, separators=(",", ":"))})
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **headers})


def _gif(status: int, headers: dict[str, str]) -> Response:
    return Response(TRANSPARENT_GIF, status_code=status, media_type="image/gif", headers={**NO_STORE, **headers})
