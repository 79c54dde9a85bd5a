"""The worker's settings: one frozen object, read once at startup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from schema.settings import (
    ClickHouseSettings,
    KafkaSettings,
    SettingError,
    config_from,
    log_level,
    positive,
    whole,
    zone,
)


@dataclass(frozen=True)
class WorkerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    day_tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    """TALLY_DAY_TZ: where a day starts and ends (IANA name)."""
    app_id: str = "tally-aggregator"
    """TALLY_WORKER_APP_ID: the consumer group, and the prefix of the table's changelog topic."""
    store: str = "memory://"
    """TALLY_WORKER_STORE: memory:// or rocksdb:// (needs the rocksdict package)."""
    data_dir: str = "tally-worker-state"
    """TALLY_WORKER_DATA_DIR: where Faust keeps the worker's local state (the RocksDB store), relative to the
    working directory unless absolute (docker-compose.yml and deploy/k8s set /data/worker; the local stack gives
    each worker its own)."""
    batch_max: int = 50_000
    """TALLY_WORKER_BATCH_MAX: events counted per batch at most."""
    batch_within_s: float = 1.0
    """TALLY_WORKER_BATCH_WITHIN_S: how long to wait to fill a batch."""
    flush_interval_s: float = 1.0
    """TALLY_WORKER_FLUSH_INTERVAL_S: how often changed counts are written to ClickHouse."""
    session_timeout_s: float = 10.0
    """TALLY_WORKER_SESSION_TIMEOUT_S: how soon a worker that died (kill -9) is noticed and its partitions move."""
    window_days: int = 3
    """TALLY_WORKER_WINDOW_DAYS: how many days (today included) a day's window stays open.
    Events for older days are refused as late (metric + log; replay recovers them)."""
    dedupe_window_s: int = 3600
    """TALLY_DEDUPE_WINDOW_S: how long, in record time, each partition holds the idempotency keys it counted:
    a repeat of a keyed request within it is dropped, a repeat after it counts again (aggregator.dedupe)."""
    standby_replicas: int = 1
    """TALLY_WORKER_STANDBY_REPLICAS: workers keeping a warm copy of each partition's table."""
    web_host: str = "127.0.0.1"
    """TALLY_WORKER_WEB_HOST: where /metrics, /healthz and /readyz listen."""
    web_port: int = 6066
    """TALLY_WORKER_WEB_PORT (``tally worker --id N`` defaults it to 6065 + N)."""
    log_level: str = "INFO"
    """TALLY_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL; logs are JSON lines on stderr."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerSettings:
        config = config_from(environ)
        store = config("TALLY_WORKER_STORE", default=cls.store)
        if store.split(":", 1)[0] not in ("memory", "rocksdb"):
            raise SettingError(f"TALLY_WORKER_STORE={store!r} must be memory:// or rocksdb://")
        return cls(
            kafka=KafkaSettings.from_config(config),
            clickhouse=ClickHouseSettings.from_config(config),
            day_tz=zone(config, "TALLY_DAY_TZ", "UTC"),
            app_id=config("TALLY_WORKER_APP_ID", default=cls.app_id),
            store=store,
            data_dir=config("TALLY_WORKER_DATA_DIR", default=cls.data_dir),
            batch_max=whole(config, "TALLY_WORKER_BATCH_MAX", cls.batch_max),
            batch_within_s=positive(config, "TALLY_WORKER_BATCH_WITHIN_S", cls.batch_within_s),
            flush_interval_s=positive(config, "TALLY_WORKER_FLUSH_INTERVAL_S", cls.flush_interval_s),
            session_timeout_s=positive(config, "TALLY_WORKER_SESSION_TIMEOUT_S", cls.session_timeout_s),
            window_days=whole(config, "TALLY_WORKER_WINDOW_DAYS", cls.window_days),
            dedupe_window_s=whole(config, "TALLY_DEDUPE_WINDOW_S", cls.dedupe_window_s),
            standby_replicas=whole(config, "TALLY_WORKER_STANDBY_REPLICAS", cls.standby_replicas, least=0),
            web_host=config("TALLY_WORKER_WEB_HOST", default=cls.web_host),
            web_port=whole(config, "TALLY_WORKER_WEB_PORT", cls.web_port),
            log_level=log_level(config),
        )
