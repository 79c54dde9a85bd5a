"""Operating ingest: what /metrics says after real answers, the access log, JSON logs, the settings.

Metrics are read the way Prometheus reads them: the text of ``GET /metrics``.
"""

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from pythonjsonlogger.json import JsonFormatter
from starlette.testclient import TestClient

from deploy.logs import dict_config
from ingest.app import create_app
from ingest.batches import Acks
from ingest.settings import IngestSettings
from schema.event import LabelEvent
from schema.settings import SettingError
from tests.support.browser import BROWSER
from tests.support.fakes import DEFAULTS, FakePublisher, running
from tests.support.metrics import scrape


def requests(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], route: str, method: str, status: int
) -> float:
    key = ("tally_ingest_requests_total", (("method", method), ("route", route), ("status", str(status))))
    return metrics.get(key, 0.0)


def test_metrics_count_answers_events_and_drops_by_reason() -> None:
    publisher = FakePublisher()
    with running(publisher) as client:
        assert client.get("/track/", params={"labels": "signup:forms:btn1|home"}, headers=BROWSER).status_code == 202
        assert (
            client.get("/track.gif", params={"labels": "home"}, headers={"user-agent": "Googlebot/2.1"}).status_code
            == 200
        )
        batch = {"events": [{"label": "ok"}, {"label": "bad label"}]}
        assert client.post("/track/", json=batch, headers=BROWSER).status_code == 202
        all_bad = {"events": [{"label": "bad label"}, {"label": "worse!"}]}
        assert client.post("/track/", json=all_bad, headers=BROWSER).status_code == 400
        assert client.get("/no/such/page").status_code == 404
        metrics = scrape(client)

    assert requests(metrics, "/track/", "GET", 202) == 1
    assert requests(metrics, "/track.gif", "GET", 200) == 1
    assert requests(metrics, "/track/", "POST", 202) == 1
    assert requests(metrics, "/track/", "POST", 400) == 1
    assert requests(metrics, "other", "GET", 404) == 1
    assert metrics[("tally_ingest_events_accepted_total", ())] == 3 == len(publisher.published)
    dropped = {reason: metrics[("tally_ingest_events_dropped_total", (("reason", reason),))] for reason in
               ("invalid", "bot", "not_allowed", "overflow")}  # fmt: skip
    assert dropped == {"invalid": 3, "bot": 1, "not_allowed": 0, "overflow": 0}
    assert metrics[("tally_ingest_publish_seconds_count", ())] == 2  # two requests published (the bot's did not)


def test_a_503_is_counted_with_its_cause() -> None:
    publisher = FakePublisher()
    publisher.down = True
    with running(publisher) as client:
        assert client.get("/track/", params={"labels": "signup"}).status_code == 503
        metrics = scrape(client)
    assert requests(metrics, "/track/", "GET", 503) == 1
    assert metrics[("tally_ingest_publish_failed_total", (("reason", "error"),))] == 1
    assert metrics[("tally_ingest_events_accepted_total", ())] == 0


class ProducerLike(FakePublisher):
    """A fake with the KafkaPublisher's figures."""

    in_flight = 42

    def stats(self) -> dict[str, float]:
        return {"record-queue-time-avg": 0.003, "record-queue-time-max": 0.02, "requests-in-flight": 2.0}


def test_the_producers_buffer_is_on_the_metrics_page() -> None:
    with running(ProducerLike()) as client:
        metrics = scrape(client)
    assert metrics[("tally_ingest_events_in_flight", ())] == 42
    assert metrics[("tally_ingest_producer_record_queue_seconds_avg", ())] == 0.003
    assert metrics[("tally_ingest_producer_record_queue_seconds_max", ())] == 0.02
    assert metrics[("tally_ingest_producer_requests_in_flight", ())] == 2


def test_each_app_counts_on_its_own_registry() -> None:
    with running(FakePublisher()) as first, running(FakePublisher()) as second:
        first.get("/track/", params={"labels": "a"})
        first.get("/track/", params={"labels": "a"})
        second.get("/track/", params={"labels": "a"})
        assert requests(scrape(first), "/track/", "GET", 202) == 2
        assert requests(scrape(second), "/track/", "GET", 202) == 1


def test_no_access_log_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ingest.access"), running(FakePublisher()) as client:
        client.get("/track/", params={"labels": "a"})
    assert [r for r in caplog.records if r.name == "ingest.access"] == []


def test_the_access_log_has_fields_and_no_query_nor_address(caplog: pytest.LogCaptureFixture) -> None:
    settings = IngestSettings(query=DEFAULTS.query, access_log=True)
    with caplog.at_level(logging.INFO, logger="ingest.access"), running(FakePublisher(), settings) as client:
        client.get("/track/", params={"labels": "secret_label"})
    (record,) = [r for r in caplog.records if r.name == "ingest.access"]
    fields = record.__dict__
    assert (fields["method"], fields["path"], fields["status"]) == ("GET", "/track/", 202)
    assert fields["duration_ms"] >= 0
    line = json.loads(JsonFormatter(**_json_formatter_options()).format(record))
    assert "secret_label" not in json.dumps(line) and "testclient" not in json.dumps(line)


def _json_formatter_options() -> dict[str, Any]:
    options = dict(dict_config()["formatters"]["json"])
    del options["()"]
    return options


def test_a_log_record_is_one_json_line_with_level_logger_message_and_extras() -> None:
    assert dict_config()["formatters"]["json"]["()"] == "pythonjsonlogger.json.JsonFormatter"
    record = logging.LogRecord("ingest.publish", logging.WARNING, __file__, 1, "Kafka %s", ("away",), None)
    record.__dict__["topic"] = "tally.events"
    text = JsonFormatter(**_json_formatter_options()).format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert {k: line[k] for k in ("level", "logger", "message", "topic")} == {
        "level": "WARNING",
        "logger": "ingest.publish",
        "message": "Kafka away",
        "topic": "tally.events",
    }
    assert line["time"].endswith("+00:00")


def test_libraries_are_quieter_than_the_service() -> None:
    loggers = dict_config("DEBUG")["loggers"]
    assert loggers["kafka"]["level"] == "WARNING"
    assert dict_config("ERROR")["loggers"]["kafka"]["level"] == "ERROR"


def test_operations_settings_from_the_environment() -> None:
    defaults = IngestSettings.from_env({})
    assert (defaults.workers, defaults.log_level, defaults.access_log) == (1, "INFO", False)
    assert defaults.publish.max_in_flight == 100_000
    assert defaults.publish.compression == "lz4"
    given = IngestSettings.from_env(
        {
            "TALLY_INGEST_WORKERS": "4",
            "TALLY_LOG_LEVEL": "warning",
            "TALLY_INGEST_ACCESS_LOG": "true",
            "TALLY_PUBLISH_COMPRESSION": "ZSTD",
        }
    )
    assert (given.workers, given.log_level, given.access_log) == (4, "WARNING", True)
    assert given.publish.compression == "zstd"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TALLY_INGEST_WORKERS", "0"),
        ("TALLY_LOG_LEVEL", "loud"),
        ("TALLY_PUBLISH_MAX_IN_FLIGHT", "-1"),
        ("TALLY_PUBLISH_PROBE_EVERY_MS", "-1"),
        ("TALLY_PUBLISH_COMPRESSION", "snappy"),
    ],
)
def test_bad_operations_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(SettingError, match=key):
        IngestSettings.from_env({key: value})


# -- the publisher's pieces, without a broker ------------------------------------------------------


@pytest.mark.parametrize("value_len", [20, 90, 300])
def test_records_written_into_a_batch_are_the_bytes_kafka_python_writes(value_len: int) -> None:
    from kafka.record.memory_records import MemoryRecordsBuilder

    from ingest.kafka_internals import write_records

    first_ts = 1_764_000_000_000
    records = [
        (first_ts + (n * 7919) % 120_000 - 60_000, key, b"v" * (value_len + n % 5))
        for n in range(1000)
        for key in [f"label{n % 37}:cat:btn{n % 5}".encode()]
    ]
    theirs, ours = (MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=16384) for _ in range(2))
    for builder in (theirs, ours):  # the first record starts the batch, as kafka-python's append does
        assert builder.append(records[0][0], records[0][1], records[0][2], None) is not None
    theirs_written = 1
    while theirs_written < len(records):
        ts_ms, key, value = records[theirs_written]
        if theirs.append(ts_ms, key, value, None) is None:
            break
        theirs_written += 1
    ours_written = 1
    while ours_written < len(records):  # several calls, as requests come
        written, _ = write_records(ours, records[: ours_written + 13], ours_written)
        if written == ours_written:
            break
        ours_written = written
    assert ours_written == theirs_written < len(records), "both fill the batch at the same record"
    theirs.close()
    ours.close()
    assert ours.buffer() == theirs.buffer()


def test_acks_wake_the_request_once_after_the_last_one_or_at_the_first_failure() -> None:
    async def settled_after_each(outcomes: Sequence[BaseException | None]) -> tuple[list[bool], object]:
        """Feed acks (None) or failures from another thread; whether the request was woken after each."""
        loop = asyncio.get_running_loop()
        acks = Acks(loop)
        acks.expect(len(outcomes))
        settled = []
        for outcome in outcomes:
            await loop.run_in_executor(None, acks.record_settled, "metadata" if outcome is None else outcome)
            await asyncio.sleep(0)  # let call_soon_threadsafe's callback run
            settled.append(acks.done.done())
        result = acks.done.exception() or "acked"
        acks.abandon()
        return settled, result

    assert asyncio.run(settled_after_each([None, None, None])) == ([False, False, True], "acked")
    failure = RuntimeError("NotEnoughReplicas")
    assert asyncio.run(settled_after_each([None, failure, None])) == ([False, True, True], failure)


def test_a_batch_that_kafka_refused_fails_every_request_waiting_on_it() -> None:
    from kafka.errors import NotEnoughReplicasError

    from ingest.batches import batch_settled

    async def outcome(result: object) -> list[object]:
        loop = asyncio.get_running_loop()
        waiters = [Acks(loop) for _ in range(3)]
        for acks in waiters:
            acks.expect(1)
        await loop.run_in_executor(None, batch_settled, waiters, result)
        await asyncio.sleep(0)
        found = [acks.done.exception() or "acked" for acks in waiters]
        for acks in waiters:
            acks.abandon()
        return found

    refused = NotEnoughReplicasError("2 of 3")
    assert asyncio.run(outcome((17, -1, None))) == ["acked"] * 3
    assert asyncio.run(outcome((-1, -1, lambda _index: refused))) == [refused] * 3


def test_a_request_still_waiting_at_its_deadline_times_out_and_the_others_do_not() -> None:
    from ingest.batches import Deadlines

    async def outcomes() -> list[object]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop, 0.05)
        waiting = [Acks(loop) for _ in range(4)]
        for acks in waiting:
            acks.expect(1)
            assert deadlines.add(acks)
        waiting[0].settle(None)  # acked in time
        waiting[2].settle(None)
        await asyncio.sleep(0.1)
        later = Acks(loop)  # a request after the sweep waits its own full time
        later.expect(1)
        deadlines.add(later)
        found = [type(acks.done.exception()).__name__ if acks.done.exception() else "acked" for acks in waiting]
        found.append("waiting" if not later.done.done() else "settled")
        later.abandon()
        return found

    assert asyncio.run(outcomes()) == ["acked", "TimeoutError", "acked", "TimeoutError", "waiting"]


def test_an_unexpected_error_on_a_beacon_route_is_a_plain_500_counted_as_such() -> None:
    class Broken(FakePublisher):
        async def publish(self, events: Sequence[LabelEvent]) -> None:
            raise RuntimeError("a bug")

    with TestClient(create_app(DEFAULTS, lambda _: Broken()), raise_server_exceptions=False) as client:
        answer = client.get("/track/", params={"labels": "signup"}, headers=BROWSER)
        assert (answer.status_code, answer.text) == (500, "Internal Server Error")
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        counted = scrape(client)[
            ("tally_ingest_requests_total", (("method", "GET"), ("route", "/track/"), ("status", "500")))
        ]
        assert counted == 1


def close_dropping_what_it_holds(publisher: Any) -> None:
    """Without a broker, records of a made-up topic (no leader) never expire, and close() would wait on them."""
    publisher._producer._accumulator.abort_incomplete_batches()
    publisher._producer.close(timeout=0)


@pytest.mark.parametrize("blocking", [False, True])
@pytest.mark.parametrize("topic_known", [False, True])
def test_a_503_says_whether_the_events_may_have_been_recorded(topic_known: bool, blocking: bool) -> None:
    """Unknown topic: the send gives up before any record is handed over. Known: records wait for acks in vain."""
    from ingest.errors import BrokerUnavailable
    from ingest.publish import KafkaPublisher, PublishSettings

    publisher = KafkaPublisher("127.0.0.1:1", "t", PublishSettings(delivery_timeout_ms=700))
    if topic_known:  # as if a broker had told the producer where the topic's partitions are, then left
        publisher._producer._metadata._partitions["t"] = dict.fromkeys(range(6))
    events = [LabelEvent("a", "", "", 1), LabelEvent("b", "", "", 1)]
    try:
        with pytest.raises(BrokerUnavailable) as refused:
            if blocking:  # the Tracker's way
                publisher.publish_blocking(events)
            else:
                asyncio.run(publisher.publish(events))
        assert refused.value.maybe_recorded is topic_known
        assert refused.value.body()["recorded"] == ("unknown" if topic_known else "none")
        assert (publisher.outage.since is not None) is topic_known, "Kafka failing: it was handed events, no ack"
    finally:
        close_dropping_what_it_holds(publisher)


def test_while_kafka_fails_requests_are_refused_at_once_but_a_probe_a_second() -> None:
    from ingest.errors import BrokerUnavailable
    from ingest.publish import KafkaPublisher, Outage, PublishSettings

    publisher = KafkaPublisher("127.0.0.1:1", "t", PublishSettings(delivery_timeout_ms=700, probe_every_ms=1000))
    now = [100.0]
    publisher.outage = Outage(1.0, clock=lambda: now[0])
    publisher._producer._metadata._partitions["t"] = dict.fromkeys(range(6))
    events = [LabelEvent("a", "", "", 1)]

    def refusal() -> BrokerUnavailable:
        with pytest.raises(BrokerUnavailable) as refused:
            asyncio.run(publisher.publish(events))
        return refused.value

    try:
        assert refusal().cause == "timeout"  # handed over, never acked: Kafka is failing from now on
        assert publisher.outage.since == 100.0
        for _ in range(3):  # at once, nothing handed over: nothing recorded
            fast = refusal()
            assert (fast.cause, fast.recorded, publisher.in_flight) == ("down", "none", 0)
            assert "has not acknowledged for" in str(fast)
        with pytest.raises(BrokerUnavailable, match="nothing was sent"):
            publisher.publish_blocking(events)
        now[0] = 101.0  # a second later, one request goes through, and fails as Kafka is still away
        assert refusal().cause == "timeout"
        assert refusal().cause == "down"
        publisher.outage.acknowledged()  # a request acknowledged: Kafka is back, nobody is refused any more
        assert publisher.outage.admits() and publisher.outage.admits()
        without = Outage(0.0, clock=lambda: now[0])  # TALLY_PUBLISH_PROBE_EVERY_MS=0: every request waits for Kafka
        without.failed()
        assert without.admits() and without.admits()
    finally:
        close_dropping_what_it_holds(publisher)


def test_a_full_buffer_is_a_503_at_once() -> None:
    from ingest.errors import BrokerUnavailable
    from ingest.publish import KafkaPublisher, PublishSettings

    publisher = KafkaPublisher("127.0.0.1:1", "t", PublishSettings(max_in_flight=2))
    try:
        publisher.in_flight = 1
        with pytest.raises(BrokerUnavailable, match="more than 2 events waiting") as refused:
            asyncio.run(publisher.publish([LabelEvent("a", "", "", 1), LabelEvent("b", "", "", 1)]))
        assert refused.value.cause == "full"
        assert refused.value.headers()["X-Tally-Recorded"] == refused.value.body()["recorded"] == "none"
    finally:
        publisher._producer.close(timeout=0)
