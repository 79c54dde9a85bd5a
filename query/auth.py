"""Bearer tokens with read scope, for the query routes. ``/track/`` never asks for one.

A request's token is compared with every configured token in constant time
(:func:`hmac.compare_digest` on SHA-256 digests, so neither the content nor
the length of a token shows in the timing), and all of them are compared
every time, so which token matched does not show either. Several tokens let
a deployment rotate: add the new one, move the clients, remove the old one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.requests import Request

from query.errors import Unauthorized

RULE = "a bearer token with read scope: Authorization: Bearer <token>"


class ReadTokens:
    def __init__(self, tokens: Sequence[str]) -> None:
        self._digests = [_digest(token) for token in tokens]

    def check(self, request: Request) -> None:
        """Return if ``request`` carries a read token, else raise Unauthorized (401)."""
        if not self._digests:
            raise Unauthorized(
                "reads are closed: the server has no read token (TALLY_API_READ_TOKENS)", token_given=False
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(RULE, token_given=False)
        if not self.accepts(token):
            raise Unauthorized(f"{RULE}; this token is not one", token_given=True)

    def accepts(self, token: str) -> bool:
        given = _digest(token)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(given, digest)
        return matched


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
