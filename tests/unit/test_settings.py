"""Settings: documented defaults, and malformed values named at startup."""

import ast
import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.config import Config

from aggregator.settings import WorkerSettings
from ingest.settings import IngestSettings
from schema.settings import RENAMED, SettingError
from stack.stack import StackSettings
from tests.support.paths import ROOT


def test_defaults_point_at_the_local_stack() -> None:
    settings = IngestSettings.from_env({})
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.kafka.topic == "tally.events"
    assert settings.clickhouse.database == "tally"
    assert WorkerSettings.from_env({}).kafka.partitions == 6


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


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_an_old_name_refuses_to_start_naming_the_new_one(old: str, new: str) -> None:
    for service in (IngestSettings, WorkerSettings):
        with pytest.raises(SettingError, match=f"{old} is not read any more: set {new}"):
            service.from_env({old: "1"})


DOC = ROOT / "docs" / "settings.md"
SHIPPED_AND_DEV = ("schema", "ingest", "query", "aggregator", "deploy", "stack")


def documented() -> dict[str, str]:
    """docs/settings.md's table: variable -> the services that read it (its third column)."""
    rows = re.findall(r"^\| `(TALLY_[A-Z0-9_]+)` \| [^|]* \| ([^|]+) \|", DOC.read_text(), re.M)
    return {name: readers.strip() for name, readers in rows}


def read_by(load: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The TALLY_ variables a settings loader asks for (starlette's Config is the one way they are read)."""
    asked: set[str] = set()
    real_get = Config.get

    def get(self: Config, key: str, *args: Any, **kwargs: Any) -> Any:
        asked.add(key)
        return real_get(self, key, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Config, "get", get)
        load()
    return {key for key in asked if key.startswith("TALLY_")}


def literals() -> dict[str, set[str]]:
    """Every TALLY_ name written in the code, by the file it is written in (RENAMED's old names aside)."""
    root = DOC.parents[1]
    found: dict[str, set[str]] = {}
    for package in SHIPPED_AND_DEV:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    for name in re.findall(r"\bTALLY_[A-Z0-9_]*[A-Z0-9]\b", node.value):
                        found.setdefault(name, set()).add(str(path.relative_to(root)))
    for old in RENAMED:
        found.pop(old, None)
    return found


def test_every_variable_the_code_reads_is_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    table = documented()
    services = {
        "ingest": lambda: IngestSettings.from_env({}),
        "worker": lambda: WorkerSettings.from_env({}),
        "local stack": lambda: StackSettings.from_env({}),
    }
    for service, load in services.items():
        for name in sorted(read_by(load, monkeypatch)):
            assert name in table, f"{service} reads {name}: add it to docs/settings.md"
            assert service in table[name], f"{name}: docs/settings.md should say that the {service} reads it"
    for name, places in literals().items():
        assert name in table, f"{', '.join(sorted(places))} names {name}: add it to docs/settings.md"


def test_every_variable_in_the_table_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    read = set(literals())
    for load in (lambda: IngestSettings.from_env({}), lambda: WorkerSettings.from_env({})):
        read |= read_by(load, monkeypatch)
    for name, readers in documented().items():
        assert name in read or "Grafana" in readers, f"docs/settings.md lists {name}, which nothing reads"
