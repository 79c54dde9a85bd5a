"""Schemathesis against the live app (a real ``tally ingest`` serving the query routes on real ClickHouse).

It generates requests from the app's own OpenAPI document, valid and invalid
ones, with and without the token, and checks every answer: never a 5xx, and
status, content type, headers and body as documented. Not checked: that every
schema-valid request is accepted, since some rules span two parameters (``from``
on or before ``to``, the longest range) and are refused with a 400 by design.
"""

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aggregator.write import ClickHouseWriter, RollupRow
from tests.support.servers import Services

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

MAX_QUERY_BYTES = 16_384
EXAMPLES = 60
"""Per operation and mode: 600 requests in all."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture
def live_api(services: Services) -> schemathesis.BaseSchema:
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
    services.start_ingest(TALLY_INGEST_ROUTES="query", TALLY_API_PUBLIC_GET_STATS="false")
    schema = schemathesis.openapi.from_url(f"{services.ingest_url}/api/v1/openapi.json")
    schema.config.update(base_url=services.ingest_url, headers={"Authorization": f"Bearer {services.read_token}"})
    return schema


# schemathesis.pytest.from_fixture reads a pytest-private attribute that pytest 9 no
# longer has; hypothesis drives each operation's strategies directly instead.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_the_live_api_never_answers_5xx_and_keeps_its_document(
    live_api: schemathesis.BaseSchema, services: Services, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in live_api.get_all_operations()]
    assert {op.path for op in operations} == {
        "/api/v1/counts",
        "/api/v1/top",
        "/api/v1/labels",
        "/api/v1/categories",
        "/get_stats/",
    }
    statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), database=None
        )
        def call(case: schemathesis.Case) -> None:
            # A request line past uvicorn's limit is refused by uvicorn itself (a text/plain 400), not by the app.
            hypothesis.assume(len(urlencode(case.query or {}, doseq=True)) <= MAX_QUERY_BYTES)
            statuses[case.operation.path][case.call_and_validate(checks=CHECKS).status_code] += 1

        call()
    # The token was sent and the checks saw real answers: valid requests counted, invalid ones refused.
    expected = 200 if mode == GenerationMode.POSITIVE else 400
    assert all(answers[expected] > 0 for answers in statuses.values()), statuses
