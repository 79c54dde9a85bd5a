"""tally.js as the app serves it: the minified file is terser's output of the source, small, and cached well.

The browser behaviour is in tests/integration/system/test_tally_js_browser.py; this is the file and its headers.
"""

import gzip
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ingest.settings import IngestSettings
from ingest.web import JQUERY, LIBRARY, LIBRARY_MAX_AGE_S
from tests.support.fakes import FakePublisher, running
from tests.support.paths import ROOT

SOURCE = ROOT / "web" / "tally.js"
TERSER = ROOT / "node_modules" / ".bin" / "terser"
MAX_GZIPPED = 3 * 1024


@pytest.fixture
def client() -> Iterator[TestClient]:
    with running(FakePublisher()) as client:
        yield client


def test_minified_file_is_terser_output_of_the_source(tmp_path: Path) -> None:
    assert TERSER.exists(), "terser is missing: `make install` installs the npm dev dependencies"
    fresh = tmp_path / "tally.min.js"
    # The Makefile's command (target web/tally.min.js), with the same pinned terser.
    subprocess.run(
        [str(TERSER), str(SOURCE), "--compress", "--mangle", "--comments", "/^!/", "--output", str(fresh)], check=True
    )
    assert LIBRARY.read_bytes() == fresh.read_bytes(), "web/tally.min.js is stale: run `make tally-js` and commit it"


def test_library_is_at_most_3_kb_gzipped() -> None:
    minified = LIBRARY.read_bytes()
    gzipped = len(gzip.compress(minified, compresslevel=9))
    print(f"tally.js: {len(SOURCE.read_bytes())} bytes source, {len(minified)} minified, {gzipped} gzipped")
    assert gzipped <= MAX_GZIPPED


def test_tally_js_is_served_gzipped_with_cache_headers(client: TestClient) -> None:
    response = client.get("/tally.js", headers={"accept-encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["cache-control"] == f"public, max-age={LIBRARY_MAX_AGE_S}"
    assert "Accept-Encoding" in response.headers["vary"]
    assert response.content == LIBRARY.read_bytes()  # httpx decodes the gzip
    assert "set-cookie" not in response.headers

    plain = client.get("/tally.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == LIBRARY.read_bytes()
    assert plain.headers["etag"] == response.headers["etag"]


def test_tally_js_revalidates_with_304(client: TestClient) -> None:
    etag = client.get("/tally.js").headers["etag"]
    assert etag.startswith('W/"')
    again = client.get("/tally.js", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    strong = client.get("/tally.js", headers={"if-none-match": f'"other", {etag.removeprefix("W/")}'})
    assert strong.status_code == 304  # If-None-Match compares weakly
    assert client.get("/tally.js", headers={"if-none-match": '"other"'}).status_code == 200


def test_tally_js_loads_from_other_origins(client: TestClient) -> None:
    response = client.get("/tally.js", headers={"origin": "https://shop.example"})
    assert response.headers["access-control-allow-origin"] == "*"


def test_demo_pages_and_seed_jquery_are_served(client: TestClient) -> None:
    demo = client.get("/demo/")
    assert demo.status_code == 200
    assert '<script src="/tally.js" async></script>' in demo.text
    assert demo.text.count('data-tally-label="link_clicked"') == 4
    seed = client.get("/demo/seed/")
    assert seed.status_code == 200
    assert "url: '/get_stats/?dom_ids='+dom_ids," in seed.text
    jquery = client.get("/demo/seed/jquery.min.js")
    assert jquery.status_code == 200
    assert jquery.content == JQUERY.read_bytes()
    assert jquery.content.startswith(b"/*! jQuery v3.")


def test_track_only_process_serves_the_library_and_a_query_only_one_does_not() -> None:
    with running(FakePublisher(), IngestSettings(routes=frozenset({"track"}))) as client:
        assert client.get("/tally.js").status_code == 200
    with running(FakePublisher(), IngestSettings(routes=frozenset({"query"}))) as client:
        assert client.get("/tally.js").status_code == 404
