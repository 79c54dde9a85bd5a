"""The read side's settings: one frozen object, read once at startup (see docs/settings.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.config import Config
from starlette.datastructures import CommaSeparatedStrings

from schema.settings import SettingError

MIN_TOKEN_LEN: Final = 16
"""A read token shorter than this is refused at startup: a guessable token is no protection."""


@dataclass(frozen=True)
class QuerySettings:
    """The read side's settings and limits, each from its ``TALLY_`` variable."""

    read_tokens: tuple[str, ...] = ()
    """TALLY_READ_TOKENS: comma-separated bearer tokens with read scope; none set, every read is refused."""
    public_get_stats: bool = False
    """TALLY_PUBLIC_GET_STATS: serve ``/get_stats/`` without a token, for sites that show counts to visitors."""
    max_days: int = 366
    """TALLY_API_MAX_DAYS: the longest date range of one query, in days."""
    max_rows: int = 10_000
    """TALLY_API_MAX_ROWS: the most rows one answer holds (``limit``, ``n``)."""
    cache_ttl_s: float = 1.0
    """TALLY_QUERY_CACHE_TTL_S: how long an answer is reused for the same query; 0 turns the cache off."""
    cache_max_rows: int = 100_000
    """TALLY_QUERY_CACHE_MAX_ROWS: rows held by the cache in all, its bound in memory."""

    @classmethod
    def from_config(cls, config: Config) -> QuerySettings:
        tokens = tuple(config("TALLY_READ_TOKENS", cast=CommaSeparatedStrings, default=""))
        for token in tokens:
            if len(token) < MIN_TOKEN_LEN or any(c.isspace() for c in token):
                raise SettingError(f"TALLY_READ_TOKENS: each token needs {MIN_TOKEN_LEN}+ characters, no spaces")
        settings = cls(
            read_tokens=tokens,
            public_get_stats=config("TALLY_PUBLIC_GET_STATS", cast=bool, default=cls.public_get_stats),
            max_days=config("TALLY_API_MAX_DAYS", cast=int, default=cls.max_days),
            max_rows=config("TALLY_API_MAX_ROWS", cast=int, default=cls.max_rows),
            cache_ttl_s=config("TALLY_QUERY_CACHE_TTL_S", cast=float, default=cls.cache_ttl_s),
            cache_max_rows=config("TALLY_QUERY_CACHE_MAX_ROWS", cast=int, default=cls.cache_max_rows),
        )
        for key, value in (
            ("TALLY_API_MAX_DAYS", settings.max_days),
            ("TALLY_API_MAX_ROWS", settings.max_rows),
            ("TALLY_QUERY_CACHE_MAX_ROWS", settings.cache_max_rows),
        ):
            if value <= 0:
                raise SettingError(f"{key}={value!r} must be greater than 0")
        if settings.cache_ttl_s < 0:
            raise SettingError(f"TALLY_QUERY_CACHE_TTL_S={settings.cache_ttl_s!r} must be 0 (off) or more")
        return settings
