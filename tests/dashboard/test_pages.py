"""The consent pages: your choices, the policy update, history and receipts, your data,
Global Privacy Control, and the queries each page takes."""

from __future__ import annotations

import html
import json

import pytest
from django.test import Client

from ads.models import HiddenAdvertiser
from consent import services
from consent.choices import ActorType, Source
from consent.models import ConsentEvent, ConsentState, PolicyNotice, Subject
from tests.dashboard.conftest import (
    advertiser_with_ad,
    allow,
    send_signals,
    show_ads,
    signed_in_client,
)
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

UA = "Mozilla/5.0 (dashboard test)"


def state(subject: Subject, purpose: str) -> ConsentState:
    return ConsentState.objects.get(subject=subject, purpose__key=purpose)


# --- your choices ----------------------------------------------------------------------------


def test_every_purpose_is_shown_with_what_it_uses_and_never_uses(
    annas_browser: Client, ads_live: None
) -> None:
    body = annas_browser.get("/dashboard/").content.decode()
    for name in (
        "Deliver your messages and calls",
        "Product analytics",
        "Personalised ads in Updates",
        "Share ad data with partners",
    ):
        assert name in body
    assert "Updates-tab activity" in body
    assert "General location" in body
    assert body.count("Never uses: your messages, calls, statuses, contacts or groups.") == 4
    assert body.count("Default in your region.") == 3


def test_an_essential_purpose_is_locked_and_says_why(annas_browser: Client) -> None:
    body = annas_browser.get("/dashboard/").content.decode()
    assert "Always on: the app needs it to work." in body
    assert "without it messages and calls cannot be delivered" in body
    assert 'action="/dashboard/choices/service_delivery"' not in body


def test_a_purpose_blocked_by_age_is_off_and_locked(ads_live: None) -> None:
    teen = SubjectFactory.create(external_id="teen", country="IN", birth_year=2010)
    body = signed_in_client(teen).get("/dashboard/").content.decode()
    assert "Off because of your age." in body
    assert "does not allow this for people of your age" in body
    assert 'action="/dashboard/choices/ads_personalization"' not in body


def test_turning_a_purpose_on_records_a_user_web_event_with_its_proof(
    anna: Subject,
) -> None:
    client = signed_in_client(anna, HTTP_USER_AGENT=UA)
    response = client.post(
        "/dashboard/choices/analytics", {"granted": "true"}, REMOTE_ADDR="203.0.113.77"
    )
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/#purpose-analytics"
    event = ConsentEvent.objects.filter(subject=anna).latest("id")
    assert (event.purpose.key, event.granted, event.source) == ("analytics", True, "user_web")
    assert (event.actor_type, event.actor_id) == (ActorType.SUBJECT, "anna")
    assert event.notice_version is not None
    assert event.notice_version.label == anna.policy_version.label
    assert event.language == "en"
    assert event.ip_truncated == "203.0.113.0/24"
    assert event.user_agent == UA

    page = client.get("/dashboard/").content.decode()
    assert "Saved: “Product analytics” is now on." in page
    assert "Your choice on" in page
    client.post("/dashboard/choices/analytics", {"granted": "false"})
    assert state(anna, "analytics").granted is False


def test_the_script_gets_the_new_card_in_place(annas_browser: Client, anna: Subject) -> None:
    response = annas_browser.post(
        "/dashboard/choices/analytics", {"granted": "true"}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 200
    data = response.json()
    assert data["message"] == "Saved: “Product analytics” is now on."
    assert 'id="purpose-analytics"' in data["html"]
    assert "Turn off “Product analytics”" in data["html"]
    assert state(anna, "analytics").granted is True


@pytest.mark.parametrize(
    ("path", "data", "status", "text"),
    [
        ("/dashboard/choices/service_delivery", {"granted": "false"}, 409, "cannot be changed"),
        ("/dashboard/choices/no_such_purpose", {"granted": "true"}, 404, "Not found"),
        ("/dashboard/choices/analytics", {"granted": "maybe"}, 400, "That did not work"),
        ("/dashboard/choices/analytics", {}, 400, "That did not work"),
        ("/dashboard/choices/ads_cross_account", {"granted": "true"}, 409, "not available yet"),
    ],
)
def test_a_choice_that_cannot_be_made_gets_a_readable_page(
    anna: Subject, annas_browser: Client, path: str, data: dict, status: int, text: str
) -> None:
    events = ConsentEvent.objects.count()
    response = annas_browser.post(path, data)
    assert response.status_code == status
    assert text in response.content.decode()
    assert ConsentEvent.objects.count() == events


def test_an_age_blocked_purpose_cannot_be_turned_on(ads_live: None) -> None:
    teen = SubjectFactory.create(external_id="teen", country="IN", birth_year=2010)
    response = signed_in_client(teen).post(
        "/dashboard/choices/ads_personalization", {"granted": "true"}
    )
    assert response.status_code == 409
    assert state(teen, "ads_personalization").granted is False


def test_pages_only_answer_their_methods(annas_browser: Client) -> None:
    assert annas_browser.get("/dashboard/choices/analytics").status_code == 405
    assert annas_browser.post("/dashboard/history").status_code == 405
    assert annas_browser.delete("/dashboard/").status_code == 405


# --- the policy update ------------------------------------------------------------------------


def test_a_pending_notice_shows_a_banner_and_its_page(
    annas_browser: Client, ads_live: None
) -> None:
    home = annas_browser.get("/dashboard/").content.decode()
    assert "Our privacy policy has changed" in home
    assert "Ads and paid features in the Updates tab" in home
    page = annas_browser.get("/dashboard/policy-update").content.decode()
    assert "What changed" in page
    # Equal choices, none preselected.
    assert page.count('value="true"') == page.count('value="false"') == 2
    assert "checked" not in page


def test_deciding_clears_the_notice(anna: Subject, annas_browser: Client, ads_live: None) -> None:
    response = annas_browser.post(
        "/dashboard/policy-update",
        {"purpose_ads_personalization": "false", "purpose_ads_data_sharing": "true"},
    )
    assert response.status_code == 302
    notice = PolicyNotice.objects.get(subject=anna, version__label="2025-06")
    assert notice.resolved_at is not None
    events = ConsentEvent.objects.filter(subject=anna, source=Source.USER_WEB)
    assert {(e.purpose.key, e.granted) for e in events} == {
        ("ads_personalization", False),
        ("ads_data_sharing", True),
    }
    assert {e.notice_version.label for e in events if e.notice_version} == {"2025-06"}
    home = annas_browser.get("/dashboard/").content.decode()
    assert "Thank you: your decisions are saved." in home
    assert "Our privacy policy has changed" not in home
    assert (
        "There is no policy update waiting for you."
        in annas_browser.get("/dashboard/policy-update").content.decode()
    )


def test_a_notice_needs_every_decision(
    anna: Subject, annas_browser: Client, ads_live: None
) -> None:
    response = annas_browser.post(
        "/dashboard/policy-update", {"purpose_ads_personalization": "true"}
    )
    assert response.status_code == 400
    assert "Choose “Allow” or “Don't allow”." in html.unescape(response.content.decode())
    assert PolicyNotice.objects.get(subject=anna).resolved_at is None
    assert not ConsentEvent.objects.filter(subject=anna, source=Source.USER_WEB).exists()


def test_a_notice_with_nothing_to_decide_is_resolved_by_reading_it(db: None) -> None:
    # A teenager in India: the ads purposes the notice asks about are blocked by age.
    teen = SubjectFactory.create(external_id="teen", country="IN", birth_year=2010)
    publish("2025-06", "IN")
    client = signed_in_client(teen)
    page = client.get("/dashboard/policy-update").content.decode()
    assert "I have read this update" in page
    assert 'type="radio"' not in page
    assert client.post("/dashboard/policy-update", {}).status_code == 302
    assert PolicyNotice.objects.get(subject=teen).resolved_at is not None
    assert not ConsentEvent.objects.filter(subject=teen, source=Source.USER_WEB).exists()


def test_deciding_without_a_notice_says_there_is_none(annas_browser: Client) -> None:
    response = annas_browser.post("/dashboard/policy-update", {})
    assert response.status_code == 200  # nothing pending: the page says so
    assert "There is no policy update waiting for you." in response.content.decode()


def test_a_policy_text_is_public_and_an_unknown_one_is_a_readable_404(db: None) -> None:
    page = Client().get("/dashboard/policy/2025-06")
    assert page.status_code == 200
    assert "Ads and paid features in the Updates tab" in page.content.decode()
    missing = Client().get("/dashboard/policy/1999-01")
    assert missing.status_code == 404
    assert "No such policy version" in missing.content.decode()


# --- history and receipts ----------------------------------------------------------------------


def test_history_lists_events_newest_first_with_receipts(
    anna: Subject, annas_browser: Client
) -> None:
    annas_browser.post("/dashboard/choices/analytics", {"granted": "true"})
    body = annas_browser.get("/dashboard/history").content.decode()
    newest = ConsentEvent.objects.filter(subject=anna).latest("id")
    assert body.index("Your choice on the privacy dashboard") < body.index("Default in your region")
    assert f'href="/dashboard/history/{newest.pk}/receipt"' in body
    assert "2 decisions so far" in body or "decisions so far" in body


def test_a_receipt_downloads_as_json(anna: Subject, annas_browser: Client) -> None:
    annas_browser.post("/dashboard/choices/analytics", {"granted": "true"})
    event = ConsentEvent.objects.filter(subject=anna).latest("id")
    response = annas_browser.get(f"/dashboard/history/{event.pk}/receipt")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"] == (
        f'attachment; filename="consent-receipt-{event.pk}.json"'
    )
    receipt = json.loads(response.content)
    assert receipt["version"] == "KI-CR-v1.1.0"
    assert receipt["piiPrincipalId"] == "anna"
    assert receipt["parley"]["eventId"] == event.pk
    assert receipt["parley"]["source"] == "user_web"


def test_history_is_paged(anna: Subject, annas_browser: Client) -> None:
    for i in range(30):
        annas_browser.post("/dashboard/choices/analytics", {"granted": str(i % 2 == 0).lower()})
    first = annas_browser.get("/dashboard/history").content.decode()
    assert "Page 1 of 2" in first
    second = annas_browser.get("/dashboard/history?page=2").content.decode()
    assert "Page 2 of 2" in second
    assert annas_browser.get("/dashboard/history?page=nonsense").status_code == 200


# --- your data -----------------------------------------------------------------------------------


def test_the_export_holds_everything(anna: Subject, annas_browser: Client, ads_live: None) -> None:
    ad = advertiser_with_ad()
    allow(anna, "ads_personalization", "analytics")
    send_signals(anna, count=2)
    [decision] = show_ads(anna)
    HiddenAdvertiser.objects.create(subject=anna, advertiser=ad.campaign.advertiser)

    response = annas_browser.get("/dashboard/data/export")
    assert response["Content-Disposition"].startswith('attachment; filename="parley-data-')
    data = json.loads(response.content)
    assert data["subject"]["external_id"] == "anna"
    assert data["subject"]["jurisdiction"] == "DE"
    assert {c["purpose"] for c in data["consents"]} >= {"analytics", "ads_personalization"}
    assert len(data["consent_events"]) == ConsentEvent.objects.filter(subject=anna).count()
    assert [n["version"] for n in data["policy_notices"]] == ["2025-06"]
    ads = data["ads"]
    assert len(ads["signals"]) == 3
    assert {s["type"] for s in ads["signals"]} == {"channel_followed", "app_session"}
    assert ads["features"]["channel_topics"] == {"coffee": 2, "football": 2}
    assert ads["features"]["city"] == "Berlin"
    [logged] = ads["ad_decisions"]
    assert logged["id"] == str(decision.pk)
    assert logged["advertiser"] == "Lumen Coffee"
    assert logged["purposes_used"] == ["ads_personalization"]
    assert "channel_topic" in logged["features_used"]
    assert ads["hidden_advertisers"][0]["advertiser"] == "Lumen Coffee"
    assert data["billing"] == {"purchases": []}  # the billing app's part (no purchases)


def test_your_data_page_offers_the_export_and_the_erasure(annas_browser: Client) -> None:
    body = annas_browser.get("/dashboard/data").content.decode()
    assert 'href="/dashboard/data/export"' in body
    assert 'href="/dashboard/ads/erase"' in body


# --- Global Privacy Control ----------------------------------------------------------------------


def test_gpc_is_applied_once_and_shown(anna: Subject, ads_live: None) -> None:
    client = signed_in_client(anna)
    allow(anna, "ads_data_sharing")
    body = client.get("/dashboard/", HTTP_SEC_GPC="1").content.decode()
    assert state(anna, "ads_data_sharing").source == Source.GPC
    assert state(anna, "ads_data_sharing").granted is False
    assert "Global Privacy Control is on" in body
    assert "Off because your browser sends Global Privacy Control." in body
    gpc_events = ConsentEvent.objects.filter(subject=anna, source=Source.GPC).count()
    assert gpc_events == 1

    # A later explicit choice wins, and the next visit with GPC does not undo it.
    client.post("/dashboard/choices/ads_data_sharing", {"granted": "true"}, HTTP_SEC_GPC="1")
    client.get("/dashboard/", HTTP_SEC_GPC="1")
    assert state(anna, "ads_data_sharing").granted is True
    assert ConsentEvent.objects.filter(subject=anna, source=Source.GPC).count() == gpc_events
    assert "Global Privacy Control is on" in client.get("/dashboard/").content.decode()


def test_without_gpc_nothing_is_applied(anna: Subject, annas_browser: Client) -> None:
    body = annas_browser.get("/dashboard/", HTTP_SEC_GPC="0").content.decode()
    assert not ConsentEvent.objects.filter(subject=anna, source=Source.GPC).exists()
    assert "Global Privacy Control is on" not in body


def test_the_well_known_gpc_resource_declares_support(db: None) -> None:
    response = Client().get("/.well-known/gpc.json")
    assert response.status_code == 200
    assert response.json()["gpc"] is True
    assert len(response.json()["lastUpdate"]) == 10


# --- a constant number of queries per page -------------------------------------------------------

# Every page: the session, the subject, the pending notice and its decision purposes.
QUERIES = {
    "/dashboard/": 7,  # + current states, jurisdiction rules, metadata categories
    "/dashboard/policy-update": 6,  # + current states, jurisdiction rules
    "/dashboard/history": 6,  # + count, one page of events
    "/dashboard/data": 4,
    "/dashboard/ads/": 7,  # + purposes, recent ads, hidden advertisers
    "/dashboard/ads/erase": 4,
}


@pytest.mark.parametrize("path", sorted(QUERIES))
@pytest.mark.parametrize("size", [1, 12])
def test_page_queries_do_not_grow_with_the_data(
    anna: Subject, ads_live: None, django_assert_num_queries, path: str, size: int
) -> None:
    advertiser_with_ad()
    allow(anna, "ads_personalization", "analytics")
    for i in range(size):
        services.record_choice(
            external_id="anna",
            purpose_key="analytics",
            granted=i % 2 == 0,
            source=Source.USER_APP,
            actor=services.Actor(ActorType.SUBJECT, "anna"),
        )
    send_signals(anna, count=size)
    show_ads(anna, count=size)
    client = signed_in_client(anna)
    with django_assert_num_queries(QUERIES[path]):
        assert client.get(path).status_code == 200
