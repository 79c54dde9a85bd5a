"""Where the contract lives: the events topic and the ClickHouse database.

Both services read these keys (prefix ``TALLY_``) the same way, so an ingest
process and a worker started with the same environment agree on the topic,
the database and the day boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.config import Config

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SettingError(ValueError):
    """A setting is malformed; the message names the key."""


RENAMED: Final[Mapping[str, str]] = {
    "TALLY_RETRY_AFTER_S": "TALLY_PUBLISH_RETRY_AFTER_S",
    "TALLY_REPLICATION": "TALLY_KAFKA_REPLICATION",
    "TALLY_READ_TOKENS": "TALLY_API_READ_TOKENS",
    "TALLY_PUBLIC_GET_STATS": "TALLY_API_PUBLIC_GET_STATS",
    "TALLY_QUERY_CACHE_TTL_S": "TALLY_API_CACHE_TTL_S",
    "TALLY_QUERY_CACHE_MAX_ROWS": "TALLY_API_CACHE_MAX_ROWS",
    "TALLY_ROUTES": "TALLY_INGEST_ROUTES",
    "TALLY_ACCESS_LOG": "TALLY_INGEST_ACCESS_LOG",
    "TALLY_CORS_ORIGINS": "TALLY_INGEST_CORS_ORIGINS",
}
"""Variables that have another name now: a service started with the old one refuses to start.

A setting that would be silently ignored (a token, an origin, a replication
factor) is worse than a service that does not start.
"""

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def config_from(environ: Mapping[str, str]) -> Config:
    """The settings' view of ``environ``; refuses the variables listed in :data:`RENAMED`."""
    for old, new in RENAMED.items():
        if old in environ:
            raise SettingError(f"{old} is not read any more: set {new} instead (docs/settings.md)")
    return Config(environ=dict(environ))


def zone(config: Config, key: str, default: str) -> ZoneInfo:
    name = config(key, default=default)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingError(f"{key}={name!r} is not an IANA time zone") from exc


def identifier(config: Config, key: str, default: str) -> str:
    """A ClickHouse name: checked here because DDL cannot take it as a parameter."""
    value = config(key, default=default)
    if not _IDENTIFIER.fullmatch(value):
        raise SettingError(f"{key}={value!r} must match {_IDENTIFIER.pattern}")
    return value


def whole(config: Config, key: str, default: int, *, least: int = 1) -> int:
    """A whole number of at least ``least``."""
    value: int = config(key, cast=int, default=default)
    if value < least:
        raise SettingError(f"{key}={value!r} must be {least} or more")
    return value


def positive(config: Config, key: str, default: float) -> float:
    """A number greater than 0 (a duration, a rate)."""
    value = config(key, cast=float, default=default)
    if not value > 0:
        raise SettingError(f"{key}={value!r} must be greater than 0")
    return float(value)


def non_negative(config: Config, key: str, default: float) -> float:
    """A number of 0 or more (0 usually turns something off)."""
    value = config(key, cast=float, default=default)
    if not value >= 0:
        raise SettingError(f"{key}={value!r} must be 0 or more")
    return float(value)


def one_of(
    config: Config, key: str, allowed: tuple[str, ...], default: str, normal: Callable[[str], str] = str.lower
) -> str:
    value = normal(config(key, default=default).strip())
    if value not in allowed:
        raise SettingError(f"{key}={value!r} must be {', '.join(allowed[:-1])} or {allowed[-1]}")
    return value


def log_level(config: Config) -> str:
    """TALLY_LOG_LEVEL, read by every service: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    return one_of(config, "TALLY_LOG_LEVEL", LOG_LEVELS, "INFO", str.upper)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:9092"
    """TALLY_KAFKA_BOOTSTRAP: host:port[,host:port...] of the brokers."""
    topic: str = "tally.events"
    """TALLY_EVENTS_TOPIC: the topic every label event goes to."""
    partitions: int = 6
    """TALLY_EVENTS_PARTITIONS: partitions of the events topic (and of the worker's changelog); a worker's
    unit of scaling, set when the topic is created."""
    retention_days: int = 30
    """TALLY_EVENTS_RETENTION_DAYS: how long the events topic keeps events (replays reach that far)."""
    replication: int = 1
    """TALLY_KAFKA_REPLICATION: replication factor of the topics Tally creates (the worker's changelog, and
    the events topic where the worker or the local stack creates it)."""

    @classmethod
    def from_config(cls, config: Config) -> KafkaSettings:
        return cls(
            bootstrap=config("TALLY_KAFKA_BOOTSTRAP", default=cls.bootstrap),
            topic=config("TALLY_EVENTS_TOPIC", default=cls.topic),
            partitions=whole(config, "TALLY_EVENTS_PARTITIONS", cls.partitions),
            retention_days=whole(config, "TALLY_EVENTS_RETENTION_DAYS", cls.retention_days),
            replication=whole(config, "TALLY_KAFKA_REPLICATION", cls.replication),
        )


@dataclass(frozen=True)
class ClickHouseSettings:
    host: str = "127.0.0.1"
    """TALLY_CLICKHOUSE_HOST"""
    port: int = 9000
    """TALLY_CLICKHOUSE_PORT: the native protocol port."""
    database: str = "tally"
    """TALLY_CLICKHOUSE_DATABASE"""
    user: str = "default"
    """TALLY_CLICKHOUSE_USER"""
    password: str = ""
    """TALLY_CLICKHOUSE_PASSWORD"""

    @classmethod
    def from_config(cls, config: Config) -> ClickHouseSettings:
        return cls(
            host=config("TALLY_CLICKHOUSE_HOST", default=cls.host),
            port=config("TALLY_CLICKHOUSE_PORT", cast=int, default=cls.port),
            database=identifier(config, "TALLY_CLICKHOUSE_DATABASE", cls.database),
            user=config("TALLY_CLICKHOUSE_USER", default=cls.user),
            password=config("TALLY_CLICKHOUSE_PASSWORD", default=cls.password),
        )

    def __repr__(self) -> str:  # never print the password
        return f"ClickHouseSettings({self.user}@{self.host}:{self.port}/{self.database})"


def clickhouse_client(settings: ClickHouseSettings, *, database: str | None = None) -> Any:
    """A clickhouse_driver.Client for ``settings`` (one per thread: it is not thread-safe)."""
    from clickhouse_driver import Client

    return Client(
        settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        database=settings.database if database is None else database,
        connect_timeout=2,
        send_receive_timeout=10,
        settings={"enable_optimize_predicate_expression": 1},
    )
