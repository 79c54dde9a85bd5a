"""Where the contract lives: the events topic and the ClickHouse database.

Both services read these keys (prefix ``TALLY_``) the same way, so an ingest
process and a worker started with the same environment agree on the topic,
the database and the day boundary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.config import Config

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SettingError(ValueError):
    """A setting is malformed; the message names the key."""


def config_from(environ: Mapping[str, str]) -> Config:
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


def positive(config: Config, key: str, default: float, cast: type = float) -> float:
    value = config(key, cast=cast, default=default)
    if value <= 0:
        raise SettingError(f"{key}={value!r} must be greater than 0")
    return float(value)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:9092"
    """TALLY_KAFKA_BOOTSTRAP: host:port[,host:port...] of the brokers."""
    topic: str = "tally.events"
    """TALLY_EVENTS_TOPIC: the topic every label event goes to."""
    retention_days: int = 30
    """TALLY_EVENTS_RETENTION_DAYS: how long the events topic keeps events (replays reach that far)."""

    @classmethod
    def from_config(cls, config: Config) -> KafkaSettings:
        return cls(
            bootstrap=config("TALLY_KAFKA_BOOTSTRAP", default=cls.bootstrap),
            topic=config("TALLY_EVENTS_TOPIC", default=cls.topic),
            retention_days=config("TALLY_EVENTS_RETENTION_DAYS", cast=int, default=cls.retention_days),
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
