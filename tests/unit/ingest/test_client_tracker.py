"""The backend client, the seed's way, on a fake publisher: same rules, same answers as HTTP."""

import asyncio

import pytest

from ingest.client import AsyncTracker, BrokerUnavailable, InvalidBeacon, Tracker
from ingest.guard import OVERFLOW_LABEL
from ingest.settings import IngestSettings
from ingest.validate import Limits
from tests.support.fakes import FakePublisher


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
        Tracker(IngestSettings(), publisher).incr_labels("signup")
    assert caught.value.recorded == "unknown"


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
