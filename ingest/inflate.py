"""A POST body's ``Content-Encoding`` undone: gzip or deflate, inflated no further than the body limit.

A backend sending large JSON batches may compress them (``Content-Encoding:
gzip``, or ``deflate``: RFC 9110's zlib stream, or the raw deflate some
clients send under that name). The inflated body is held to the same
``TALLY_MAX_BODY_BYTES`` as a plain one, and a body that would inflate past
it is refused after inflating at most one byte more than the limit: a few
kilobytes that inflate to gigabytes cost no more than a body at the limit.
``identity`` (or no header) is the body as sent; any other coding is a 415
naming it.

Every refusal names the field and the rule (:mod:`ingest.errors`):
``content-encoding`` for a coding not read here, ``body`` for data that is
not what the header says (400) or inflates past the limit (413).
"""

from __future__ import annotations

import zlib
from typing import Final

from ingest.errors import InvalidBeacon, TooLarge, UnsupportedMediaType

CODINGS: Final = ("gzip", "deflate")
"""The content codings a POST body may be sent in (besides ``identity``)."""
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_ZLIB_WBITS: Final = zlib.MAX_WBITS
_RAW_WBITS: Final = -zlib.MAX_WBITS


def coding_of(content_encoding: str | None) -> str | None:
    """The one coding to undo (``gzip`` or ``deflate``), or None for a body as sent; else a 415 naming it."""
    if content_encoding is None:
        return None
    applied = [c.strip().lower() for c in content_encoding.split(",")]
    applied = [c for c in applied if c and c != "identity"]
    if not applied:
        return None
    coding = "gzip" if applied == ["x-gzip"] else applied[0]  # x-gzip: gzip's old name (RFC 9110, 8.4.1.3)
    if len(applied) > 1 or coding not in CODINGS:
        rule = f"gzip, deflate or identity, one of them; not {content_encoding}"
        raise UnsupportedMediaType("content-encoding", rule)
    return coding


def inflated(body: bytes, coding: str, max_bytes: int) -> bytes:
    """``body`` inflated from ``coding``; TooLarge past ``max_bytes`` (found out inflating max_bytes + 1 at most)."""
    # deflate: a zlib stream as the RFC says, or raw deflate as some clients send
    wbits = _GZIP_WBITS if coding == "gzip" else _ZLIB_WBITS if _is_zlib_header(body) else _RAW_WBITS
    out: list[bytes] = []
    size = 0
    rest = body
    while True:  # gzip may be several members, one after another (RFC 1952)
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(rest, max_bytes + 1 - size)
        except zlib.error as exc:
            raise InvalidBeacon("body", f"{coding} data, as Content-Encoding says") from exc
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge("body", f"at most {max_bytes} bytes, inflated")
        out.append(chunk)
        if not inflater.eof:
            raise InvalidBeacon("body", f"{coding} data, whole (it ends early)")
        rest = inflater.unused_data
        if not rest or coding != "gzip":
            break
    if rest:
        raise InvalidBeacon("body", f"{coding} data, nothing after its end")
    return b"".join(out)


def _is_zlib_header(body: bytes) -> bool:
    """A zlib stream's first two bytes (RFC 1950): deflate, a window of at most 32 KiB, a check that divides by 31."""
    return len(body) >= 2 and body[0] & 0x0F == 8 and body[0] >> 4 <= 7 and (body[0] << 8 | body[1]) % 31 == 0
