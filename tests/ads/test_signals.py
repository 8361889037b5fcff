"""Signal ingestion (`POST /api/v1/signals`), the features built from signals, and
their retention, as PRODUCT.md and docs/ADS_SIGNALS.md describe them.

The cast: the platform's services report events with a token holding `signals:write`;
Alice lives in the US (the ads purposes are on by default once the 2025-06 policy has
reached her), Dieter in Germany (they stay off until he says yes).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from django.conf import settings
from django.core import validators
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.test import APIClient
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from ads import features, signals, tasks
from ads.choices import SIGNAL_TIES, ActivityLevel, SignalType
from ads.models import Advertiser, HiddenAdvertiser, Signal, SubjectFeatures
from consent import selectors, services
from consent.choices import Source
from consent.models import Subject
from tests.factories import TEST_ACTOR, SubjectFactory, publish

pytestmark = pytest.mark.django_db

URL = "/api/v1/signals"
PROBLEM = "application/problem+json"

# Every key the product promises never to accept, written out here rather than read
# from the code, so that dropping one from `ads.signals.CONTENT_KEYS` fails a test.
FORBIDDEN_KEYS = [
    "text",
    "body",
    "content",
    "caption",
    "media",
    "message",
    "messages",
    "attachment",
    "file",
    "audio",
    "video",
    "image",
    "photo",
    "voice",
    "call",
    "transcript",
    "contacts",
    "contact_list",
    "phone_book",
    "group",
    "group_id",
    "group_members",
    "members",
    "location",
    "lat",
    "lng",
    "latitude",
    "longitude",
    "coordinates",
    "geo",
    "is_group_chat",
]


# --- helpers ---------------------------------------------------------------------------


def iso(when: datetime) -> str:
    return when.isoformat()


def ago(**delta: float) -> str:
    return iso(timezone.now() - timedelta(**delta))


def event(kind: str, subject: str, /, *, advertiser: int = 1, **fields: Any) -> dict[str, Any]:
    """A valid event of the type, with every field its schema has, then `fields`."""
    typical: dict[str, dict[str, Any]] = {
        SignalType.CHANNEL_FOLLOWED: {"channel": "chan-1", "topics": ["football"]},
        SignalType.CHANNEL_UNFOLLOWED: {"channel": "chan-1", "topics": ["football"]},
        SignalType.CHANNEL_CONTENT_ENGAGED: {
            "channel": "chan-1",
            "topics": ["football"],
            "engagement": "react",
        },
        SignalType.STATUS_VIEWED: {"author_kind": "channel", "topic": "cooking"},
        SignalType.AD_CLICKED: {"advertiser": advertiser, "decision_id": str(uuid.uuid4())},
        SignalType.AD_HIDDEN: {"advertiser": advertiser},
        SignalType.APP_SESSION: {"duration_seconds": 300, "city": "Austin", "platform": "ios"},
        SignalType.MESSAGE_SENT: {"peer_count": 2, "hour_of_day": 21},
    }
    body = {"type": kind, "subject": subject, "occurred_at": ago(minutes=1)}
    return {**body, **typical[kind], **fields}


def post(client: APIClient, body: Any) -> Any:
    return client.post(URL, body, format="json")


def assert_problem(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0].strip() == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


def errors_by_field(body: dict[str, Any]) -> dict[str, str]:
    return {error["field"]: error["message"] for error in body.get("errors", [])}


def nothing_stored() -> bool:
    return not Signal.objects.exists() and not HiddenAdvertiser.objects.exists()


def features_of(subject: Subject) -> SubjectFeatures | None:
    return SubjectFeatures.objects.filter(subject=subject).first()


def choose(subject: Subject, purpose: str, granted: bool) -> None:
    services.record_choice(
        external_id=subject.external_id,
        purpose_key=purpose,
        granted=granted,
        source=Source.USER_APP,
        actor=TEST_ACTOR,
    )


def ingest(events: list[dict[str, Any]], now: datetime | None = None) -> signals.IngestResult:
    """The service, fed as the view feeds it: validated events."""
    now = now or timezone.now()
    return signals.ingest(events=signals.validate_events(events, now=now), now=now)


# --- personas --------------------------------------------------------------------------


@pytest.fixture
def reporter(api_client: Callable[..., APIClient]) -> APIClient:
    return api_client("signals:write", name="message-router")


@pytest.fixture
def ads_policy() -> None:
    publish("2025-06", "US", "DE")


@pytest.fixture
def alice(ads_policy: None) -> Subject:
    return SubjectFactory.create(external_id="alice", country="US", birth_year=1990)


@pytest.fixture
def dieter(ads_policy: None) -> Subject:
    return SubjectFactory.create(external_id="dieter", country="DE", birth_year=1985)


@pytest.fixture
def advertiser() -> Advertiser:
    return Advertiser.objects.create(name="Boots & Co", country="US")


# --- access ----------------------------------------------------------------------------


def test_reporting_needs_the_signals_write_scope(api_client, alice, advertiser):
    body = {"events": [event("app_session", "alice")]}

    assert_problem(post(api_client("consent:read", "consent:write"), body), 403)
    assert_problem(post(APIClient(), body), 401)
    assert nothing_stored()


# --- refusals: content -----------------------------------------------------------------


def test_every_forbidden_key_is_in_the_named_constant():
    assert set(FORBIDDEN_KEYS) <= signals.CONTENT_KEYS


def _top_of_event(key: str) -> tuple[dict[str, Any], str]:
    return {
        "events": [event("app_session", "alice"), {**event("app_session", "alice"), key: "hi"}]
    }, f"events[1].{key}"


def _in_a_dict(key: str) -> tuple[dict[str, Any], str]:
    bad = {**event("app_session", "alice"), "extra": {"a": {key: "hi"}}}
    return {"events": [event("app_session", "alice"), bad]}, f"events[1].extra.a.{key}"


def _in_a_list_field(key: str) -> tuple[dict[str, Any], str]:
    bad = event("channel_followed", "alice", topics=["football", {key: "hi"}])
    return {"events": [bad]}, f"events[0].topics[1].{key}"


def _deep_in_lists(key: str) -> tuple[dict[str, Any], str]:
    bad = {**event("message_sent", "alice"), "meta": [[{"deep": [{key: {"n": 1}}]}]]}
    events = [event("app_session", "alice")] * 3 + [bad]
    return {"events": events}, f"events[3].meta[0][0].deep[0].{key}"


def _beside_the_events(key: str) -> tuple[dict[str, Any], str]:
    return {"events": [event("app_session", "alice")], key: ["hi"]}, key


SHAPES = {
    "top of an event": _top_of_event,
    "nested in a dict": _in_a_dict,
    "inside a list field": _in_a_list_field,
    "deep in lists": _deep_in_lists,
    "beside the events": _beside_the_events,
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("key", FORBIDDEN_KEYS)
def test_a_content_key_anywhere_refuses_the_batch_naming_its_path(reporter, alice, key, shape):
    body, path = SHAPES[shape](key)

    problem = assert_problem(post(reporter, body))

    errors = errors_by_field(problem)
    assert list(errors) == [path]
    assert "content" in errors[path]
    assert "never accepted" in errors[path]
    assert "Unknown field" not in errors[path]
    assert nothing_stored()


@pytest.mark.parametrize("key", ["groupId", "Phone-Book", "TEXT", "Contact_List", "isGroupChat"])
def test_content_keys_are_recognised_whatever_their_spelling(reporter, alice, key):
    body = {"events": [{**event("message_sent", "alice"), key: True}]}

    errors = errors_by_field(assert_problem(post(reporter, body)))

    assert list(errors) == [f"events[0].{key}"]
    assert "content" in errors[f"events[0].{key}"]
    assert nothing_stored()


def test_every_content_key_of_a_batch_is_named(reporter, alice):
    body = {
        "events": [
            {**event("message_sent", "alice"), "text": "hello", "nickname": "x"},
            event("app_session", "alice"),
            {**event("app_session", "alice"), "location": {"lat": 1.0, "lng": 2.0}},
        ]
    }

    errors = errors_by_field(assert_problem(post(reporter, body)))

    # Content first: the unknown field is not the point while content is present.
    assert list(errors) == ["events[0].text", "events[2].location"]
    assert nothing_stored()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "Text", "group-id", "topics", "lat", "city", ""]),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
@given(value=JSON_VALUES)
def test_the_quick_content_test_agrees_with_the_paths_it_names(value: Any) -> None:
    assert signals.has_content(value) is bool(list(signals.content_paths(value)))


def test_no_schema_has_a_content_field():
    for schema in signals.EVENT_SCHEMAS.values():
        fields = {signals._normalized_key(str(name)) for name in schema().fields}
        assert not fields & {signals._normalized_key(k) for k in signals.CONTENT_KEYS}


# --- refusals: shape -------------------------------------------------------------------


def test_an_unknown_field_is_named_as_unknown(reporter, alice):
    body = {"events": [event("app_session", "alice"), {**event("app_session", "alice"), "mood": 1}]}

    errors = errors_by_field(assert_problem(post(reporter, body)))

    assert errors == {"events[1].mood": "Unknown field."}
    assert nothing_stored()


@pytest.mark.parametrize("kind", ["status_posted", "APP_SESSION", 5, None, ""])
def test_an_unknown_type_is_named(reporter, alice, kind):
    body = {
        "events": [event("app_session", "alice"), {**event("app_session", "alice"), "type": kind}]
    }

    errors = errors_by_field(assert_problem(post(reporter, body)))

    assert list(errors) == ["events[1].type"]
    assert "Unknown signal type" in errors["events[1].type"]
    assert nothing_stored()


@pytest.mark.parametrize(
    ("kind", "missing"),
    [
        ("app_session", "type"),
        ("app_session", "subject"),
        ("message_sent", "occurred_at"),
        ("channel_followed", "channel"),
        ("channel_unfollowed", "channel"),
        ("channel_content_engaged", "channel"),
        ("ad_clicked", "advertiser"),
        ("ad_hidden", "advertiser"),
    ],
)
def test_a_missing_required_field_is_named(reporter, alice, advertiser, kind, missing):
    bad = event(kind, "alice", advertiser=advertiser.pk)
    del bad[missing]

    errors = errors_by_field(
        assert_problem(post(reporter, {"events": [event("app_session", "alice"), bad]}))
    )

    assert list(errors) == [f"events[1].{missing}"]
    assert "required" in errors[f"events[1].{missing}"]
    assert nothing_stored()


def test_only_the_required_fields_are_enough(reporter, alice, advertiser):
    now = ago(minutes=1)
    minimal = [
        {"type": kind, "subject": "alice", "occurred_at": now}
        | ({"channel": "c1"} if kind.startswith("channel_") else {})
        | ({"advertiser": advertiser.pk} if kind.startswith("ad_") else {})
        for kind in SignalType.values
    ]

    response = post(reporter, {"events": minimal})

    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 8, "dropped": 0}


@pytest.mark.parametrize(
    ("kind", "fields", "path"),
    [
        ("app_session", {"subject": 123}, "subject"),
        ("app_session", {"subject": ""}, "subject"),
        ("app_session", {"subject": "x" * 65}, "subject"),
        ("app_session", {"subject": None}, "subject"),
        ("channel_followed", {"channel": 5}, "channel"),
        ("channel_followed", {"channel": "has a space"}, "channel"),
        ("channel_followed", {"channel": "c" * 65}, "channel"),
        ("channel_followed", {"topics": "football"}, "topics"),
        ("channel_followed", {"topics": {"football": 1}}, "topics"),
        ("channel_followed", {"topics": ["football", 7]}, "topics[1]"),
        ("channel_followed", {"topics": ["Foot Ball"]}, "topics[0]"),
        ("channel_followed", {"topics": ["t" * 41]}, "topics[0]"),
        ("channel_followed", {"topics": [f"t{i}" for i in range(11)]}, "topics"),
        ("channel_followed", {"topics": None}, "topics"),
        ("channel_followed", {"engagement": "view"}, "engagement"),
        ("channel_unfollowed", {"topic": "football"}, "topic"),
        ("channel_content_engaged", {"engagement": "like"}, "engagement"),
        ("channel_content_engaged", {"engagement": 1}, "engagement"),
        ("status_viewed", {"author_kind": "stranger"}, "author_kind"),
        ("status_viewed", {"topic": ["cooking"]}, "topic"),
        ("status_viewed", {"channel": "c1"}, "channel"),
        ("ad_clicked", {"advertiser": "1"}, "advertiser"),
        ("ad_clicked", {"advertiser": True}, "advertiser"),
        ("ad_clicked", {"advertiser": 1.5}, "advertiser"),
        ("ad_clicked", {"advertiser": 0}, "advertiser"),
        ("ad_clicked", {"advertiser": 2**63}, "advertiser"),
        ("ad_clicked", {"decision_id": "not-a-uuid"}, "decision_id"),
        ("ad_clicked", {"decision_id": 5}, "decision_id"),
        ("ad_hidden", {"engagement": "view"}, "engagement"),
        ("app_session", {"duration_seconds": -1}, "duration_seconds"),
        ("app_session", {"duration_seconds": 86401}, "duration_seconds"),
        ("app_session", {"duration_seconds": "60"}, "duration_seconds"),
        ("app_session", {"duration_seconds": 60.0}, "duration_seconds"),
        ("app_session", {"platform": "symbian"}, "platform"),
        ("app_session", {"city": "221B Baker Street"}, "city"),
        ("app_session", {"city": "Paris" * 17}, "city"),
        ("app_session", {"city": {"name": "Paris"}}, "city"),
        ("message_sent", {"peer_count": 0}, "peer_count"),
        ("message_sent", {"peer_count": 1025}, "peer_count"),
        ("message_sent", {"hour_of_day": 24}, "hour_of_day"),
        ("message_sent", {"hour_of_day": True}, "hour_of_day"),
        ("message_sent", {"duration_seconds": 5}, "duration_seconds"),
    ],
)
def test_a_wrong_value_is_named_with_its_position(reporter, alice, advertiser, kind, fields, path):
    bad = {**event(kind, "alice", advertiser=advertiser.pk), **fields}
    body = {"events": [event("app_session", "alice"), event("message_sent", "alice"), bad]}

    errors = errors_by_field(assert_problem(post(reporter, body)))

    assert list(errors) == [f"events[2].{path}"]
    assert nothing_stored()


@pytest.mark.parametrize("item", ["app_session", ["app_session"], None, 7])
def test_an_event_that_is_not_an_object_is_named(reporter, alice, item):
    errors = errors_by_field(
        assert_problem(post(reporter, {"events": [event("app_session", "alice"), item]}))
    )

    assert list(errors) == ["events[1]"]
    assert nothing_stored()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "events"),
        ({"events": None}, "events"),
        ({"events": "app_session"}, "events"),
        ({"events": {"0": {}}}, "events"),
        ({"events": []}, "events"),
        ({"events": [{}], "source": "router"}, "source"),
    ],
)
def test_a_malformed_envelope_is_named(reporter, body, field):
    assert set(errors_by_field(assert_problem(post(reporter, body)))) == {field}


def test_a_body_that_is_not_an_object_is_refused(reporter, alice):
    assert_problem(post(reporter, [event("app_session", "alice")]))
    assert nothing_stored()


def test_more_than_1000_events_are_refused_naming_events(reporter, alice):
    body = {"events": [event("message_sent", "alice")] * 1001}

    errors = errors_by_field(assert_problem(post(reporter, body)))

    assert list(errors) == ["events"]
    assert "1000" in errors["events"]
    assert nothing_stored()


def _retention_days() -> float:
    return settings.SIGNAL_RETENTION.total_seconds() / 86400


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2025-06-17T09:30:00",  # no timezone
        "2025-06-17",  # a date
        "yesterday",
        "",
        1750152600,
        None,
        "in-future",
        "too-old",
    ],
)
def test_a_bad_time_is_named(reporter, alice, occurred_at):
    if occurred_at == "in-future":
        occurred_at = iso(timezone.now() + timedelta(minutes=6))
    if occurred_at == "too-old":
        occurred_at = ago(days=_retention_days(), minutes=1)
    bad = event("app_session", "alice", occurred_at=occurred_at)

    errors = errors_by_field(
        assert_problem(post(reporter, {"events": [event("app_session", "alice"), bad]}))
    )

    assert list(errors) == ["events[1].occurred_at"]
    assert nothing_stored()


def test_times_in_any_offset_are_stored_in_utc_within_the_window(reporter, alice):
    now = timezone.now()
    local = (now - timedelta(hours=1)).astimezone(timezone.get_fixed_timezone(330))
    body = {
        "events": [
            event("app_session", "alice", occurred_at=local.isoformat()),
            event("app_session", "alice", occurred_at=iso(now + timedelta(minutes=4))),
            event("app_session", "alice", occurred_at=ago(days=_retention_days() - 1)),
            event("app_session", "alice", occurred_at=ago(hours=1).replace("+00:00", "Z")),
        ]
    }

    response = post(reporter, body)

    assert response.json() == {"accepted": 4, "dropped": 0}
    stored = Signal.objects.order_by("id").first()
    assert stored is not None
    assert stored.occurred_at == local


def test_every_error_of_a_batch_is_named_at_once(reporter, alice):
    body = {
        "events": [
            event("app_session", "alice", platform="symbian"),
            event("app_session", "alice"),
            event("message_sent", "alice", peer_count=0, hour_of_day=25),
        ]
    }

    errors = errors_by_field(assert_problem(post(reporter, body)))

    assert set(errors) == {
        "events[0].platform",
        "events[2].peer_count",
        "events[2].hour_of_day",
    }


def test_an_unknown_advertiser_refuses_the_batch_naming_its_position(reporter, alice, advertiser):
    body = {
        "events": [
            event("ad_hidden", "alice", advertiser=advertiser.pk),
            event("ad_clicked", "alice", advertiser=advertiser.pk + 1000),
        ]
    }

    errors = errors_by_field(assert_problem(post(reporter, body)))

    assert list(errors) == ["events[1].advertiser"]
    assert nothing_stored()


# --- consent: stored or dropped ------------------------------------------------------------


def test_the_events_of_a_subject_who_allows_their_purposes_are_stored(reporter, alice, advertiser):
    events = [event(kind, "alice", advertiser=advertiser.pk) for kind in SignalType.values]

    response = post(reporter, {"events": events})

    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 8, "dropped": 0}
    stored = {s.type: s for s in Signal.objects.filter(subject=alice)}
    assert set(stored) == set(SignalType.values)
    for sent in events:
        signal = stored[sent["type"]]
        # Exactly the type's fields are kept; the envelope has its own columns.
        expected = {k: v for k, v in sent.items() if k not in {"type", "subject", "occurred_at"}}
        assert signal.data == expected
        assert signal.occurred_at == datetime.fromisoformat(sent["occurred_at"])


def test_without_consent_every_event_is_dropped_and_counted(reporter, dieter, advertiser):
    events = [event(kind, "dieter", advertiser=advertiser.pk) for kind in SignalType.values]

    response = post(reporter, {"events": events})

    assert response.json() == {"accepted": 0, "dropped": 8}
    assert not Signal.objects.exists()
    assert features_of(dieter) is None


def test_a_choice_lets_only_the_signals_of_its_purpose_through(reporter, dieter, advertiser):
    choose(dieter, "ads_personalization", True)
    events = [event(kind, "dieter", advertiser=advertiser.pk) for kind in SignalType.values]

    response = post(reporter, {"events": events})

    personalization = {k for k, (_, p) in SIGNAL_TIES.items() if p == "ads_personalization"}
    assert response.json() == {
        "accepted": len(personalization),
        "dropped": 8 - len(personalization),
    }
    assert set(Signal.objects.values_list("type", flat=True)) == personalization


def test_an_opt_out_drops_the_signals_of_that_purpose_from_then_on(reporter, alice, advertiser):
    assert post(reporter, {"events": [event("channel_followed", "alice")]}).json()["accepted"] == 1
    choose(alice, "ads_personalization", False)

    response = post(
        reporter, {"events": [event("channel_followed", "alice"), event("app_session", "alice")]}
    )

    assert response.json() == {"accepted": 1, "dropped": 1}
    assert Signal.objects.filter(type="channel_followed").count() == 1


def test_before_the_ads_policy_reaches_a_subject_ads_signals_are_dropped(reporter, advertiser):
    SubjectFactory.create(external_id="early", country="US", birth_year=1990)
    events = [
        event("channel_followed", "early"),
        event("ad_clicked", "early", advertiser=advertiser.pk),
    ]

    assert post(reporter, {"events": events}).json() == {"accepted": 0, "dropped": 2}


def test_unknown_and_erased_subjects_are_dropped_and_counted(reporter, alice):
    SubjectFactory.create(external_id="gone", country="US", birth_year=1990)
    services.erase_subject(external_id="gone", actor=TEST_ACTOR)
    events = [
        event("app_session", "alice"),
        event("app_session", "nobody"),
        event("app_session", "gone"),
        event("message_sent", "nobody"),
    ]

    assert post(reporter, {"events": events}).json() == {"accepted": 1, "dropped": 3}
    assert set(Signal.objects.values_list("subject__external_id", flat=True)) == {"alice"}


def test_consent_is_checked_once_per_purpose_not_per_event(alice, dieter, advertiser, monkeypatch):
    calls: list[tuple[str, int]] = []
    check = selectors.check_consent_of_locked

    def counting(*, purpose, subjects):
        calls.append((purpose.key, len(subjects)))
        return check(purpose=purpose, subjects=subjects)

    monkeypatch.setattr(selectors, "check_consent_of_locked", counting)
    kinds = ["channel_followed", "status_viewed", "app_session", "message_sent"]
    events = [event(kind, who) for kind in kinds for who in ("alice", "dieter")] * 20

    result = ingest(events)

    assert sorted(calls) == [("ads_personalization", 2), ("analytics", 2)]
    assert result == {"accepted": 80, "dropped": 80}


def test_a_hide_is_honoured_even_when_the_signal_is_dropped(reporter, alice, dieter, advertiser):
    events = [
        event("ad_hidden", "dieter", advertiser=advertiser.pk),
        event("ad_hidden", "alice", advertiser=advertiser.pk),
        event("ad_hidden", "alice", advertiser=advertiser.pk),
        event("ad_hidden", "nobody", advertiser=advertiser.pk),
    ]

    response = post(reporter, {"events": events})

    assert response.json() == {"accepted": 2, "dropped": 2}
    hidden = HiddenAdvertiser.objects.values_list("subject__external_id", "advertiser")
    assert sorted(hidden) == [("alice", advertiser.pk), ("dieter", advertiser.pk)]
    assert not Signal.objects.filter(subject=dieter).exists()
    # Reported again later: still one hide.
    assert post(reporter, {"events": events[:1]}).json() == {"accepted": 0, "dropped": 1}
    assert HiddenAdvertiser.objects.filter(subject=dieter).count() == 1


# --- features --------------------------------------------------------------------------


def test_features_aggregate_the_stored_signals(alice, dieter, advertiser):
    other = Advertiser.objects.create(name="Other", country="US")
    events = [
        event("channel_followed", "alice", topics=["football", "tennis"]),
        event("channel_content_engaged", "alice", topics=["football"]),
        event("status_viewed", "alice", topic="cooking"),
        event("channel_unfollowed", "alice", topics=["tennis"]),
        event("channel_unfollowed", "alice", topics=["chess"]),
        event("ad_clicked", "alice", advertiser=advertiser.pk),
        event("ad_clicked", "alice", advertiser=advertiser.pk),
        event("ad_hidden", "alice", advertiser=other.pk),
        event("app_session", "alice", city="Boston", occurred_at=ago(hours=3)),
        event("app_session", "alice", city="Austin", occurred_at=ago(hours=2)),
        event("app_session", "alice", occurred_at=ago(hours=1)),  # names no city
        event("message_sent", "alice"),
        event("channel_followed", "dieter", topics=["football"]),  # dropped: no consent
    ]

    assert ingest(events) == {"accepted": 12, "dropped": 1}

    features = features_of(alice)
    assert features is not None
    assert features.channel_topics == {"cooking": 1, "football": 2}
    assert features.ad_interactions == {
        str(advertiser.pk): {"clicks": 2, "hides": 0},
        str(other.pk): {"clicks": 0, "hides": 1},
    }
    assert features.city == "Austin"
    assert features.activity_level == ActivityLevel.LOW
    assert features_of(dieter) is None


def test_features_follow_later_batches(alice):
    ingest([event("channel_followed", "alice", topics=["football"])])
    ingest([event("channel_unfollowed", "alice", topics=["football"])])

    features = features_of(alice)
    assert features is not None
    assert features.channel_topics == {}


@pytest.mark.parametrize(
    ("count", "level"),
    [
        (0, ActivityLevel.NONE),
        (1, ActivityLevel.LOW),
        (9, ActivityLevel.LOW),
        (10, ActivityLevel.MEDIUM),
        (49, ActivityLevel.MEDIUM),
        (50, ActivityLevel.HIGH),
        (500, ActivityLevel.HIGH),
    ],
)
def test_activity_level_thresholds(count, level):
    assert features.activity_level(count) == level


def test_activity_counts_sessions_and_messages_of_the_last_seven_days(alice):
    recent = [event("app_session", "alice", occurred_at=ago(days=6))] * 4
    recent += [event("message_sent", "alice", occurred_at=ago(hours=1))] * 6
    old = [event("message_sent", "alice", occurred_at=ago(days=8))] * 30
    ingest(recent + old)

    features = features_of(alice)
    assert features is not None
    assert features.activity_level == ActivityLevel.MEDIUM


def test_recomputing_is_idempotent_and_drops_features_without_signals(alice):
    ingest([event("channel_followed", "alice", topics=["football"])])
    before = features_of(alice)
    assert before is not None

    signals.recompute_features([alice.pk])
    again = features_of(alice)
    assert again is not None
    assert again.channel_topics == before.channel_topics

    Signal.objects.filter(subject=alice).delete()
    signals.recompute_features([alice.pk])
    assert features_of(alice) is None


def test_features_count_only_retained_signals_even_before_the_purge(alice):
    now = timezone.now()
    earlier = now - timedelta(days=20)
    old = iso(earlier - settings.SIGNAL_RETENTION + timedelta(days=5))
    ingest(
        [
            event("channel_followed", "alice", topics=["tennis"], occurred_at=old),
            event("channel_followed", "alice", topics=["football"], occurred_at=iso(earlier)),
        ],
        now=earlier,
    )

    signals.recompute_features([alice.pk], now=now)

    assert Signal.objects.count() == 2  # the purge has not run yet
    features = features_of(alice)
    assert features is not None
    assert features.channel_topics == {"football": 1}


def _reference(accepted: list[tuple[int, dict[str, Any]]], now: datetime) -> dict[str, Any] | None:
    """Features as the docs define them, computed the obvious way from the events that
    were stored (each with its position in the sequence)."""
    if not accepted:
        return None
    topics: Counter[str] = Counter()
    ads: dict[str, dict[str, int]] = {}
    cities: list[tuple[datetime, int, str]] = []
    activity = 0
    for position, e in accepted:
        when = datetime.fromisoformat(e["occurred_at"])
        sign = {"channel_unfollowed": -1}.get(e["type"], 1)
        for topic in e.get("topics", []) + ([e["topic"]] if "topic" in e else []):
            topics[topic] += sign
        if e["type"] in ("ad_clicked", "ad_hidden"):
            counts = ads.setdefault(str(e["advertiser"]), {"clicks": 0, "hides": 0})
            counts["clicks" if e["type"] == "ad_clicked" else "hides"] += 1
        if e["type"] == "app_session" and "city" in e:
            cities.append((when, position, e["city"]))
        if e["type"] in ("app_session", "message_sent") and when >= now - timedelta(days=7):
            activity += 1
    level = (
        "none"
        if activity == 0
        else "low"
        if activity < 10
        else "medium"
        if activity < 50
        else "high"
    )
    return {
        "channel_topics": {t: w for t, w in topics.items() if w > 0},
        "ad_interactions": ads,
        "city": max(cities)[2] if cities else "",
        "activity_level": level,
    }


@pytest.fixture
def dieter_personalized(dieter: Subject) -> Subject:
    """Dieter has said yes to personalised ads, and to nothing else."""
    choose(dieter, "ads_personalization", True)
    return dieter


@pytest.fixture
def two_advertisers() -> list[Advertiser]:
    return [Advertiser.objects.create(name=f"Advertiser {i}", country="US") for i in range(2)]


TOPICS = st.sampled_from(["football", "tennis", "k-pop", "cooking", "news"])
RANDOM_EVENT = st.fixed_dictionaries(
    {
        "who": st.sampled_from(["alice", "dieter", "nobody"]),
        "type": st.sampled_from(SignalType.values),
        "topics": st.lists(TOPICS, max_size=3),
        "topic": st.none() | TOPICS,
        "city": st.none() | st.sampled_from(["Austin", "Boston", "São Paulo"]),
        "advertiser": st.integers(0, 1),
        "minutes_ago": st.integers(-4, 89 * 24 * 60),
    }
)


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    drawn=st.lists(RANDOM_EVENT, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=2),
)
def test_features_equal_a_reference_aggregation_of_what_was_stored(
    alice, dieter_personalized, two_advertisers, drawn, cuts
):
    Signal.objects.all().delete()
    SubjectFeatures.objects.all().delete()
    allowed = {"alice": {"ads_personalization", "ads_data_sharing", "analytics"}}
    allowed["dieter"] = {"ads_personalization"}
    now = timezone.now()
    events = []
    for d in drawn:
        fields: dict[str, Any] = {"occurred_at": iso(now - timedelta(minutes=d["minutes_ago"]))}
        if d["type"].startswith("channel_"):
            fields["topics"] = d["topics"]
        if d["type"] == "status_viewed" and d["topic"]:
            fields["topic"] = d["topic"]
        if d["type"] == "app_session":
            fields["city"] = d["city"]
        advertiser = two_advertisers[d["advertiser"]].pk
        base = event(d["type"], d["who"], advertiser=advertiser, **fields)
        events.append({k: v for k, v in base.items() if v is not None})
    accepted: dict[str, list[tuple[int, dict[str, Any]]]] = {"alice": [], "dieter": []}
    for position, e in enumerate(events):
        if SIGNAL_TIES[e["type"]][1] in allowed.get(e["subject"], set()):
            # A topic repeated within one event counts once.
            e2 = {**e, "topics": list(dict.fromkeys(e["topics"]))} if "topics" in e else e
            accepted[e["subject"]].append((position, e2))

    bounds = [0, *sorted(set(cuts)), len(events)]
    for start, end in pairwise(bounds):
        if start < end:
            ingest(events[start:end], now=now)

    for who, subject in (("alice", alice), ("dieter", dieter_personalized)):
        row = features_of(subject)
        expected = _reference(accepted[who], now)
        if expected is None:
            assert row is None
            continue
        assert row is not None
        actual = {
            "channel_topics": row.channel_topics,
            "ad_interactions": row.ad_interactions,
            "city": row.city,
            "activity_level": row.activity_level,
        }
        assert actual == expected
    assert Signal.objects.count() == sum(len(a) for a in accepted.values())
    # Rebuilt from the stored signals, each row is exactly what the batches built up,
    # running totals included.
    for subject in (alice, dieter_personalized):
        built_up = stored_row(subject)
        signals.recompute_features([subject.pk], now=now)
        assert stored_row(subject) == built_up


def stored_row(subject: Subject) -> dict[str, Any] | None:
    row = SubjectFeatures.objects.filter(subject=subject).values().first()
    return dict(row) if row is not None else None


def test_a_batch_reads_only_the_features_row_not_the_history(alice, two_advertisers):
    many = [event("channel_followed", "alice", topics=["football"])] * 30
    ingest(many)
    with CaptureQueriesContext(connection) as queries:
        ingest([event("channel_unfollowed", "alice", topics=["football"])])
    assert not [q for q in queries.captured_queries if "ads_signal" in q["sql"]]
    row = features_of(alice)
    assert row is not None
    assert row.channel_topics == {"football": 29}
    assert row.topic_weights == {"football": 29}


def test_a_row_kept_without_running_totals_is_rebuilt_by_the_next_batch(alice):
    ingest([event("channel_followed", "alice", topics=["football", "music"])])
    # As a row from before the running totals were kept: targeting fields only.
    SubjectFeatures.objects.filter(subject=alice).update(
        topic_weights=None, recent_activity=[], channel_topics={"stale": 9}
    )

    ingest([event("channel_unfollowed", "alice", topics=["music"])])

    row = stored_row(alice)
    assert row is not None
    assert row["channel_topics"] == {"football": 1}
    assert row["topic_weights"] == {"football": 1}


def test_activity_of_a_busy_subject_leaves_the_window_as_time_passes(alice):
    now = timezone.now()
    # 60 sessions six days and a half ago: high, and only the newest 50 times are kept.
    ingest([event("app_session", "alice", occurred_at=iso(now - timedelta(days=6.5)))] * 60)
    row = features_of(alice)
    assert row is not None
    assert row.activity_level == ActivityLevel.HIGH
    assert len(row.recent_activity) == features.ACTIVITY_KEPT

    # A day later those have left the 7-day window: one new session is "low".
    later = now + timedelta(days=1)
    ingest([event("message_sent", "alice", occurred_at=iso(later))], now=later)
    built_up = stored_row(alice)
    assert built_up is not None
    assert built_up["activity_level"] == ActivityLevel.LOW
    signals.recompute_features([alice.pk], now=later)
    assert stored_row(alice) == built_up


# --- retention -------------------------------------------------------------------------


def test_the_purge_deletes_expired_signals_and_recomputes_features(alice, advertiser):
    bob = SubjectFactory.create(external_id="bob", country="US", birth_year=1990)
    carol = SubjectFactory.create(external_id="carol", country="US", birth_year=1990)
    now = timezone.now()
    ingest(
        [
            event("channel_followed", "alice", topics=["tennis"], occurred_at=ago(days=80)),
            event("channel_followed", "alice", topics=["football"], occurred_at=ago(days=10)),
            event("app_session", "alice", city="Boston", occurred_at=ago(days=9)),
            event("app_session", "alice", city="Austin", occurred_at=ago(days=85)),
            event("ad_clicked", "bob", advertiser=advertiser.pk, occurred_at=ago(days=75)),
            event("channel_followed", "carol", topics=["chess"], occurred_at=ago(days=1)),
        ],
        now=now,
    )
    carol_before = features_of(carol)
    assert carol_before is not None
    alice_features = features_of(alice)
    assert alice_features is not None
    assert alice_features.channel_topics == {"football": 1, "tennis": 1}

    # Twenty days later the 80- and 85-day-old signals of Alice and Bob's click expire.
    later = now + timedelta(days=20)
    deleted = signals.purge_expired_signals(now=later)

    assert deleted == 3
    alice_features = features_of(alice)
    assert alice_features is not None
    assert alice_features.channel_topics == {"football": 1}
    assert alice_features.city == "Boston"
    assert features_of(bob) is None  # nothing left
    carol_after = features_of(carol)
    assert carol_after is not None
    assert carol_after.updated_at == carol_before.updated_at  # untouched
    assert Signal.objects.count() == 3
    assert not Signal.objects.filter(occurred_at__lt=later - settings.SIGNAL_RETENTION).exists()


def test_the_purge_lowers_an_activity_level_whose_week_has_passed(alice):
    now = timezone.now()
    ingest([event("app_session", "alice", occurred_at=ago(days=5))] * 12, now=now)
    features = features_of(alice)
    assert features is not None
    assert features.activity_level == ActivityLevel.MEDIUM

    assert signals.purge_expired_signals(now=now + timedelta(days=3)) == 0

    features = features_of(alice)
    assert features is not None
    assert features.activity_level == ActivityLevel.NONE
    assert Signal.objects.count() == 12  # still retained, only out of the week


def test_the_hourly_task_runs_the_purge(alice):
    ingest([event("app_session", "alice", occurred_at=ago(days=_retention_days() - 0.01))])
    Signal.objects.update(
        occurred_at=timezone.now() - settings.SIGNAL_RETENTION - timedelta(hours=1)
    )

    assert tasks.purge_signals.apply().get() == 1
    assert not Signal.objects.exists()
    assert features_of(alice) is None


# --- erasure ---------------------------------------------------------------------------


def test_erasure_deletes_the_signals_features_and_hides(reporter, alice, advertiser):
    events = [event(kind, "alice", advertiser=advertiser.pk) for kind in SignalType.values]
    assert post(reporter, {"events": events}).json()["accepted"] == 8
    assert features_of(alice) is not None

    services.erase_subject(external_id="alice", actor=TEST_ACTOR)

    assert not Signal.objects.filter(subject=alice).exists()
    assert features_of(alice) is None
    assert not HiddenAdvertiser.objects.filter(subject=alice).exists()
    # Her old id no longer names anyone: later reports are dropped.
    assert post(reporter, {"events": events}).json() == {"accepted": 0, "dropped": 8}


# --- concurrency (PostgreSQL row locks) -------------------------------------------------


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        (count,) = cursor.fetchone()
        return int(count)


def _withdraw(subject: Subject) -> None:
    choose(subject, "ads_personalization", False)


def _erase(subject: Subject) -> None:
    services.erase_subject(external_id=subject.external_id, actor=TEST_ACTOR)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("change", [_withdraw, _erase], ids=["withdrawal", "erasure"])
def test_a_change_that_commits_while_a_batch_waits_for_the_subject_is_honoured(change):
    publish("2025-06", "US")
    alice = SubjectFactory.create(external_id="alice", country="US", birth_year=1990)
    holding, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def change_and_hold() -> None:
        try:
            with transaction.atomic():
                change(alice)
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    def report() -> None:
        try:
            outcome.update(ingest([event("channel_followed", "alice")]))
        except Exception as exc:  # reported to the test
            outcome["error"] = exc
        finally:
            connection.close()

    holder = threading.Thread(target=change_and_hold)
    holder.start()
    reporter = threading.Thread(target=report)
    try:
        assert holding.wait(timeout=30)
        reporter.start()
        deadline = time.monotonic() + 30
        while _lock_waiters() == 0:  # the batch waits for Alice's row
            assert time.monotonic() < deadline, "the batch never waited for the lock"
            time.sleep(0.05)
    finally:
        release.set()
        holder.join(timeout=30)
    reporter.join(timeout=30)

    assert outcome == {"accepted": 0, "dropped": 1}
    assert not Signal.objects.exists()
    assert not SubjectFeatures.objects.exists()


# --- cost ------------------------------------------------------------------------------


def _batch(size: int, advertiser: Advertiser) -> list[dict[str, Any]]:
    people = [f"person-{i}" for i in range(100)] + ["dieter", "nobody"]
    kinds = SignalType.values
    return [
        event(kinds[i % len(kinds)], people[i % len(people)], advertiser=advertiser.pk)
        for i in range(size)
    ]


# SQLite splits bulk inserts into statements of at most 999 parameters; the count is
# pinned for PostgreSQL, where a batch is one INSERT per table.
@pytest.mark.postgres
def test_a_1000_event_batch_takes_a_bounded_number_of_queries(
    reporter, dieter, advertiser, django_assert_max_num_queries
):
    for i in range(100):
        SubjectFactory.create(external_id=f"person-{i}", country="US", birth_year=1990)
    post(reporter, {"events": _batch(8, advertiser)})  # the token's first use is recorded

    with CaptureQueriesContext(connection) as small:
        assert post(reporter, {"events": _batch(10, advertiser)}).status_code == 200
    with django_assert_max_num_queries(19):
        response = post(reporter, {"events": _batch(1000, advertiser)})
    with CaptureQueriesContext(connection) as large:
        post(reporter, {"events": _batch(1000, advertiser)})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] + body["dropped"] == 1000
    assert body["dropped"] > 0
    # The cost does not grow with the batch.
    assert len(large) == len(small)


# --- the fast path agrees with the schemas ---------------------------------------------------

ODD_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            " chan-1",
            "chan-1 ",
            "chan\x00-1",
            "x" * 65,
            "football",
            "K-Pop",
            "k-pop",
            "Austin",
            "São Paulo",
            "12 Main St",
            "ios",
            "IOS",
            "react",
            "channel",
            str(uuid.uuid4()),
            str(uuid.uuid4()).upper(),
            "{" + str(uuid.uuid4()) + "}",
            "not-a-uuid",
            "2026-12-01T10:00:00",
            "2026-12-01T10:00:00+02:00",
            "1999-01-01T00:00:00Z",
            "2999-01-01T00:00:00Z",
            "\ud800",
            ["football", "k-pop", "football"],
            ["a"] * 11,
        ]
    ),
    st.integers(-5, 90000),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, width=32),
    st.lists(st.sampled_from(["football", "football", "Football", " x", "k-pop", ""]), max_size=12),
    st.text(max_size=8),
)


# Per field, values near the edge of what its schema takes, then anything odd.
FIELD_VALUES: dict[str, list[Any]] = {
    "subject": [
        "alice",
        " alice",
        "alice\n",
        "",
        "a" * 64,
        "a" * 65,
        "al\x00ice",
        "al\udc00ice",
        7,
    ],
    "occurred_at": ["2026-12-01T10:00:00", "1999-01-01T00:00:00Z", "2999-01-01T00:00:00Z", 0],
    "channel": ["chan-1", "chan 1", "chan-1 ", "c" * 65, "ch:1.x_y", "ch\ud800"],
    "topics": [
        ["football", "k-pop", "football"],
        ["a"] * 11,
        ["a"] * 10,
        [],
        ["Football"],
        "football",
        ["k--pop"],
    ],
    "topic": ["travel", " travel", "Travel", "k-pop", "-x", ""],
    "engagement": ["view", "react", "share", "like", "VIEW"],
    "author_kind": ["contact", "channel", "business", "group"],
    "advertiser": [1, 0, -1, 2**63, True, "1", 1.0],
    "decision_id": [str(uuid.uuid4()), str(uuid.uuid4()).upper(), "x", 1],
    "duration_seconds": [0, 86400, 86401, -1, True, 1.5],
    "city": ["Austin", "São Paulo", "St. John's", "12 Main St", "A" * 81, " Austin"],
    "platform": ["ios", "android", "web", "desktop", "IOS", "tv"],
    "peer_count": [1, 1024, 1025, 0, False],
    "hour_of_day": [0, 23, 24, -1],
    "mood": [1],
}


@st.composite
def odd_events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid event of some type with up to two of its fields (or an unknown one)
    changed, mostly to a value near the edge of what the schema takes, and perhaps one
    field left out."""
    kind = draw(st.sampled_from(list(signals.EVENT_SCHEMAS)))
    own = sorted(set(signals.EVENT_SCHEMAS[kind]().fields) - {"type"})
    if draw(st.integers(0, 9)) == 0:  # now and then a field no schema has
        own.append("mood")
    names = draw(st.sets(st.sampled_from(own), max_size=2))
    changes = {}
    for name in sorted(names):
        edge = st.sampled_from(FIELD_VALUES[name])
        changes[name] = draw(st.one_of(edge, edge, edge, ODD_VALUES))
    candidate = {**event(kind, "alice"), **changes}
    for name in draw(st.sets(st.sampled_from(own), max_size=1)):
        if name not in changes:
            candidate.pop(name, None)
    return kind, candidate


@hypothesis_settings(max_examples=1000, deadline=None, derandomize=True)
@given(case=odd_events())
def test_what_the_fast_path_accepts_the_schema_accepts_with_the_same_value(
    case: tuple[str, dict[str, Any]],
) -> None:
    kind, candidate = case
    now = timezone.now()
    compiled = signals._COMPILED[kind]
    assert compiled is not None

    fast = signals._fast_event(compiled, candidate, now)

    schema = signals.EVENT_SCHEMAS[kind](context={"now": now})
    try:
        expected: dict[str, Any] | None = dict(schema.run_validation(candidate))
    except Exception:
        expected = None
    if fast is not None:
        assert expected == fast


@pytest.mark.parametrize(
    ("validator", "values"),
    [
        (validators.MaxLengthValidator(3), ["abc", "abcd", ""]),
        (validators.MinLengthValidator(2), ["a", "ab", "abc"]),
        (validators.MaxValueValidator(5), [4, 5, 6]),
        (validators.MinValueValidator(1), [0, 1, 2]),
        (validators.ProhibitNullCharactersValidator(), ["a\x00b", "ab"]),
        (ProhibitSurrogateCharactersValidator(), ["a\ud800b", "\udfff", "ab", "é"]),
        (validators.RegexValidator(signals.TOPIC_RE), ["k-pop", "K-Pop", "k--pop", ""]),
        (validators.RegexValidator(r"^x", inverse_match=True), ["xa", "ax"]),
        (validators.MaxLengthValidator(lambda: 2), ["ab", "abc"]),
        (validators.EmailValidator(), ["a@example.com", "not an address"]),
    ],
)
def test_a_validator_said_plainly_agrees_with_the_validator(validator: Any, values: list[Any]):
    plain = signals._plain_test(validator)
    for value in values:
        try:
            validator(value)
        except (DjangoValidationError, serializers.ValidationError):
            expected = False
        else:
            expected = True
        assert plain(value) is expected, value


@pytest.mark.parametrize("kind", list(signals.EVENT_SCHEMAS))
def test_the_fast_path_takes_ordinary_events(kind: str) -> None:
    compiled = signals._COMPILED[kind]
    assert compiled is not None

    assert signals._fast_event(compiled, event(kind, "alice"), timezone.now()) is not None


@pytest.mark.parametrize(
    ("kind", "changes", "fast_takes_it"),
    [
        (SignalType.CHANNEL_FOLLOWED, {"topics": ["football", "k-pop", "football"]}, True),
        (SignalType.CHANNEL_FOLLOWED, {"topics": ["a"] * 10}, True),
        (SignalType.CHANNEL_FOLLOWED, {"topics": ["a"] * 11}, False),
        (SignalType.CHANNEL_FOLLOWED, {"topics": "football"}, False),
        (SignalType.AD_CLICKED, {"decision_id": str(uuid.UUID(int=7)).upper()}, True),
        (SignalType.AD_CLICKED, {"advertiser": True}, False),
        (SignalType.AD_CLICKED, {"advertiser": 1.0}, False),
        (SignalType.APP_SESSION, {"occurred_at": "2026-12-01T10:00:00+02:00"}, None),
        (SignalType.APP_SESSION, {"occurred_at": "2999-01-01T00:00:00Z"}, False),
        (SignalType.APP_SESSION, {"platform": "IOS"}, False),
        (SignalType.APP_SESSION, {"duration_seconds": 86401}, False),
        (SignalType.APP_SESSION, {"subject": " alice"}, False),
        (SignalType.APP_SESSION, {"subject": "al\x00ice"}, False),
        (SignalType.APP_SESSION, {"mood": 1}, False),
        (SignalType.STATUS_VIEWED, {"topic": "Travel"}, False),
    ],
)
def test_the_fast_path_on_the_edges(
    kind: SignalType, changes: dict[str, Any], fast_takes_it: bool | None
) -> None:
    name = kind.value  # as it comes in JSON
    now = timezone.now()
    candidate = {**event(name, "alice"), **changes}
    compiled = signals._COMPILED[name]
    assert compiled is not None

    fast = signals._fast_event(compiled, candidate, now)

    try:
        expected: dict[str, Any] | None = dict(
            signals.EVENT_SCHEMAS[name](context={"now": now}).run_validation(candidate)
        )
    except Exception:
        expected = None
    if fast_takes_it is not None:  # None: depends on the clock (a time a day ago or not)
        assert (fast is not None) is fast_takes_it
    if fast is not None:
        assert fast == expected
