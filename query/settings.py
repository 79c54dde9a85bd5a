"""The read side's settings: one frozen object, read once at startup (see docs/settings.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.config import Config
from starlette.datastructures import CommaSeparatedStrings

from schema.settings import SettingError, non_negative, whole

MIN_TOKEN_LEN: Final = 16
"""A read token shorter than this is refused at startup: a guessable token is no protection."""


@dataclass(frozen=True)
class QuerySettings:
    """The read side's settings and limits, each from its ``TALLY_`` variable."""

    read_tokens: tuple[str, ...] = ()
    """TALLY_API_READ_TOKENS: comma-separated bearer tokens with read scope; none set, every read is refused."""
    public_get_stats: bool = False
    """TALLY_API_PUBLIC_GET_STATS: serve ``/get_stats/`` without a token, for sites that show counts to visitors."""
    max_days: int = 366
    """TALLY_API_MAX_DAYS: the longest date range of one query, in days."""
    max_rows: int = 10_000
    """TALLY_API_MAX_ROWS: the most rows one answer holds (``limit``, ``n``)."""
    cache_ttl_s: float = 1.0
    """TALLY_API_CACHE_TTL_S: how long an answer is reused for the same query; 0 turns the cache off."""
    cache_max_rows: int = 100_000
    """TALLY_API_CACHE_MAX_ROWS: rows held by the cache in all, its bound in memory."""

    @classmethod
    def from_config(cls, config: Config) -> QuerySettings:
        tokens = tuple(config("TALLY_API_READ_TOKENS", cast=CommaSeparatedStrings, default=""))
        for token in tokens:
            if len(token) < MIN_TOKEN_LEN or any(c.isspace() for c in token):
                raise SettingError(f"TALLY_API_READ_TOKENS: each token needs {MIN_TOKEN_LEN}+ characters, no spaces")
        return cls(
            read_tokens=tokens,
            public_get_stats=config("TALLY_API_PUBLIC_GET_STATS", cast=bool, default=cls.public_get_stats),
            max_days=whole(config, "TALLY_API_MAX_DAYS", cls.max_days),
            max_rows=whole(config, "TALLY_API_MAX_ROWS", cls.max_rows),
            cache_ttl_s=non_negative(config, "TALLY_API_CACHE_TTL_S", cls.cache_ttl_s),
            cache_max_rows=whole(config, "TALLY_API_CACHE_MAX_ROWS", cls.cache_max_rows),
        )
