"""Who can reach the dashboard, and whose data a session reaches: only its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ads.models import HiddenAdvertiser
from consent import services
from consent.choices import Source
from consent.dashboard import SESSION_KEY
from consent.models import ConsentEvent, ConsentState, DashboardLink, Subject
from tests.dashboard.conftest import (
    PASSWORD,
    advertiser_with_ad,
    allow,
    link_path,
    show_ads,
    signed_in_client,
    with_login,
)
from tests.factories import TEST_ACTOR

pytestmark = pytest.mark.django_db

# Every page of a signed-in subject, and every form (path, method).
PAGES = [
    "/dashboard/",
    "/dashboard/policy-update",
    "/dashboard/history",
    "/dashboard/data",
    "/dashboard/data/export",
    "/dashboard/ads/",
    "/dashboard/ads/erase",
]
FORMS = [
    "/dashboard/choices/analytics",
    "/dashboard/policy-update",
    "/dashboard/ads/hide",
    "/dashboard/ads/hidden/1/show",
    "/dashboard/ads/erase",
]


# --- the single-use link ---------------------------------------------------------------


def test_opening_a_link_asks_to_continue_and_does_not_use_it_up(anna: Subject) -> None:
    client = Client()
    path = link_path(anna)
    response = client.get(path)
    assert response.status_code == 200
    assert "Continue to your privacy dashboard" in response.content.decode()
    assert SESSION_KEY not in client.session
    assert DashboardLink.objects.get().used_at is None


def test_a_link_signs_its_subject_in_once(anna: Subject) -> None:
    client = Client()
    path = link_path(anna)
    response = client.post(path)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard-home")
    assert client.session[SESSION_KEY] == anna.pk
    assert client.get("/dashboard/").status_code == 200

    again = Client()
    for response in (again.post(path), again.get(path)):
        assert response.status_code == 410
        assert "This link has already been used" in response.content.decode()
    assert SESSION_KEY not in again.session


def test_an_expired_link_gets_a_clear_page(anna: Subject) -> None:
    path = link_path(anna)
    DashboardLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    client = Client()
    response = client.post(path)
    assert response.status_code == 410
    assert "This link has expired" in response.content.decode()
    assert SESSION_KEY not in client.session


@pytest.mark.parametrize("token", ["tampered", "x" * 200, "%00", "a b", "prl_" + "A" * 43], ids=str)
def test_a_tampered_link_gets_a_clear_page(anna: Subject, token: str) -> None:
    path = link_path(anna)
    client = Client()
    for method in (client.get, client.post):
        response = method(f"/dashboard/login/{token}")
        assert response.status_code == 404
        assert "This link does not work" in response.content.decode()
    # One character changed in a real link is just as unknown.
    real = path.rsplit("/", 1)[1]
    forged = real[:-1] + ("A" if real[-1] != "A" else "B")
    assert client.post(f"/dashboard/login/{forged}").status_code == 404
    assert SESSION_KEY not in client.session


def test_an_address_that_is_no_page_gets_a_readable_page(db: None) -> None:
    response = Client().get("/dashboard/login/../../nothing/here")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_a_link_of_an_erased_subject_does_not_sign_in(anna: Subject) -> None:
    path = link_path(anna)
    services.erase_subject(external_id=anna.external_id, actor=TEST_ACTOR)
    assert Client().post(path).status_code == 404


def test_signing_in_starts_a_new_short_session(anna: Subject) -> None:
    client = Client()
    session = client.session
    session["planted"] = "by someone else"
    session.save()
    before = session.session_key
    client.post(link_path(anna))
    assert client.session.session_key != before
    assert 0 < client.session.get_expiry_age() <= 30 * 60


def test_the_session_cookie_is_secure_httponly_and_same_site(anna: Subject, settings) -> None:
    settings.SESSION_COOKIE_SECURE = True
    client = Client()
    response = client.post(link_path(anna), secure=True)
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert 0 < int(cookie["max-age"]) <= 30 * 60


# --- the demo password -----------------------------------------------------------------


def test_a_subject_with_a_login_signs_in_with_the_password(anna: Subject) -> None:
    with_login(anna)
    client = Client()
    response = client.post(
        "/dashboard/signin", {"username": anna.external_id, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == anna.pk


def test_a_wrong_password_is_refused_readably(anna: Subject) -> None:
    with_login(anna)
    client = Client()
    response = client.post("/dashboard/signin", {"username": anna.external_id, "password": "no"})
    assert response.status_code == 400
    assert "The account id or password is not right." in response.content.decode()
    assert SESSION_KEY not in client.session


def test_an_account_without_a_subject_has_no_dashboard(db: None) -> None:
    User.objects.create_user("staff-only", password=PASSWORD, is_staff=True)
    client = Client()
    response = client.post("/dashboard/signin", {"username": "staff-only", "password": PASSWORD})
    assert response.status_code == 400
    assert SESSION_KEY not in client.session


def test_sign_ins_are_rate_limited(anna: Subject, settings) -> None:
    with_login(anna)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/dashboard/signin", {"username": anna.external_id, "password": "guess"})
    # Even the right password is refused now, with a readable page.
    response = client.post(
        "/dashboard/signin", {"username": anna.external_id, "password": PASSWORD}
    )
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.content.decode()
    assert SESSION_KEY not in client.session


def test_a_success_before_the_limit_resets_the_count(anna: Subject, settings) -> None:
    with_login(anna)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        Client().post("/dashboard/signin", {"username": anna.external_id, "password": "guess"})
    ok = {"username": anna.external_id, "password": PASSWORD}
    assert Client().post("/dashboard/signin", ok).status_code == 302
    Client().post("/dashboard/signin", {"username": anna.external_id, "password": "guess"})
    assert Client().post("/dashboard/signin", ok).status_code == 302


# --- signing out and signed-out visitors -------------------------------------------------


def test_signing_out_ends_the_session(annas_browser: Client) -> None:
    assert annas_browser.get("/dashboard/signout").status_code == 405
    response = annas_browser.post("/dashboard/signout")
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard-signed-out")
    assert SESSION_KEY not in annas_browser.session
    assert annas_browser.get("/dashboard/").status_code == 302
    assert "You are signed out" in annas_browser.get("/dashboard/signed-out").content.decode()


@pytest.mark.parametrize("path", PAGES)
def test_a_visitor_without_a_session_is_sent_to_sign_in(db: None, path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard-signin")


@pytest.mark.parametrize("path", FORMS)
def test_a_form_without_a_session_changes_nothing(anna: Subject, path: str) -> None:
    events = ConsentEvent.objects.count()
    response = Client().post(path, {"granted": "true"})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard-signin")
    assert ConsentEvent.objects.count() == events


def test_an_erased_subjects_session_reaches_nothing(anna: Subject, annas_browser: Client) -> None:
    services.erase_subject(external_id=anna.external_id, actor=TEST_ACTOR)
    for path in PAGES:
        assert annas_browser.get(path).status_code == 302


@pytest.mark.parametrize("path", PAGES)
def test_dashboard_pages_are_never_cached(annas_browser: Client, path: str) -> None:
    cache_control = annas_browser.get(path)["Cache-Control"]
    assert "no-store" in cache_control
    assert "private" in cache_control


# --- CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*FORMS, "/dashboard/signout"])
def test_every_form_needs_the_csrf_token(anna: Subject, path: str) -> None:
    client = signed_in_client(anna, enforce_csrf_checks="1")
    events = ConsentEvent.objects.count()
    response = client.post(path, {"granted": "true"})
    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
    assert ConsentEvent.objects.count() == events
    assert client.session[SESSION_KEY] == anna.pk


def test_the_sign_in_forms_need_the_csrf_token(anna: Subject) -> None:
    with_login(anna)
    client = Client(enforce_csrf_checks=True)
    path = link_path(anna)
    assert client.post(path).status_code == 403
    assert DashboardLink.objects.get().used_at is None
    response = client.post(
        "/dashboard/signin", {"username": anna.external_id, "password": PASSWORD}
    )
    assert response.status_code == 403
    assert SESSION_KEY not in client.session


# --- one subject's session never reaches another's data -----------------------------------


def test_a_session_sees_only_its_own_subject(
    anna: Subject, bob: Subject, annas_browser: Client, ads_live: None
) -> None:
    advertiser_with_ad()
    allow(bob, "ads_personalization")
    show_ads(bob)
    for path in PAGES:
        body = annas_browser.get(path).content.decode()
        assert "bob" not in body, path
    export = annas_browser.get("/dashboard/data/export").json()
    assert export["subject"]["external_id"] == "anna"
    assert export["ads"]["ad_decisions"] == []


def test_a_session_cannot_download_another_subjects_receipt(
    bob: Subject, annas_browser: Client
) -> None:
    bobs_event = ConsentEvent.objects.filter(subject=bob).first()
    assert bobs_event is not None
    response = annas_browser.get(f"/dashboard/history/{bobs_event.pk}/receipt")
    assert response.status_code == 404
    assert "bob" not in response.content.decode()


def test_a_choice_changes_only_the_sessions_subject(
    anna: Subject, bob: Subject, annas_browser: Client
) -> None:
    bobs_events = ConsentEvent.objects.filter(subject=bob).count()
    response = annas_browser.post(
        "/dashboard/choices/analytics",
        {"granted": "true", "subject": "bob", "external_id": "bob"},
    )
    assert response.status_code == 302
    assert ConsentState.objects.get(subject=anna, purpose__key="analytics").granted is True
    assert ConsentState.objects.get(subject=bob, purpose__key="analytics").granted is False
    assert ConsentEvent.objects.filter(subject=bob).count() == bobs_events


def test_a_session_cannot_hide_from_another_subjects_ad(
    bob: Subject, annas_browser: Client, ads_live: None
) -> None:
    advertiser_with_ad()
    [decision] = show_ads(bob)
    assert decision.ad is not None
    response = annas_browser.post("/dashboard/ads/hide", {"decision": str(decision.pk)})
    assert response.status_code == 404
    assert not HiddenAdvertiser.objects.exists()


def test_a_session_cannot_undo_another_subjects_hide(
    anna: Subject, bob: Subject, annas_browser: Client
) -> None:
    ad = advertiser_with_ad()
    advertiser = ad.campaign.advertiser
    HiddenAdvertiser.objects.create(subject=bob, advertiser=advertiser)
    response = annas_browser.post(f"/dashboard/ads/hidden/{advertiser.pk}/show")
    assert response.status_code == 404
    assert HiddenAdvertiser.objects.filter(subject=bob, advertiser=advertiser).exists()


def test_erasing_ad_data_erases_only_the_sessions_subject(
    anna: Subject, bob: Subject, annas_browser: Client, ads_live: None
) -> None:
    advertiser_with_ad()
    allow(anna, "ads_personalization")
    allow(bob, "ads_personalization")
    show_ads(anna)
    show_ads(bob)
    annas_browser.post("/dashboard/ads/erase")
    export_bob = services_export(bob)
    assert len(export_bob["ads"]["ad_decisions"]) == 1


def test_a_policy_decision_is_recorded_for_the_sessions_subject_only(
    anna: Subject, bob: Subject, annas_browser: Client, ads_live: None
) -> None:
    response = annas_browser.post(
        "/dashboard/policy-update",
        {"purpose_ads_personalization": "true", "purpose_ads_data_sharing": "false"},
    )
    assert response.status_code == 302
    assert not ConsentEvent.objects.filter(subject=bob, source=Source.USER_WEB).exists()
    assert ConsentEvent.objects.filter(subject=anna, source=Source.USER_WEB).count() == 2


def services_export(subject: Subject) -> dict:
    from consent import selectors

    return selectors.subject_export(subject=subject)
