"""The backend client, the seed's way, on a fake publisher: same rules, same answers as HTTP."""

import asyncio
import itertools
import re
import time
from collections.abc import Sequence

import pytest

from ingest.client import AsyncTracker, BrokerUnavailable, InvalidBeacon, Retries, Tracker
from ingest.guard import OVERFLOW_LABEL
from ingest.settings import IngestSettings
from ingest.validate import Limits
from schema.event import LabelEvent
from tests.support.fakes import FakePublisher

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FAST = Retries(retry_for_s=5, backoff_s=0.01)


class Flaky(FakePublisher):
    """Kafka that does not confirm the first ``failures`` sends (``recorded``: unknown), then takes them."""

    def __init__(self, failures: int, retry_after_s: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.retry_after_s = retry_after_s
        self.sends: list[tuple[tuple[LabelEvent, ...], str | None, float]] = []

    def publish_blocking(self, events: Sequence[LabelEvent], key: str | None = None) -> None:
        self.sends.append((tuple(events), key, time.monotonic()))
        if len(self.sends) <= self.failures:
            raise BrokerUnavailable("Kafka did not acknowledge in time", self.retry_after_s, "timeout")
        super().publish_blocking(events, key)


def test_incr_labels_publishes_each_label_and_says_what_was_accepted() -> None:
    publisher = FakePublisher()
    tracker = Tracker(IngestSettings(), publisher)
    outcome = tracker.incr_labels("user_connected|user_clicked_button:forms:btn1")
    assert outcome.accepted == 2
    assert publisher.fields() == [("user_connected", "", ""), ("user_clicked_button", "forms", "btn1")]


def test_a_bad_label_raises_naming_it_and_nothing_is_published() -> None:
    publisher = FakePublisher()
    with pytest.raises(InvalidBeacon) as caught:
        Tracker(IngestSettings(), publisher).incr_labels("ok|bad!")
    assert caught.value.field == "labels[1].label"
    assert publisher.published == []


def test_kafka_down_raises_broker_unavailable() -> None:
    publisher = FakePublisher()
    publisher.down = True
    with pytest.raises(BrokerUnavailable, match="may have been recorded") as caught:
        Tracker(IngestSettings(), publisher, Retries(retry_for_s=0)).incr_labels("signup")
    assert caught.value.recorded == "unknown"


def test_each_call_has_a_key_of_its_own_and_sends_again_under_it_until_kafka_confirms() -> None:
    publisher = Flaky(failures=3)
    tracker = Tracker(IngestSettings(), publisher, FAST)
    outcome = tracker.incr_labels("signup:forms:btn1|home")
    assert outcome.accepted == 2
    assert len(publisher.sends) == 4
    events, key, _ = publisher.sends[0]
    assert key is not None and UUID.fullmatch(key)
    assert all(send[:2] == (events, key) for send in publisher.sends)  # the same request: same events and times
    assert publisher.fields() == [("signup", "forms", "btn1"), ("home", "", "")]  # taken once, by the fourth

    tracker.incr_labels("home")
    assert publisher.keys[-1] != key  # another call, another key


def test_the_callers_key_names_the_call_and_a_bad_one_is_refused_naming_it() -> None:
    publisher = FakePublisher()
    tracker = Tracker(IngestSettings(), publisher)
    tracker.incr_labels("signup", idempotency_key="order-1234_signup")
    assert publisher.keys == ["order-1234_signup"]
    for bad, rule in (("", "1 to 64"), ("x" * 65, "at most 64"), ("a b", "only letters")):
        with pytest.raises(InvalidBeacon, match=rule) as caught:
            tracker.incr_labels("signup", idempotency_key=bad)
        assert caught.value.field == "idempotency_key"
    assert publisher.keys == ["order-1234_signup"]


def test_sends_again_no_earlier_than_retry_after_and_gives_up_within_retry_for() -> None:
    publisher = Flaky(failures=2, retry_after_s=1)
    Tracker(IngestSettings(), publisher, Retries(retry_for_s=5, backoff_s=0.01)).incr_labels("signup")
    times = [at for _, _, at in publisher.sends]
    assert len(times) == 3 and all(later - earlier >= 1 for earlier, later in itertools.pairwise(times))

    publisher = Flaky(failures=100)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        Tracker(IngestSettings(), publisher, Retries(retry_for_s=0.5, backoff_s=0.05)).incr_labels("signup")
    assert time.monotonic() - started < 1.5  # no send starts past retry_for_s
    assert caught.value.recorded == "unknown"  # the last refusal, as it was
    assert 3 <= len(publisher.sends) <= 5  # 0.05, 0.1, 0.2 s (with jitter) ... until the next would pass 0.5 s
    assert len({key for _, key, _ in publisher.sends}) == 1


def test_the_cardinality_guard_applies_to_backend_code_too() -> None:
    publisher = FakePublisher()
    settings = IngestSettings.from_env({"TALLY_LABEL_ALLOWLIST": "signup*", "TALLY_MAX_NEW_LABELS_PER_DAY": "1"})
    outcome = Tracker(settings, publisher).incr_labels("signup|junk|signup_other")
    assert [d.reason.value for d in outcome.drops] == ["not_allowed", "overflow"]
    assert [e.label for e in publisher.published] == ["signup", OVERFLOW_LABEL]


def test_async_tracker_from_async_code() -> None:
    publisher = FakePublisher()

    async def count() -> int:
        async with AsyncTracker(IngestSettings(limits=Limits(max_labels_per_request=2)), publisher) as tracker:
            outcome = await tracker.incr_labels("a|b")
            with pytest.raises(InvalidBeacon, match="at most 2 labels"):
                await tracker.incr_labels("a|b|c")
            return outcome.accepted

    assert asyncio.run(count()) == 2
    assert publisher.fields() == [("a", "", ""), ("b", "", "")]


def test_async_tracker_sends_again_under_the_same_key() -> None:
    publisher = Flaky(failures=2)

    async def count() -> None:
        async with AsyncTracker(IngestSettings(), publisher, FAST) as tracker:
            await tracker.incr_labels("a|b", idempotency_key="job-7")

    asyncio.run(count())
    assert [key for _, key, _ in publisher.sends] == ["job-7"] * 3
    assert publisher.fields() == [("a", "", ""), ("b", "", "")]
