"""Settings: documented defaults, and malformed values named at startup."""

import pytest

from aggregator.settings import WorkerSettings
from ingest.settings import IngestSettings
from schema.settings import SettingError


def test_defaults_point_at_the_local_stack() -> None:
    settings = IngestSettings.from_env({})
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.kafka.topic == "tally.events"
    assert settings.clickhouse.database == "tally"
    assert WorkerSettings.from_env({}).partitions == 6


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TALLY_CLICKHOUSE_PORT": "ninety"}, "TALLY_CLICKHOUSE_PORT"),
        ({"TALLY_CLICKHOUSE_DATABASE": "x; DROP TABLE y"}, "TALLY_CLICKHOUSE_DATABASE"),
        ({"TALLY_DAY_TZ": "Mars/Olympus"}, "TALLY_DAY_TZ"),
        ({"TALLY_WORKER_FLUSH_INTERVAL_S": "0"}, "TALLY_WORKER_FLUSH_INTERVAL_S"),
        ({"TALLY_WORKER_STORE": "redis://"}, "TALLY_WORKER_STORE"),
    ],
)
def test_malformed_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises((SettingError, ValueError), match=key):
        WorkerSettings.from_env(env)


def test_password_is_never_printed() -> None:
    settings = IngestSettings.from_env({"TALLY_CLICKHOUSE_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(settings)
