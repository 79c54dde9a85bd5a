"""Input rules beyond the field syntax: client timestamps, bots, the allow-list, the daily cap, settings."""

import time
from collections.abc import Iterator
from datetime import date

import pytest
from starlette.testclient import TestClient

from ingest.guard import OVERFLOW_LABEL, Guard, Policy, is_bot
from ingest.outcome import Outcome
from ingest.settings import IngestSettings
from ingest.validate import Limits
from schema.event import LabelEvent
from schema.settings import SettingError
from tests.support.fakes import FakePublisher, running

HOUR_MS = 3_600_000
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher: FakePublisher) -> Iterator[TestClient]:
    with running(publisher) as client:
        yield client


# -- client timestamps ------------------------------------------------------------


def test_client_ts_within_bounds_is_kept(publisher: FakePublisher, client: TestClient) -> None:
    ts = now_ms() - 2 * HOUR_MS
    response = client.post("/track/", json={"events": [{"label": "a", "ts": ts}, {"label": "b", "ts": ts + 0.7}]})
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert [e.ts_ms for e in publisher.published] == [ts, ts]


@pytest.mark.parametrize("offset_ms", [-25 * HOUR_MS, 10 * 60_000, -(10**15)], ids=["too old", "ahead", "negative"])
def test_client_ts_out_of_bounds_is_replaced_by_server_time(
    publisher: FakePublisher, client: TestClient, offset_ms: int
) -> None:
    before = now_ms()
    response = client.post("/track/", json=[{"label": "a", "ts": before + offset_ms}, {"label": "b"}])
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "restamped": 1}
    assert all(before <= e.ts_ms <= now_ms() for e in publisher.published)


def test_client_ts_bounds_are_settings(publisher: FakePublisher) -> None:
    settings = IngestSettings.from_env({"TALLY_MAX_CLIENT_TS_PAST_S": "60"})
    with running(publisher, settings) as client:
        response = client.post("/track/", json={"label": "a", "ts": now_ms() - 120_000})
    assert response.json()["restamped"] == 1


def test_events_without_ts_get_server_time(client: TestClient, publisher: FakePublisher) -> None:
    before = now_ms()
    client.get("/track/", params={"labels": "a"})
    assert before <= publisher.published[0].ts_ms <= now_ms()


# -- bots -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_agent",
    [
        GOOGLEBOT,
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; "
        "PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
        "DuckDuckBot-Https/1.1",
    ],
)
def test_well_known_bots_are_recognised(user_agent: str) -> None:
    assert is_bot(user_agent)


@pytest.mark.parametrize(
    "user_agent",
    [
        FIREFOX,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 10; CUBOT P40) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile",
        "curl/8.5.0",
        "python-requests/2.32.3",
        None,
        "",
    ],
)
def test_browsers_phones_and_scripts_are_not_bots(user_agent: str | None) -> None:
    assert not is_bot(user_agent)


def test_bot_beacons_are_answered_2xx_and_dropped(client: TestClient, publisher: FakePublisher) -> None:
    headers = {"user-agent": GOOGLEBOT}
    answers = [
        client.get("/track/", params={"labels": "a|b"}, headers=headers),
        client.post("/track/", json={"events": [{"label": "a"}, {"label": "b!"}]}, headers=headers),
        client.get("/track.gif", params={"labels": "a"}, headers=headers),
    ]
    assert [r.status_code for r in answers] == [202, 202, 200]
    assert [r.headers["x-tally-dropped"] for r in answers] == ["2", "2", "1"]
    assert answers[0].json() == {
        "accepted": 0,
        "dropped": [{"index": 0, "reason": "bot"}, {"index": 1, "reason": "bot"}],
    }
    assert [d["reason"] for d in answers[1].json()["dropped"]] == ["bot", "invalid"]
    assert publisher.published == []


def test_bot_dropping_can_be_turned_off(publisher: FakePublisher) -> None:
    with running(publisher, IngestSettings.from_env({"TALLY_DROP_BOTS": "false"})) as client:
        response = client.get("/track/", params={"labels": "a"}, headers={"user-agent": GOOGLEBOT})
    assert response.json() == {"accepted": 1}
    assert publisher.fields() == [("a", "", "")]


# -- the allow-list ------------------------------------------------------------------


def test_labels_off_the_allow_list_are_dropped_and_the_rest_published(publisher: FakePublisher) -> None:
    settings = IngestSettings.from_env({"TALLY_LABEL_ALLOWLIST": "home,signup_*,checkout/step?"})
    with running(publisher, settings) as client:
        response = client.get("/track/", params={"labels": "home|signup_form:f:b|homepage|checkout/step2|junk"})
    assert response.status_code == 202
    assert response.headers["x-tally-dropped"] == "2"
    assert response.json()["accepted"] == 3
    assert [(d["index"], d["reason"]) for d in response.json()["dropped"]] == [(2, "not_allowed"), (4, "not_allowed")]
    assert [f[0] for f in publisher.fields()] == ["home", "signup_form", "checkout/step2"]


def test_without_an_allow_list_any_valid_label_is_counted(client: TestClient, publisher: FakePublisher) -> None:
    assert client.get("/track/", params={"labels": "whatever_label"}).json() == {"accepted": 1}


# -- the daily cap of new labels -----------------------------------------------------------


def test_new_labels_past_the_daily_cap_are_counted_as_overflow(publisher: FakePublisher) -> None:
    with running(publisher, IngestSettings(limits=Limits(max_new_labels_per_day=2))) as client:
        first = client.get("/track/", params={"labels": "a|b:cat:dom"})
        second = client.post(
            "/track/", json={"events": [{"label": "c", "category": "cat", "dom_id": "x"}, {"label": "a"}]}
        )
    assert first.json() == {"accepted": 2}
    assert second.status_code == 202
    assert second.headers["x-tally-dropped"] == "1"
    assert second.json()["accepted"] == 2
    (dropped,) = second.json()["dropped"]
    assert (dropped["index"], dropped["reason"]) == (0, "overflow")
    assert OVERFLOW_LABEL in dropped["rule"]
    assert publisher.fields() == [("a", "", ""), ("b", "cat", "dom"), (OVERFLOW_LABEL, "", ""), ("a", "", "")]


def test_the_cap_starts_afresh_each_day() -> None:
    guard = Guard(Policy(), max_new_labels_per_day=1)

    def labels_after(label: str, day: date) -> list[str]:
        return [e.label for e in guard.admit(Outcome.of([LabelEvent(label, "", "", 0)]), None, day).events]

    assert labels_after("a", date(2026, 1, 1)) == ["a"]
    assert labels_after("b", date(2026, 1, 1)) == [OVERFLOW_LABEL]
    assert labels_after("b", date(2026, 1, 2)) == ["b"]
    assert labels_after("a", date(2026, 1, 2)) == [OVERFLOW_LABEL]


# -- settings ----------------------------------------------------------------------------


def test_documented_defaults() -> None:
    settings = IngestSettings.from_env({})
    assert settings.limits == Limits(
        max_labels_per_request=50,
        max_query_string=8192,
        max_body_bytes=65536,
        max_header_bytes=16384,
        max_events_per_batch=500,
        max_client_ts_past_s=86400,
        max_client_ts_future_s=300,
        max_new_labels_per_day=10000,
    )
    assert settings.policy == Policy(drop_bots=True, label_allowlist=())
    assert settings.cors_origins == ("*",)


def test_every_limit_is_read_from_its_variable() -> None:
    settings = IngestSettings.from_env({"TALLY_MAX_BODY_BYTES": "1024", "TALLY_MAX_EVENTS_PER_BATCH": "10"})
    assert (settings.limits.max_body_bytes, settings.limits.max_events_per_batch) == (1024, 10)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TALLY_MAX_BODY_BYTES": "lots"}, "TALLY_MAX_BODY_BYTES"),
        ({"TALLY_MAX_EVENTS_PER_BATCH": "0"}, "TALLY_MAX_EVENTS_PER_BATCH"),
        ({"TALLY_MAX_NEW_LABELS_PER_DAY": "-1"}, "TALLY_MAX_NEW_LABELS_PER_DAY"),
        ({"TALLY_DROP_BOTS": "perhaps"}, "TALLY_DROP_BOTS"),
        ({"TALLY_LABEL_ALLOWLIST": "home,not a label"}, "TALLY_LABEL_ALLOWLIST"),
    ],
)
def test_malformed_ingest_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises((SettingError, ValueError), match=key):
        IngestSettings.from_env(env)
