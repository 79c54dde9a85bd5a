"""Compressed POST bodies (``Content-Encoding: gzip`` or ``deflate``): read like plain ones, held to the body limit.

A caller's view: the status and the JSON naming the field and rule, and what
reached the (fake) publisher. A body that would inflate past the limit is
refused after inflating no more than the limit and one byte
(:mod:`ingest.inflate`).
"""

import gzip
import json
import zlib
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ingest.errors import TooLarge
from ingest.inflate import inflated
from ingest.settings import IngestSettings
from ingest.validate import Limits
from tests.support.fakes import FakePublisher, running

BATCH = json.dumps({"events": [{"label": "signup", "category": "forms", "dom_id": f"btn{i}"} for i in range(300)]})


def bomb(prefix: bytes, filler: bytes, size: int, suffix: bytes) -> bytes:
    """``prefix + filler * size + suffix`` gzipped (one gzip member per megabyte), never held inflated."""
    megabyte = gzip.compress(filler * 1_000_000, compresslevel=9)
    return gzip.compress(prefix) + megabyte * (size // 1_000_000) + gzip.compress(suffix)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODED = {
    "gzip": lambda data: gzip.compress(data),
    "x-gzip": lambda data: gzip.compress(data),
    "deflate": zlib.compress,  # RFC 9110's deflate: a zlib stream
    "deflate (raw)": raw_deflate,  # what some clients send under that name
    "gzip, identity": lambda data: gzip.compress(data),
}


@pytest.mark.parametrize("coding", list(ENCODED))
def test_a_compressed_json_batch_is_counted_like_a_plain_one(coding: str) -> None:
    publisher = FakePublisher()
    body = ENCODED[coding](BATCH.encode())
    assert len(body) < len(BATCH) // 4
    with running(publisher) as client:
        response = client.post(
            "/track/",
            content=body,
            headers={"content-type": "application/json", "content-encoding": coding.split(" ")[0]},
        )
    assert (response.status_code, response.json()) == (202, {"accepted": 300})
    assert [e.dom_id for e in publisher.published] == [f"btn{i}" for i in range(300)]


def test_a_compressed_beacon_in_the_labels_syntax_is_read_as_text() -> None:
    publisher = FakePublisher()
    with running(publisher) as client:
        response = client.post(
            "/track/",
            content=gzip.compress(b"signup:forms:btn1|home"),
            headers={"content-type": "text/plain", "content-encoding": "gzip"},
        )
    assert (response.status_code, response.json()) == (202, {"accepted": 2})
    assert [e.label for e in publisher.published] == ["signup", "home"]


def test_gzip_members_one_after_another_are_one_body() -> None:
    publisher = FakePublisher()
    with running(publisher) as client:
        response = client.post(
            "/track/",
            content=gzip.compress(b"signup|") + gzip.compress(b"home"),
            headers={"content-type": "text/plain", "content-encoding": "gzip"},
        )
    assert (response.status_code, response.json()) == (202, {"accepted": 2})


def test_a_small_body_that_inflates_past_the_limit_is_413_naming_the_limit() -> None:
    publisher = FakePublisher()
    body = bomb(b"[", b" ", 60_000_000, b"]")  # 60 MB of JSON, in under the 64 KiB a body may be
    assert len(body) < 65536
    with running(publisher) as client:
        response = client.post(
            "/track/", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
        )
    assert response.status_code == 413
    assert (response.json()["field"], response.json()["rule"]) == ("body", "at most 65536 bytes, inflated")
    assert publisher.published == []


def test_a_bomb_is_found_out_inflating_no_more_than_the_limit_and_one_byte() -> None:
    body = bomb(b"", b"\0", 1_000_000_000, b"")  # a gigabyte, in about a megabyte
    seen: list[int] = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, wbits: int) -> None:
            self.inner = real(wbits)

        def decompress(self, data: bytes, max_length: int) -> bytes:
            out = self.inner.decompress(data, max_length)
            seen.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:  # eof, unused_data
            return getattr(self.inner, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zlib, "decompressobj", Counting)
        with pytest.raises(TooLarge, match="at most 1000 bytes, inflated"):
            inflated(body, "gzip", 1000)
    assert sum(seen) == 1001


def test_the_inflated_limit_is_the_body_limit_setting() -> None:
    publisher = FakePublisher()
    body = gzip.compress(BATCH.encode())
    with running(publisher, IngestSettings(limits=Limits(max_body_bytes=len(BATCH) - 1))) as client:
        response = client.post(
            "/track/", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
        )
    assert response.status_code == 413
    assert response.json()["rule"] == f"at most {len(BATCH) - 1} bytes, inflated"


@pytest.mark.parametrize(
    ("body", "coding", "rule"),
    [
        (b'{"label": "signup"}', "gzip", "gzip data, as Content-Encoding says"),
        (gzip.compress(b'{"label": "signup"}')[:-12], "gzip", "gzip data, whole (it ends early)"),
        (gzip.compress(b'{"label": "signup"}') + b"junk", "gzip", "gzip data, as Content-Encoding says"),
        (zlib.compress(b'{"label": "signup"}') + b"junk", "deflate", "deflate data, nothing after its end"),
        (b"", "gzip", "gzip data, whole (it ends early)"),
    ],
    ids=["not gzip", "cut short", "junk after it", "junk after deflate", "empty"],
)
def test_data_that_is_not_what_content_encoding_says_is_400_naming_the_body(
    body: bytes, coding: str, rule: str
) -> None:
    publisher = FakePublisher()
    with running(publisher) as client:
        response = client.post(
            "/track/", content=body, headers={"content-type": "application/json", "content-encoding": coding}
        )
    assert response.status_code == 400
    assert (response.json()["field"], response.json()["rule"]) == ("body", rule)
    assert publisher.published == []


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "deflate, br"])
def test_any_other_content_encoding_is_415_naming_it(coding: str) -> None:
    publisher = FakePublisher()
    with running(publisher) as client:
        response = client.post(
            "/track/", content=b"whatever", headers={"content-type": "application/json", "content-encoding": coding}
        )
    assert response.status_code == 415
    assert response.json()["field"] == "content-encoding"
    assert response.json()["rule"] == f"gzip, deflate or identity, one of them; not {coding}"
    assert publisher.published == []


def test_identity_is_the_body_as_sent() -> None:
    publisher = FakePublisher()
    with running(publisher) as client:
        response = client.post(
            "/track/", content=b"signup", headers={"content-type": "text/plain", "content-encoding": "identity"}
        )
    assert (response.status_code, response.json()) == (202, {"accepted": 1})


def test_a_compressed_json_post_from_another_origin_may_be_preflighted(client: TestClient) -> None:
    response = client.options(
        "/track/",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,content-encoding",
        },
    )
    assert response.status_code == 200
    assert "content-encoding" in response.headers["access-control-allow-headers"].lower()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with running(FakePublisher()) as client:
        yield client
