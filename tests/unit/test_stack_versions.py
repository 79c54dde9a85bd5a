"""The local stack's version pairs: what each setting selects, and the fence around chdb's private server call."""

import importlib
import importlib.metadata
from pathlib import Path

import pytest

from schema.settings import SettingError
from stack import clickhouse_current
from stack.clickhouse import ClickHouseServer
from stack.clickhouse_current import CurrentClickHouseServer
from stack.stack import Stack, StackSettings


def test_the_default_pair_is_kafka_3_and_clickhouse_18(tmp_path: Path) -> None:
    stack = Stack(StackSettings.from_env({"TALLY_STACK_DIR": str(tmp_path)}))
    assert stack.kafka.version() == "3.9.2"
    assert stack.kafka.home == tmp_path / "kafka"
    assert isinstance(stack.clickhouse, ClickHouseServer)
    assert stack.clickhouse.home == tmp_path / "clickhouse"


def test_the_current_pair_is_kafka_4_and_clickhouse_26_each_in_a_folder_of_its_own(tmp_path: Path) -> None:
    stack = Stack(StackSettings.from_env({"TALLY_STACK_DIR": str(tmp_path), "TALLY_STACK_VERSIONS": "current"}))
    assert stack.kafka.version() == "4.4.0"
    assert stack.kafka.home == tmp_path / "kafka-4.4.0"
    assert stack.kafka.process.name == "kafka-4.4.0"
    assert stack.kafka.release.config_tool == "org.apache.kafka.tools.ConfigCommand"
    assert isinstance(stack.clickhouse, CurrentClickHouseServer)
    assert stack.clickhouse.process.name == "clickhouse-26.9"


def test_one_version_can_be_set_apart_from_the_pair() -> None:
    settings = StackSettings.from_env({"TALLY_STACK_VERSIONS": "current", "TALLY_STACK_KAFKA_VERSION": "3.9.2"})
    assert (settings.kafka_version, settings.clickhouse_version) == ("3.9.2", "26.9")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TALLY_STACK_VERSIONS", "newest"),
        ("TALLY_STACK_KAFKA_VERSION", "4.0.0"),
        ("TALLY_STACK_CLICKHOUSE_VERSION", "25"),
    ],
)
def test_an_unknown_version_is_refused_naming_the_setting(key: str, value: str) -> None:
    with pytest.raises(SettingError, match=key):
        StackSettings.from_env({key: value})


def test_chdb_core_is_the_version_its_server_is_proved_with() -> None:
    for name, proved in clickhouse_current.PROVED.items():
        assert importlib.metadata.version(name) == proved
    clickhouse_current.check_version()


def test_another_chdb_core_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clickhouse_current, "PROVED", {"chdb-core": "0.0.1"})
    with pytest.raises(clickhouse_current.UnprovedVersion, match="chdb-core"):
        clickhouse_current.check_version()


def test_the_private_call_the_server_needs_is_there() -> None:
    assert callable(importlib.import_module("chdb._chdb").query)
