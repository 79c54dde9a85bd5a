"""The ingest service's settings: one frozen object, read once at startup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Final
from zoneinfo import ZoneInfo

from starlette.config import Config
from starlette.datastructures import CommaSeparatedStrings

from ingest.guard import Policy
from ingest.publish import COMPRESSIONS, PublishSettings
from ingest.validate import Limits
from query.settings import QuerySettings
from schema.event import InvalidField, check_field
from schema.settings import (
    ClickHouseSettings,
    KafkaSettings,
    SettingError,
    config_from,
    log_level,
    one_of,
    whole,
    zone,
)

ROUTE_GROUPS: Final = ("track", "query")


@dataclass(frozen=True)
class IngestSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    limits: Limits = field(default_factory=Limits)
    policy: Policy = field(default_factory=Policy)
    cors_origins: tuple[str, ...] = ("*",)
    """TALLY_INGEST_CORS_ORIGINS: comma-separated origins (``https://shop.example``) that may send from a page;
    ``*``: any."""
    day_tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    """TALLY_DAY_TZ: where a day starts and ends, for 'today' in queries."""
    host: str = "127.0.0.1"
    """TALLY_INGEST_HOST"""
    port: int = 8000
    """TALLY_INGEST_PORT"""
    routes: frozenset[str] = frozenset({"track", "query"})
    """TALLY_INGEST_ROUTES: the route groups this process serves: ``track`` (beacons), ``query`` (reads), or both."""
    query: QuerySettings = field(default_factory=QuerySettings)
    workers: int = 1
    """TALLY_INGEST_WORKERS: processes serving the one port (uvicorn workers); each has its own producer."""
    log_level: str = "INFO"
    """TALLY_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR; logs are JSON lines on stderr."""
    access_log: bool = False
    """TALLY_INGEST_ACCESS_LOG: one log line per answer (method, path, status, duration; no query, no IP)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> IngestSettings:
        config = config_from(environ)
        publish = PublishSettings(
            delivery_timeout_ms=whole(config, "TALLY_PUBLISH_TIMEOUT_MS", PublishSettings.delivery_timeout_ms),
            max_block_ms=whole(config, "TALLY_PUBLISH_MAX_BLOCK_MS", PublishSettings.max_block_ms),
            linger_ms=whole(config, "TALLY_PUBLISH_LINGER_MS", PublishSettings.linger_ms, least=0),
            retry_after_s=whole(config, "TALLY_PUBLISH_RETRY_AFTER_S", PublishSettings.retry_after_s),
            max_in_flight=whole(config, "TALLY_PUBLISH_MAX_IN_FLIGHT", PublishSettings.max_in_flight),
            compression=one_of(config, "TALLY_PUBLISH_COMPRESSION", COMPRESSIONS, PublishSettings.compression),
            probe_every_ms=whole(config, "TALLY_PUBLISH_PROBE_EVERY_MS", PublishSettings.probe_every_ms, least=0),
        )
        return cls(
            kafka=KafkaSettings.from_config(config),
            clickhouse=ClickHouseSettings.from_config(config),
            publish=publish,
            limits=_limits(config),
            policy=Policy(
                drop_bots=config("TALLY_DROP_BOTS", cast=bool, default=Policy.drop_bots),
                label_allowlist=_allowlist(config, "TALLY_LABEL_ALLOWLIST"),
            ),
            cors_origins=tuple(config("TALLY_INGEST_CORS_ORIGINS", cast=CommaSeparatedStrings, default="*")),
            day_tz=zone(config, "TALLY_DAY_TZ", "UTC"),
            host=config("TALLY_INGEST_HOST", default=cls.host),
            port=whole(config, "TALLY_INGEST_PORT", cls.port),
            routes=_route_groups(config),
            query=QuerySettings.from_config(config),
            workers=whole(config, "TALLY_INGEST_WORKERS", cls.workers),
            log_level=log_level(config),
            access_log=config("TALLY_INGEST_ACCESS_LOG", cast=bool, default=cls.access_log),
        )


def _route_groups(config: Config) -> frozenset[str]:
    """TALLY_INGEST_ROUTES: which route groups this process serves (``track``, ``query``, or both)."""
    groups = frozenset(config("TALLY_INGEST_ROUTES", cast=CommaSeparatedStrings, default="track,query"))
    if not groups or not groups <= set(ROUTE_GROUPS):
        raise SettingError(
            f"TALLY_INGEST_ROUTES={','.join(sorted(groups))!r}: one or more of {', '.join(ROUTE_GROUPS)}"
        )
    return groups


def _limits(config: Config) -> Limits:
    """Every field of Limits from ``TALLY_<FIELD>``, each a whole number above 0."""
    defaults = Limits()
    values: dict[str, int] = {}
    for limit in fields(Limits):
        key = f"TALLY_{limit.name.upper()}"
        values[limit.name] = whole(config, key, getattr(defaults, limit.name))
    return Limits(**values)


def _allowlist(config: Config, key: str) -> tuple[str, ...]:
    """Label names, or glob patterns (``*``, ``?``, ``[...]``); a name that can never be a label is refused."""
    entries = tuple(config(key, cast=CommaSeparatedStrings, default=""))
    for entry in entries:
        if any(c in entry for c in "*?["):
            continue
        try:
            check_field("label", entry)
        except InvalidField as exc:
            raise SettingError(f"{key}: {entry!r} is not a label ({exc.rule})") from exc
    return entries
