"""Behaviour of the consent REST API (`/api/v1/`), as PRODUCT.md describes it.

The personas come from tests/conftest.py: the app back end registers people and
records their choices, the ad server only asks whether it may use data, the policy
tool reads reference data.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from consent.auth import hash_token
from consent.models import ConsentEvent, DashboardLink, IdempotencyRecord, Subject
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

API = "/api/v1"
PROBLEM = "application/problem+json"
PURPOSE_KEYS = [
    "service_delivery",
    "analytics",
    "ads_personalization",
    "ads_data_sharing",
    "ads_cross_account",
]


# --- helpers ---------------------------------------------------------------------------


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with the given status; returns its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0].strip() == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status
    for key in ("type", "title", "detail"):
        assert body[key], key
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


def register(client: APIClient, external_id: str = "alice", **fields: Any) -> Any:
    body = {"external_id": external_id, "country": "DE", **fields}
    return client.post(f"{API}/subjects", body, format="json")


def choose(client: APIClient, external_id: str, purpose: str, **body: Any) -> Any:
    return client.put(
        f"{API}/subjects/{external_id}/consents/{purpose}",
        {"granted": True, **body},
        format="json",
    )


def consents_by_purpose(client: APIClient, external_id: str) -> dict[str, dict[str, Any]]:
    response = client.get(f"{API}/subjects/{external_id}/consents")
    assert response.status_code == 200, response.content
    return {row["purpose"]: row for row in response.json()}


def events_of(external_id: str) -> int:
    return ConsentEvent.objects.filter(subject__external_id=external_id).count()


def warm_up(client: APIClient) -> None:
    """A first request records the token's last use (a write that then stays off the hot
    path for minutes), so the queries of the next request are the steady-state ones."""
    assert client.get(f"{API}/subjects/nobody").status_code in {403, 404}


# --- registering -------------------------------------------------------------------------


def test_register_returns_201_with_jurisdiction_version_and_consents(app_backend):
    response = register(app_backend, "alice", country="de", language="de", birth_year=1990)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["external_id"] == "alice"
    assert body["country"] == "DE"
    assert body["jurisdiction"] == "DE"
    assert body["policy_version"] == "2024-01"
    assert body["birth_year"] == 1990
    assert body["language"] == "de"
    assert body["pending_notice"] is None
    consents = {c["purpose"]: c for c in body["consents"]}
    # On 2024-01 only the baseline purposes are live.
    assert set(consents) == {"service_delivery", "analytics"}
    assert consents["service_delivery"]["allowed"] is True
    assert consents["analytics"]["granted"] is False  # opt-in in Germany
    assert Subject.objects.filter(external_id="alice").exists()


def test_register_resolves_a_us_state_before_its_country(app_backend):
    response = register(app_backend, "bob", country="US", subdivision="us-ca")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["subdivision"] == "US-CA"
    assert body["jurisdiction"] == "US-CA"
    consents = {c["purpose"]: c for c in body["consents"]}
    assert consents["analytics"]["granted"] is True  # opt-out in California


def test_register_twice_is_a_409_problem(app_backend):
    assert register(app_backend, "alice").status_code == 201

    body = assert_problem(register(app_backend, "alice", country="FR"), 409)

    assert "external_id" in error_fields(body)
    assert Subject.objects.get(external_id="alice").country == "DE"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"country": "XX"}, "country"),
        ({"country": "DEU"}, "country"),
        ({"country": "US", "subdivision": "US-ZZ"}, "subdivision"),
        ({"country": "DE", "subdivision": "US-CA"}, "subdivision"),
        ({"language": "not a language"}, "language"),
        ({"birth_year": 1800}, "birth_year"),
        ({"birth_year": timezone.now().year + 1}, "birth_year"),
        ({"birth_year": "nineteen ninety"}, "birth_year"),
        ({"external_id": "x" * 65}, "external_id"),
        ({"external_id": "has/a/slash"}, "external_id"),
    ],
)
def test_register_with_an_invalid_value_is_a_400_naming_the_field(app_backend, fields, field):
    body = {"external_id": "alice", "country": "DE", **fields}

    problem = assert_problem(app_backend.post(f"{API}/subjects", body, format="json"), 400)

    assert field in error_fields(problem)
    assert not Subject.objects.exists()


def test_register_without_a_country_is_a_400_naming_it(app_backend):
    response = app_backend.post(f"{API}/subjects", {"external_id": "alice"}, format="json")

    assert error_fields(assert_problem(response, 400)) == {"country"}


def test_register_with_unknown_fields_is_a_400_naming_each_of_them(app_backend):
    response = register(app_backend, "alice", nickname="Al", email="al@example.com")

    problem = assert_problem(response, 400)
    assert error_fields(problem) == {"email", "nickname"}
    assert "nickname" in problem["detail"]
    assert "email" in problem["detail"]
    assert not Subject.objects.exists()


def test_a_json_array_body_is_a_400_problem(app_backend):
    response = app_backend.post(
        f"{API}/subjects", [{"external_id": "alice", "country": "DE"}], format="json"
    )

    assert_problem(response, 400)
    assert not Subject.objects.exists()


def test_invalid_json_is_a_400_problem(app_backend):
    response = app_backend.post(
        f"{API}/subjects", data='{"external_id": "alice",', content_type="application/json"
    )

    assert_problem(response, 400)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", "external_id=alice&country=DE"),
        ("text/plain", '{"external_id": "alice", "country": "DE"}'),
    ],
)
def test_a_body_that_is_not_json_is_a_415_problem(app_backend, content_type, data):
    response = app_backend.post(f"{API}/subjects", data=data, content_type=content_type)

    assert_problem(response, 415)
    assert not Subject.objects.exists()


# --- reading a subject ------------------------------------------------------------------


def test_get_unknown_subject_is_a_404_problem(ad_server):
    assert_problem(ad_server.get(f"{API}/subjects/nobody"), 404)


def test_pending_notice_appears_on_publish_and_goes_after_decisions_and_acknowledgement(
    app_backend, ad_server
):
    SubjectFactory.create(external_id="alice", country="DE")
    assert ad_server.get(f"{API}/subjects/alice").json()["pending_notice"] is None

    assert publish("2025-06", "DE") == 1

    subject = ad_server.get(f"{API}/subjects/alice").json()
    assert subject["policy_version"] == "2025-06"
    notice = subject["pending_notice"]
    assert notice["version"] == "2025-06"
    assert notice["material"] is True
    assert notice["requires_decision"] is True
    assert sorted(notice["decision_purposes"]) == ["ads_data_sharing", "ads_personalization"]

    # Germany asks for a fresh decision: reading the notice alone is not enough.
    assert_problem(app_backend.post(f"{API}/subjects/alice/notice/acknowledge"), 409)
    assert ad_server.get(f"{API}/subjects/alice").json()["pending_notice"] is not None

    assert choose(app_backend, "alice", "ads_personalization", granted=True).status_code == 200
    assert choose(app_backend, "alice", "ads_data_sharing", granted=False).status_code == 200
    response = app_backend.post(f"{API}/subjects/alice/notice/acknowledge")

    assert response.status_code == 200, response.content
    assert response.json()["pending_notice"] is None
    assert ad_server.get(f"{API}/subjects/alice").json()["pending_notice"] is None
    # Nothing is pending any more.
    assert_problem(app_backend.post(f"{API}/subjects/alice/notice/acknowledge"), 404)


# --- changing a subject ----------------------------------------------------------------


def test_moving_a_californian_to_germany_re_evaluates_the_defaults(app_backend):
    SubjectFactory.create(external_id="carla", country="US", subdivision="US-CA")
    assert consents_by_purpose(app_backend, "carla")["analytics"]["granted"] is True

    response = app_backend.patch(f"{API}/subjects/carla", {"country": "DE"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["country"] == "DE"
    assert body["subdivision"] == ""  # a subdivision never outlives its country
    assert body["jurisdiction"] == "DE"
    analytics = consents_by_purpose(app_backend, "carla")["analytics"]
    assert analytics["granted"] is False  # opt-in in Germany
    assert analytics["allowed"] is False
    assert analytics["source"] == "jurisdiction_change"
    newest = app_backend.get(f"{API}/subjects/carla/events").json()["results"][0]
    assert newest["jurisdiction"] == "DE"
    assert newest["source"] == "jurisdiction_change"


def test_moving_keeps_an_explicit_choice_the_new_rules_allow(app_backend):
    SubjectFactory.create(external_id="carla", country="US", subdivision="US-CA")
    assert choose(app_backend, "carla", "analytics", granted=True).status_code == 200

    response = app_backend.patch(f"{API}/subjects/carla", {"country": "DE"}, format="json")

    assert response.status_code == 200, response.content
    analytics = consents_by_purpose(app_backend, "carla")["analytics"]
    assert analytics["granted"] is True
    assert analytics["source"] == "user_app"


def test_patch_cannot_change_the_external_id(app_backend):
    SubjectFactory.create(external_id="alice")

    response = app_backend.patch(
        f"{API}/subjects/alice", {"external_id": "mallory", "language": "fr"}, format="json"
    )

    assert "external_id" in error_fields(assert_problem(response, 400))
    subject = Subject.objects.get(external_id="alice")
    assert subject.language == "en"
    assert not Subject.objects.filter(external_id="mallory").exists()


def test_patch_with_birth_year_null_clears_it(app_backend):
    SubjectFactory.create(external_id="alice", birth_year=1990)

    response = app_backend.patch(f"{API}/subjects/alice", {"birth_year": None}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["birth_year"] is None
    assert Subject.objects.get(external_id="alice").birth_year is None


def test_patch_without_birth_year_keeps_it(app_backend):
    SubjectFactory.create(external_id="alice", birth_year=1990)

    response = app_backend.patch(f"{API}/subjects/alice", {"language": "fr"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["birth_year"] == 1990
    assert response.json()["language"] == "fr"


def test_patch_with_an_invalid_or_unknown_field_changes_nothing(app_backend):
    SubjectFactory.create(external_id="alice")

    bad_country = app_backend.patch(f"{API}/subjects/alice", {"country": "XX"}, format="json")
    unknown = app_backend.patch(
        f"{API}/subjects/alice", {"language": "fr", "colour": "red"}, format="json"
    )

    assert "country" in error_fields(assert_problem(bad_country, 400))
    assert error_fields(assert_problem(unknown, 400)) == {"colour"}
    subject = Subject.objects.get(external_id="alice")
    assert (subject.country, subject.language) == ("DE", "en")


def test_patch_unknown_subject_is_a_404_problem(app_backend):
    assert_problem(
        app_backend.patch(f"{API}/subjects/nobody", {"language": "fr"}, format="json"), 404
    )


# --- erasure ---------------------------------------------------------------------------


def test_delete_erases_and_the_id_can_be_registered_again(app_backend):
    SubjectFactory.create(external_id="alice")

    response = app_backend.delete(f"{API}/subjects/alice")

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(app_backend.get(f"{API}/subjects/alice"), 404)
    assert_problem(app_backend.get(f"{API}/subjects/alice/consents"), 404)
    assert_problem(app_backend.delete(f"{API}/subjects/alice"), 404)
    again = register(app_backend, "alice", country="FR")
    assert again.status_code == 201, again.content
    assert again.json()["jurisdiction"] == "FR"


# --- consents -------------------------------------------------------------------------------


def test_consents_give_allowed_reason_and_source_per_purpose(ad_server):
    SubjectFactory.create(external_id="alice", country="DE")

    consents = consents_by_purpose(ad_server, "alice")

    assert list(consents) == ["service_delivery", "analytics"]  # display order
    assert consents["service_delivery"]["allowed"] is True
    assert consents["service_delivery"]["reason"] is None
    assert consents["service_delivery"]["locked"] == "essential"
    assert consents["analytics"]["allowed"] is False
    assert consents["analytics"]["reason"] == "denied"
    assert consents["analytics"]["source"] == "rollout_default"
    for row in consents.values():
        assert row["policy_version"] == "2024-01"
        assert {"granted", "allowed", "reason", "source", "updated_at"} <= row.keys()


def test_consents_of_a_child_are_age_restricted(ad_server):
    SubjectFactory.create(external_id="kid", country="DE", birth_year=timezone.now().year - 10)

    analytics = consents_by_purpose(ad_server, "kid")["analytics"]

    assert analytics["allowed"] is False
    assert analytics["reason"] == "age_restricted"
    assert analytics["locked"] == "age_restricted"


def test_consents_of_an_unknown_subject_is_a_404_problem(ad_server):
    assert_problem(ad_server.get(f"{API}/subjects/nobody/consents"), 404)


def test_put_consent_records_a_user_app_event(app_backend):
    SubjectFactory.create(external_id="alice", country="DE")
    before = events_of("alice")

    response = choose(app_backend, "alice", "analytics", granted=True)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["purpose"] == "analytics"
    assert body["granted"] is True
    assert body["allowed"] is True
    assert body["source"] == "user_app"
    assert body["explicit"] is True
    assert events_of("alice") == before + 1
    newest = app_backend.get(f"{API}/subjects/alice/events").json()["results"][0]
    assert newest["purpose"] == "analytics"
    assert newest["granted"] is True
    assert newest["source"] == "user_app"
    assert newest["actor_type"] == "service"
    assert newest["actor_id"] == "service:app-backend"
    assert consents_by_purpose(app_backend, "alice")["analytics"]["granted"] is True


def test_put_consent_for_an_unknown_purpose_or_subject_is_a_404(app_backend):
    SubjectFactory.create(external_id="alice")

    assert_problem(choose(app_backend, "alice", "mind_reading"), 404)
    assert_problem(choose(app_backend, "nobody", "analytics"), 404)
    assert events_of("alice") == 2


def test_put_consent_on_the_essential_purpose_is_a_409(app_backend):
    SubjectFactory.create(external_id="alice")

    assert_problem(choose(app_backend, "alice", "service_delivery", granted=False), 409)
    assert consents_by_purpose(app_backend, "alice")["service_delivery"]["granted"] is True


def test_put_consent_on_a_purpose_not_yet_live_is_a_409(app_backend):
    SubjectFactory.create(external_id="alice")  # on 2024-01: the ads purposes are not live yet

    assert_problem(choose(app_backend, "alice", "ads_personalization"), 409)
    assert "ads_personalization" not in consents_by_purpose(app_backend, "alice")


def test_put_consent_that_an_age_rule_forbids_is_a_409(app_backend):
    SubjectFactory.create(external_id="kid", country="DE", birth_year=timezone.now().year - 10)

    assert_problem(choose(app_backend, "kid", "analytics", granted=True), 409)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gpc": False}, "granted"),
        ({"granted": "perhaps"}, "granted"),
        ({"granted": True, "because": "why not"}, "because"),
        ({"granted": True, "proof": {"colour": "red"}}, "proof.colour"),
        ({"granted": True, "proof": {"ip": "not-an-ip"}}, "proof.ip"),
        ({"granted": True, "proof": {"notice_version": "1999-01"}}, "proof.notice_version"),
    ],
)
def test_put_consent_with_an_invalid_body_is_a_400_naming_the_field(app_backend, body, field):
    SubjectFactory.create(external_id="alice")

    response = app_backend.put(f"{API}/subjects/alice/consents/analytics", body, format="json")

    assert field in error_fields(assert_problem(response, 400))
    assert events_of("alice") == 2


def test_put_consent_with_gpc_opts_out_of_sharing_before_the_choice(app_backend):
    publish("2025-06", "US-CA")
    SubjectFactory.create(external_id="carla", country="US", subdivision="US-CA")
    assert consents_by_purpose(app_backend, "carla")["ads_data_sharing"]["granted"] is True

    response = choose(app_backend, "carla", "ads_personalization", granted=True, gpc=True)

    assert response.status_code == 200, response.content
    consents = consents_by_purpose(app_backend, "carla")
    assert consents["ads_data_sharing"]["granted"] is False
    assert consents["ads_data_sharing"]["source"] == "gpc"
    assert consents["ads_data_sharing"]["reason"] == "gpc"
    assert consents["ads_personalization"]["granted"] is True  # not a sale/sharing purpose
    assert app_backend.get(f"{API}/subjects/carla").json()["gpc_signalled_at"] is not None


def test_gpc_in_the_same_request_does_not_undo_the_explicit_choice(app_backend):
    publish("2025-06", "US-CA")
    SubjectFactory.create(external_id="carla", country="US", subdivision="US-CA")

    response = choose(app_backend, "carla", "ads_data_sharing", granted=True, gpc=True)

    assert response.status_code == 200, response.content
    assert response.json()["granted"] is True
    assert response.json()["source"] == "user_app"


@pytest.mark.parametrize(
    ("ip", "network"),
    [("203.0.113.77", "203.0.113.0/24"), ("2001:db8:1234:5678::1", "2001:db8:1234::/48")],
)
def test_put_consent_stores_proof_with_the_ip_truncated(app_backend, ip, network):
    SubjectFactory.create(external_id="alice")
    proof = {
        "ip": ip,
        "notice_version": "2024-01",
        "language": "de-DE",
        "user_agent": "ParleyApp/5.1 (Android 15)",
    }

    response = choose(app_backend, "alice", "analytics", granted=True, proof=proof)

    assert response.status_code == 200, response.content
    event = ConsentEvent.objects.filter(subject__external_id="alice").latest("id")
    assert event.ip_truncated == network
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(event.ip_truncated)
    assert event.notice_version is not None
    assert event.notice_version.label == "2024-01"
    assert event.language == "de-DE"
    assert event.user_agent == "ParleyApp/5.1 (Android 15)"
    stored = ConsentEvent.objects.filter(pk=event.pk).values().get()
    assert not any(ip in str(value) for value in stored.values())
    listed = app_backend.get(f"{API}/subjects/alice/events").json()["results"][0]
    assert listed["ip_truncated"] == network
    assert listed["notice_version"] == "2024-01"


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_first_response(app_backend):
    SubjectFactory.create(external_id="alice")
    before = events_of("alice")

    first = app_backend.put(
        f"{API}/subjects/alice/consents/analytics",
        {"granted": True},
        format="json",
        HTTP_IDEMPOTENCY_KEY="choice-1",
    )
    second = app_backend.put(
        f"{API}/subjects/alice/consents/analytics",
        {"granted": True},
        format="json",
        HTTP_IDEMPOTENCY_KEY="choice-1",
    )

    assert first.status_code == 200, first.content
    assert "Idempotent-Replayed" not in first
    assert second.status_code == first.status_code
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert events_of("alice") == before + 1


def test_same_idempotency_key_with_another_body_is_a_422(app_backend):
    SubjectFactory.create(external_id="alice")
    url = f"{API}/subjects/alice/consents/analytics"
    first = app_backend.put(url, {"granted": True}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert first.status_code == 200

    response = app_backend.put(url, {"granted": False}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert_problem(response, 422)
    assert events_of("alice") == 3
    assert consents_by_purpose(app_backend, "alice")["analytics"]["granted"] is True


def test_same_idempotency_key_on_another_path_is_a_422(app_backend):
    SubjectFactory.create(external_id="alice")
    SubjectFactory.create(external_id="bob")
    body = {"granted": True}
    first = app_backend.put(
        f"{API}/subjects/alice/consents/analytics", body, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert first.status_code == 200, first.content

    response = app_backend.put(
        f"{API}/subjects/bob/consents/analytics", body, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    assert_problem(response, 422)
    assert consents_by_purpose(app_backend, "bob")["analytics"]["granted"] is False


def test_an_idempotency_key_belongs_to_one_service_account(app_backend, api_client):
    other_service = api_client("consent:read", "consent:write", name="web-backend")
    SubjectFactory.create(external_id="alice")
    url = f"{API}/subjects/alice/consents/analytics"

    first = app_backend.put(url, {"granted": True}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    second = other_service.put(url, {"granted": False}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert first.status_code == 200, first.content
    assert second.status_code == 200, second.content
    assert "Idempotent-Replayed" not in second
    assert second.json()["granted"] is False
    assert events_of("alice") == 4
    assert IdempotencyRecord.objects.filter(key="k").count() == 2


def test_a_failed_request_is_not_remembered_under_its_idempotency_key(app_backend):
    SubjectFactory.create(external_id="alice")
    url = f"{API}/subjects/alice/consents/ads_personalization"

    refused = app_backend.put(url, {"granted": True}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert_problem(refused, 409)
    assert not IdempotencyRecord.objects.filter(key="k").exists()


# --- events ---------------------------------------------------------------------------------


def _subject_with_events(client: APIClient, external_id: str, choices: int) -> list[int]:
    SubjectFactory.create(external_id=external_id)
    for index in range(choices):
        assert choose(client, external_id, "analytics", granted=index % 2 == 0).status_code == 200
    return list(
        ConsentEvent.objects.filter(subject__external_id=external_id)
        .order_by("-id")
        .values_list("id", flat=True)
    )


def test_events_are_paginated_newest_first_without_duplicates(app_backend):
    expected = _subject_with_events(app_backend, "alice", choices=7)  # 2 + 7 events
    assert len(expected) == 9

    seen: list[int] = []
    pages = 0
    url: str | None = f"{API}/subjects/alice/events?limit=2"
    while url:
        response = app_backend.get(url)
        assert response.status_code == 200, response.content
        page = response.json()
        assert len(page["results"]) <= 2
        seen.extend(event["id"] for event in page["results"])
        url = page["next"]
        pages += 1
        assert pages <= 10, "the next links never end"

    assert pages == 5
    assert seen == expected  # newest first, every event once
    assert len(set(seen)) == len(seen)


def test_events_limit_and_default_page(app_backend):
    expected = _subject_with_events(app_backend, "alice", choices=3)

    one = app_backend.get(f"{API}/subjects/alice/events?limit=1").json()
    everything = app_backend.get(f"{API}/subjects/alice/events").json()

    assert [e["id"] for e in one["results"]] == expected[:1]
    assert one["next"] is not None
    assert one["previous"] is None
    assert [e["id"] for e in everything["results"]] == expected
    assert everything["next"] is None


def test_events_of_another_subject_are_not_listed(app_backend):
    mine = _subject_with_events(app_backend, "alice", choices=1)
    _subject_with_events(app_backend, "bob", choices=2)

    listed = app_backend.get(f"{API}/subjects/alice/events").json()["results"]

    assert [e["id"] for e in listed] == mine


def test_events_with_a_bad_cursor_or_unknown_subject_are_problems(app_backend):
    SubjectFactory.create(external_id="alice")

    assert_problem(app_backend.get(f"{API}/subjects/nobody/events"), 404)
    bad_cursor = app_backend.get(f"{API}/subjects/alice/events?cursor=garbage")
    assert bad_cursor.status_code == 400
    assert_problem(bad_cursor, bad_cursor.status_code)


# --- receipts ---------------------------------------------------------------------------------


def test_receipt_has_the_kantara_fields(app_backend):
    SubjectFactory.create(external_id="alice", country="DE", language="de")
    choose(app_backend, "alice", "analytics", granted=True, proof={"notice_version": "2024-01"})
    event = ConsentEvent.objects.filter(subject__external_id="alice").latest("id")

    response = app_backend.get(f"{API}/subjects/alice/events/{event.pk}/receipt")

    assert response.status_code == 200, response.content
    receipt = response.json()
    assert receipt["version"] == "KI-CR-v1.1.0"
    assert receipt["jurisdiction"] == "DE"
    assert receipt["consentTimestamp"] == int(event.occurred_at.timestamp())
    assert receipt["collectionMethod"]
    uuid.UUID(receipt["consentReceiptID"])
    assert receipt["publicKey"] is None
    assert receipt["language"] == "de"
    assert receipt["piiPrincipalId"] == "alice"
    assert receipt["piiControllers"][0]["piiController"]
    assert "2024-01" in receipt["policyUrl"]
    assert receipt["sensitive"] is False
    assert receipt["spiCat"] == []
    [service] = receipt["services"]
    [purpose] = service["purposes"]
    assert purpose["purposeCategory"] == ["analytics"]
    assert purpose["consentType"] == "EXPLICIT"
    assert sorted(purpose["piiCategory"]) == ["app_usage", "message_timing"]
    assert receipt["parley"]["eventId"] == event.pk
    assert receipt["parley"]["granted"] is True
    assert receipt["parley"]["source"] == "user_app"
    assert receipt["parley"]["noticeVersion"] == "2024-01"


def test_receipts_differ_per_event_and_defaults_are_implicit(app_backend):
    SubjectFactory.create(external_id="alice")
    first, second = ConsentEvent.objects.filter(subject__external_id="alice").order_by("id")

    one = app_backend.get(f"{API}/subjects/alice/events/{first.pk}/receipt").json()
    two = app_backend.get(f"{API}/subjects/alice/events/{second.pk}/receipt").json()

    assert one["consentReceiptID"] != two["consentReceiptID"]
    assert one["services"][0]["purposes"][0]["consentType"] == "IMPLICIT"


def test_receipt_for_another_subjects_event_is_a_404(app_backend):
    SubjectFactory.create(external_id="alice")
    SubjectFactory.create(external_id="bob")
    bobs_event = ConsentEvent.objects.filter(subject__external_id="bob").latest("id")

    assert_problem(app_backend.get(f"{API}/subjects/alice/events/{bobs_event.pk}/receipt"), 404)
    assert_problem(app_backend.get(f"{API}/subjects/alice/events/999999999/receipt"), 404)
    assert app_backend.get(f"{API}/subjects/bob/events/{bobs_event.pk}/receipt").status_code == 200


# --- consent checks -----------------------------------------------------------------------------


def check(client: APIClient, purpose: str, subjects: list[str]) -> Any:
    return client.post(
        f"{API}/consent-checks", {"purpose": purpose, "subjects": subjects}, format="json"
    )


def test_consent_checks_answer_in_input_order_with_reasons(app_backend, ad_server):
    publish("2025-06", "US-CA")
    for name in ("ok", "refused", "opted-out"):
        SubjectFactory.create(external_id=name, country="US", subdivision="US-CA")
    SubjectFactory.create(
        external_id="child", country="US", subdivision="US-CA", birth_year=timezone.now().year - 5
    )
    SubjectFactory.create(external_id="berliner", country="DE")  # still on 2024-01
    assert choose(app_backend, "refused", "ads_data_sharing", granted=False).status_code == 200
    assert choose(app_backend, "opted-out", "analytics", gpc=True).status_code == 200
    asked = ["opted-out", "ghost", "ok", "berliner", "child", "refused", "ok"]

    response = check(ad_server, "ads_data_sharing", asked)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["purpose"] == "ads_data_sharing"
    assert [(r["subject"], r["allowed"], r["reason"]) for r in body["results"]] == [
        ("opted-out", False, "gpc"),
        ("ghost", False, "unknown_subject"),
        ("ok", True, None),
        ("berliner", False, "not_live"),
        ("child", False, "age_restricted"),
        ("refused", False, "denied"),
        ("ok", True, None),
    ]


def test_consent_checks_never_allow_an_erased_subject(app_backend, ad_server):
    SubjectFactory.create(external_id="alice", country="US", subdivision="US-CA")
    assert check(ad_server, "analytics", ["alice"]).json()["results"][0]["allowed"] is True
    assert app_backend.delete(f"{API}/subjects/alice").status_code == 204

    [result] = check(ad_server, "analytics", ["alice"]).json()["results"]

    assert (result["allowed"], result["reason"]) == (False, "unknown_subject")


def test_consent_checks_accept_1000_ids_and_refuse_1001(ad_server):
    ids = [f"user-{n}" for n in range(1001)]

    accepted = check(ad_server, "analytics", ids[:1000])
    refused = check(ad_server, "analytics", ids)

    assert accepted.status_code == 200, accepted.content
    assert len(accepted.json()["results"]) == 1000
    assert "subjects" in error_fields(assert_problem(refused, 400))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"purpose": "analytics", "subjects": []}, "subjects"),
        ({"purpose": "analytics"}, "subjects"),
        ({"subjects": ["alice"]}, "purpose"),
        ({"purpose": "analytics", "subjects": "alice"}, "subjects"),
        ({"purpose": "analytics", "subjects": ["alice"], "fast": True}, "fast"),
    ],
)
def test_consent_checks_with_an_invalid_body_are_a_400(ad_server, body, field):
    response = ad_server.post(f"{API}/consent-checks", body, format="json")

    assert field in error_fields(assert_problem(response, 400))


def test_consent_check_for_an_unknown_purpose_is_a_problem(ad_server):
    SubjectFactory.create(external_id="alice")

    response = check(ad_server, "mind_reading", ["alice"])

    body = assert_problem(response, 404)
    assert "mind_reading" in body["detail"]
    assert error_fields(body) == {"purpose"}


def test_consent_checks_take_the_same_queries_for_1_and_200_subjects(
    ad_server, django_assert_num_queries
):
    ids = [SubjectFactory.create(country="US", subdivision="US-CA").external_id for _ in range(200)]
    warm_up(ad_server)

    # the check itself, which reads the purpose too (the token is cached since the
    # warm-up)
    with django_assert_num_queries(1):
        one = check(ad_server, "analytics", ids[:1])
    with django_assert_num_queries(1):
        many = check(ad_server, "analytics", ids)

    assert one.status_code == many.status_code == 200
    assert [r["allowed"] for r in many.json()["results"]] == [True] * 200


# --- dashboard links ---------------------------------------------------------------------------


def test_dashboard_link_is_single_use_url_that_expires_in_minutes(app_backend):
    SubjectFactory.create(external_id="alice")
    before = timezone.now()

    response = app_backend.post(f"{API}/subjects/alice/dashboard-links")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"url", "expires_at"}
    assert body["url"].startswith(f"{settings.PUBLIC_BASE_URL}/dashboard/login/")
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert timedelta(0) < expires_at - before <= timedelta(minutes=15)
    assert abs((expires_at - before) - settings.DASHBOARD_LINK_TTL) < timedelta(minutes=1)
    link = DashboardLink.objects.get()
    assert link.subject.external_id == "alice"
    assert link.issued_by is not None
    assert link.issued_by.name == "app-backend"


def test_two_dashboard_links_differ(app_backend):
    SubjectFactory.create(external_id="alice")

    first = app_backend.post(f"{API}/subjects/alice/dashboard-links").json()["url"]
    second = app_backend.post(f"{API}/subjects/alice/dashboard-links").json()["url"]

    assert first != second
    assert DashboardLink.objects.count() == 2


def test_only_the_hash_of_a_dashboard_link_is_stored(app_backend):
    SubjectFactory.create(external_id="alice")

    url = app_backend.post(f"{API}/subjects/alice/dashboard-links").json()["url"]

    raw = url.rstrip("/").rsplit("/", 1)[1]
    assert len(raw) >= 32
    assert not DashboardLink.objects.filter(token_hash=raw).exists()
    assert DashboardLink.objects.filter(token_hash=hash_token(raw)).exists()
    for row in DashboardLink.objects.values():
        assert not any(raw in str(value) for value in row.values())


def test_dashboard_link_for_an_unknown_subject_is_a_404(app_backend):
    assert_problem(app_backend.post(f"{API}/subjects/nobody/dashboard-links"), 404)
    assert not DashboardLink.objects.exists()


# --- reference data -------------------------------------------------------------------------


def test_purposes_are_listed_with_their_categories(policy_tool):
    response = policy_tool.get(f"{API}/purposes")

    assert response.status_code == 200, response.content
    purposes = {p["key"]: p for p in response.json()}
    assert [p["key"] for p in response.json()] == PURPOSE_KEYS
    assert {k: sorted(c["key"] for c in p["categories"]) for k, p in purposes.items()} == {
        "service_delivery": ["contact_info", "message_timing"],
        "analytics": ["app_usage", "message_timing"],
        "ads_personalization": [
            "age_band",
            "coarse_location",
            "device_language",
            "updates_activity",
        ],
        "ads_data_sharing": ["ad_interactions", "updates_activity"],
        "ads_cross_account": ["accounts_center"],
    }
    assert all(c["name"] for p in purposes.values() for c in p["categories"])
    assert purposes["service_delivery"]["essential"] is True
    assert purposes["ads_data_sharing"]["gpc_applies"] is True
    assert purposes["ads_cross_account"]["introduced_in"] == "2026-01"


def test_purposes_take_a_fixed_number_of_queries(policy_tool, django_assert_num_queries):
    warm_up(policy_tool)

    # purposes with their version, their categories (the token is cached)
    with django_assert_num_queries(2):
        response = policy_tool.get(f"{API}/purposes")

    assert response.status_code == 200


@pytest.mark.parametrize("code", ["DE", "de"])
def test_jurisdiction_by_code_in_any_case(policy_tool, code):
    response = policy_tool.get(f"{API}/jurisdictions/{code}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["code"] == "DE"
    assert body["kind"] == "country"
    assert body["consent_age"] == 16
    assert body["current_policy_version"] == "2024-01"
    rules = {r["purpose"]: r["mechanism"] for r in body["rules"]}
    assert rules == {
        "service_delivery": "always_on",
        "analytics": "opt_in",
        "ads_personalization": "opt_in",
        "ads_data_sharing": "opt_in",
        "ads_cross_account": "opt_in",
    }


def test_jurisdiction_of_a_us_state(policy_tool):
    body = policy_tool.get(f"{API}/jurisdictions/US-CA").json()

    assert body["code"] == "US-CA"
    assert body["kind"] == "subdivision"
    assert body["opt_in_below_age"] == 16
    assert body["gpc_required"] is True
    assert {r["purpose"]: r["mechanism"] for r in body["rules"]}["ads_data_sharing"] == "opt_out"


def test_default_jurisdiction(policy_tool):
    response = policy_tool.get(f"{API}/jurisdictions/DEFAULT")

    assert response.status_code == 200, response.content
    assert response.json()["code"] == "DEFAULT"
    assert response.json()["kind"] == "default"


def test_unknown_jurisdiction_is_a_404_problem(policy_tool):
    body = assert_problem(policy_tool.get(f"{API}/jurisdictions/XX"), 404)

    assert "XX" in body["detail"]


def test_an_unknown_api_path_is_a_404_problem(app_backend):
    assert_problem(app_backend.get(f"{API}/no-such-thing"), 404)
