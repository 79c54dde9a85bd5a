"""Schemathesis against the live app (a real ``tally ingest`` serving the query routes on real ClickHouse).

What ``schemathesis run --checks all`` does from the repository (the
repository's ``schemathesis.toml``, every check, its coverage and fuzzing
phases), through Schemathesis's own engine, in both ways a server may serve
``/get_stats/``: with a read token, and public. It generates requests from the
app's own OpenAPI document, valid and invalid ones, with and without the
token, and checks every answer: never a 5xx; status, content type, headers and
body as documented; every request the document allows accepted, every one it
does not allow refused; a token asked for exactly where the document says.

Two rules span two parameters (``from`` on or before ``to``, the longest
range), which OpenAPI cannot state, so ``schemathesis.toml`` lets those
operations answer schema-valid data with a 400. This test holds the stricter
line with a check of its own: a schema-valid request is refused only when its
dates break one of those two rules, and the refusal says so.
"""

import os
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from aggregator.write import ClickHouseWriter, RollupRow
from query.settings import QuerySettings
from tests.support.servers import Services

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = 25
"""Per operation in the fuzzing phase (the CLI's default is 100); the coverage phase runs whole."""
RANGE_RULES = ("on or before to", "a range of at most")
ANSWERED: Counter[tuple[str, str, int]] = Counter()
"""(operation, generation mode, status) of every answer checked: proof that the checks saw real answers."""


@schemathesis.check
def answered(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """Not a rule: counts the answers, so the test can tell that valid requests were served and invalid refused."""
    if case.meta is not None:
        ANSWERED[(case.operation.label, case.meta.generation.mode.value, response.status_code)] += 1
    return None


@schemathesis.check
def refused_only_for_a_range_rule(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """A schema-valid request answered 400 broke a rule that spans ``from`` and ``to``, and the answer says which."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 400:
        return None
    refusal = response.json()
    assert refusal["field"] == "from" and refusal["rule"].startswith(RANGE_RULES), refusal
    query = case.query or {}
    today = datetime.now(UTC).date()
    end = date.fromisoformat(query["to"]) if "to" in query else today
    start = date.fromisoformat(query["from"]) if "from" in query else end - timedelta(days=6)
    assert start > end or (end - start).days >= QuerySettings.max_days, (query, refusal)
    return None


@pytest.fixture
def counts_written(services: Services) -> None:
    today = datetime.now(UTC).date()
    written = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    writer = ClickHouseWriter(services.clickhouse)
    writer.write(
        [
            RollupRow(today - timedelta(days=i), None, label, "forms", f"{label}-{i % 3}", 10 + i, 1, written)
            for i in range(30)
            for label in ("signup", "home", "buy")
        ]
    )
    writer.close()


def run_checks_all(services: Services) -> set[str]:
    """``schemathesis run --checks all`` with the repository's configuration; fails naming each failed check."""
    config = SchemathesisConfig.from_path(ROOT / "schemathesis.toml")
    config.projects.override.checks.update(included_check_names=["all"])
    # In CI the same examples every time, as the suite's other property-based tests (tests/conftest.py).
    config.projects.override.generation.update(max_examples=EXAMPLES, deterministic=os.environ.get("CI") == "true")
    schema = schemathesis.openapi.from_url(f"{services.ingest_url}/api/v1/openapi.json", config=config)
    schema.config.update(base_url=services.ingest_url, headers={"Authorization": f"Bearer {services.read_token}"})
    failures: dict[str, list[str]] = {}
    tested: set[str] = set()
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.NonFatalError | events.FatalError):
            failures.setdefault("errors", []).append(repr(event))
        if not isinstance(event, events.ScenarioFinished):
            continue
        if event.status == Status.SUCCESS:
            tested.add(event.recorder.label)
        elif event.status in (Status.FAILURE, Status.ERROR):
            failures.setdefault(event.recorder.label, []).extend(
                f"{check.name}: {check.failure_info.failure.title if check.failure_info else check.status}"
                for checks in event.recorder.checks.values()
                for check in checks
                if check.status != Status.SUCCESS
            )
    assert not failures, failures
    return tested


@pytest.mark.parametrize("public_get_stats", ["false", "true"], ids=["token", "public"])
def test_checks_all_report_nothing_against_the_live_api(
    counts_written: None, services: Services, public_get_stats: str
) -> None:
    services.start_ingest(TALLY_INGEST_ROUTES="query", TALLY_API_PUBLIC_GET_STATS=public_get_stats)
    ANSWERED.clear()
    operations = {"GET /api/v1/counts", "GET /api/v1/top", "GET /api/v1/labels", "GET /api/v1/categories"}
    operations.add("GET /get_stats/")
    assert run_checks_all(services) == operations
    # The token was sent and the checks saw real answers: valid requests served, invalid ones refused.
    for operation in operations:
        assert ANSWERED[(operation, "positive", 200)] > 0, (operation, ANSWERED)
        assert ANSWERED[(operation, "negative", 400)] > 0, (operation, ANSWERED)
