"""The ingest service's settings: one frozen object, read once at startup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ingest.publish import PublishSettings
from ingest.validate import Limits
from schema.settings import ClickHouseSettings, KafkaSettings, config_from, zone


@dataclass(frozen=True)
class IngestSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    limits: Limits = field(default_factory=Limits)
    day_tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    """TALLY_DAY_TZ: where a day starts and ends, for 'today' in queries."""
    host: str = "127.0.0.1"
    """TALLY_INGEST_HOST"""
    port: int = 8000
    """TALLY_INGEST_PORT"""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> IngestSettings:
        config = config_from(environ)
        publish = PublishSettings(
            delivery_timeout_ms=config(
                "TALLY_PUBLISH_TIMEOUT_MS", cast=int, default=PublishSettings.delivery_timeout_ms
            ),
            max_block_ms=config("TALLY_PUBLISH_MAX_BLOCK_MS", cast=int, default=PublishSettings.max_block_ms),
            linger_ms=config("TALLY_PUBLISH_LINGER_MS", cast=int, default=PublishSettings.linger_ms),
            retry_after_s=config("TALLY_RETRY_AFTER_S", cast=int, default=PublishSettings.retry_after_s),
        )
        limits = Limits(
            max_labels_per_request=config(
                "TALLY_MAX_LABELS_PER_REQUEST", cast=int, default=Limits.max_labels_per_request
            ),
            max_query_string=config("TALLY_MAX_QUERY_STRING", cast=int, default=Limits.max_query_string),
        )
        return cls(
            kafka=KafkaSettings.from_config(config),
            clickhouse=ClickHouseSettings.from_config(config),
            publish=publish,
            limits=limits,
            day_tz=zone(config, "TALLY_DAY_TZ", "UTC"),
            host=config("TALLY_INGEST_HOST", default=cls.host),
            port=config("TALLY_INGEST_PORT", cast=int, default=cls.port),
        )
