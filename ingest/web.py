"""The browser side, served with the beacon routes: the ``tally.js`` library and the demo pages.

- ``GET /tally.js``   the library as sites load it: ``web/tally.min.js`` (terser's output of
                      ``web/tally.js``, made by ``make web/tally.min.js``), gzipped when the
                      browser accepts it, cached for an hour and revalidated by ETag
- ``GET /demo/``      the seed's example page, using the library, and its heat map
- ``GET /demo/seed/`` the seed's own jQuery snippet, unchanged, against this service;
                      jQuery comes from the npm package (``node_modules``, ``make install``)
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ROOT: Final = Path(__file__).resolve().parent.parent
LIBRARY: Final = ROOT / "web" / "tally.min.js"
DEMO: Final = ROOT / "web" / "demo"
JQUERY: Final = ROOT / "node_modules" / "jquery" / "dist" / "jquery.min.js"

LIBRARY_MAX_AGE_S: Final = 3600
"""How long browsers and CDNs keep tally.js without asking: a new version reaches every page within an hour."""


class Script:
    """One script, read once: served gzipped when accepted, with a weak ETag that a revalidation answers with 304."""

    def __init__(self, path: Path, max_age_s: int) -> None:
        self.body = path.read_bytes()
        self.gzipped = gzip.compress(self.body, compresslevel=9, mtime=0)
        self.etag = f'W/"{hashlib.sha256(self.body).hexdigest()[:20]}"'
        self.headers = {
            "Cache-Control": f"public, max-age={max_age_s}",
            "ETag": self.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }

    async def serve(self, request: Request) -> Response:
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=self.headers)
        media_type = "text/javascript; charset=utf-8"
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            return Response(self.gzipped, media_type=media_type, headers={**self.headers, "Content-Encoding": "gzip"})
        return Response(self.body, media_type=media_type, headers=self.headers)


def _etags(if_none_match: str) -> set[str]:
    """The tags of an If-None-Match header, compared weakly (RFC 9110: ``W/"x"`` matches ``"x"``)."""
    tags = {tag.strip() for tag in if_none_match.split(",")}
    return tags | {f"W/{tag}" for tag in tags if tag.startswith('"')}


async def jquery(request: Request) -> Response:
    """jQuery from its npm package, for the seed's page; never fetched from elsewhere."""
    if not JQUERY.is_file():
        return JSONResponse(
            {"error": "not_found", "message": "jQuery is not installed here: `make install` fetches it from npm"},
            status_code=404,
        )
    return FileResponse(JQUERY, media_type="text/javascript; charset=utf-8")


def routes() -> list[BaseRoute]:
    return [
        Route("/tally.js", Script(LIBRARY, LIBRARY_MAX_AGE_S).serve, methods=["GET"]),
        Route("/demo/seed/jquery.min.js", jquery, methods=["GET"]),
        Mount("/demo", app=StaticFiles(directory=DEMO, html=True), name="demo"),
    ]
