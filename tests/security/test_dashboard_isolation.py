"""A dashboard session reaches its own subject's data and nobody else's.

Anna is signed in; Bob is another person with every kind of data (consent events and
states, a pending notice, signals and features, an ad shown to him, an advertiser he
hid, a used sign-in link, a web login and a session of his own). Every dashboard URL
pattern (enumerated from the URL resolver, so a new page needs an entry in `PAGES`)
is requested by Anna's session with Bob's ids — in the path where the pattern takes
an id, and in the query string and every form field — and must be refused (404) or
answer for Anna only: nothing of Bob's in the response, and Bob's data exactly as it
was (compared row by row before and after). Anna's session stays hers; Bob's stays
his.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.html import escape

from ads import services as ads_services
from ads.models import AdDecision, HiddenAdvertiser
from consent import selectors, services
from consent.dashboard import SESSION_KEY
from consent.models import ConsentEvent, ConsentState, DashboardLink, PolicyNotice, Subject
from tests.dashboard.conftest import (
    advertiser_with_ad,
    allow,
    send_signals,
    show_ads,
    signed_in_client,
    with_login,
)
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

BOB = "bob-7d1c"
BOBS_AD = "Only for Bob"
BOBS_HIDDEN = "Quiet Bakery"


@dataclass
class World:
    anna: Subject
    bob: Subject
    bobs_event: int
    bobs_decision: str
    bobs_hidden_advertiser: int
    bobs_used_link: str
    bobs_browser: Client

    @property
    def bobs_fields(self) -> dict[str, str]:
        """Every name a form could be fooled with, holding one of Bob's ids."""
        return {
            "subject": BOB,
            "external_id": BOB,
            "subject_id": str(self.bob.pk),
            "user": str(self.bob.user_id),
            "username": BOB,
            "event": str(self.bobs_event),
            "event_id": str(self.bobs_event),
            "decision": self.bobs_decision,
            "advertiser": str(self.bobs_hidden_advertiser),
            "advertiser_id": str(self.bobs_hidden_advertiser),
            SESSION_KEY: str(self.bob.pk),
        }

    @property
    def bobs_query(self) -> str:
        return "?" + "&".join(f"{k}={v}" for k, v in self.bobs_fields.items())


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    # Bob's web login needs a password; nothing here is about hashing it slowly.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world() -> World:
    anna = SubjectFactory.create(external_id="anna-3e9b", country="DE", birth_year=1990)
    bob = with_login(SubjectFactory.create(external_id=BOB, country="DE", birth_year=1985))
    assert publish("2025-06", "DE") == 2  # ads live, and a pending notice for both
    assert PolicyNotice.objects.filter(resolved_at__isnull=True).count() == 2
    allow(bob, "ads_personalization", "analytics")
    send_signals(bob, count=2)
    hidden = advertiser_with_ad(name=BOBS_HIDDEN, headline="Fresh bread").campaign.advertiser
    [bakery] = show_ads(bob)
    assert bakery.ad is not None
    ads_services.hide_advertiser(subject=bob, decision_id=bakery.pk)
    advertiser_with_ad(name="Lumen Coffee", headline=BOBS_AD)
    [shown] = show_ads(bob)  # not the bakery's: Bob hid it
    assert shown.ad is not None
    assert shown.ad.headline == BOBS_AD
    used, _ = services.issue_dashboard_link(external_id=BOB, issued_by=None)
    bobs_browser = Client()
    bobs_browser.post(urlsplit(used).path)
    assert bobs_browser.session[SESSION_KEY] == bob.pk
    return World(
        anna=anna,
        bob=bob,
        bobs_event=ConsentEvent.objects.filter(subject=bob).latest("id").pk,
        bobs_decision=str(shown.pk),
        bobs_hidden_advertiser=hidden.pk,
        bobs_used_link=urlsplit(used).path,
        bobs_browser=bobs_browser,
    )


def footprint(subject: Subject) -> str:
    """Everything Parley holds about the subject, row by row."""
    subject.refresh_from_db()
    user = User.objects.filter(subject=subject).values().first()
    rows = {
        "export": selectors.subject_export(subject=subject),
        "subject": Subject.objects.filter(pk=subject.pk).values().get(),
        "events": list(ConsentEvent.objects.filter(subject=subject).order_by("id").values()),
        "states": list(ConsentState.objects.filter(subject=subject).order_by("id").values()),
        "notices": list(PolicyNotice.objects.filter(subject=subject).order_by("id").values()),
        "hidden": list(HiddenAdvertiser.objects.filter(subject=subject).order_by("id").values()),
        "decisions": list(AdDecision.objects.filter(subject=subject).order_by("pk").values()),
        "links": list(DashboardLink.objects.filter(subject=subject).order_by("id").values()),
        "user": user,
    }
    return json.dumps(rows, cls=DjangoJSONEncoder, sort_keys=True)


# --- every dashboard URL pattern -------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A dashboard URL: whether it needs a session, and Anna's requests at it with Bob's
    ids (method, path, status expected)."""

    session: bool
    requests: Callable[[World], list[tuple[str, str, int]]]
    # The sign-in form shows back the account id typed (here Bob's): Anna's own input.
    echoes_input: bool = False


PAGES: dict[str, Page] = {
    "gpc-json": Page(False, lambda w: [("GET", "/.well-known/gpc.json", 200)]),
    "set_language": Page(False, lambda w: [("POST", "/i18n/setlang/", 302)]),
    "dashboard-signin": Page(
        False,
        # Bob's username with a wrong password (with his right one, it is his sign-in).
        lambda w: [("GET", "/dashboard/signin", 200), ("POST", "/dashboard/signin", 400)],
        echoes_input=True,
    ),
    "dashboard-link": Page(
        False,
        lambda w: [
            ("GET", w.bobs_used_link, 410),
            ("POST", w.bobs_used_link, 410),
            ("POST", "/dashboard/login/forged-" + "A" * 36, 404),
        ],
    ),
    "dashboard-signout": Page(False, lambda w: [("POST", "/dashboard/signout", 302)]),
    "dashboard-signed-out": Page(False, lambda w: [("GET", "/dashboard/signed-out", 200)]),
    "dashboard-policy": Page(False, lambda w: [("GET", "/dashboard/policy/2025-06", 200)]),
    "dashboard-home": Page(True, lambda w: [("GET", "/dashboard/", 200)]),
    "dashboard-choice": Page(
        True,
        lambda w: [
            ("POST", "/dashboard/choices/analytics", 302),
            ("POST", "/dashboard/choices/ads_personalization", 302),
        ],
    ),
    "dashboard-policy-update": Page(
        True,
        lambda w: [
            ("GET", "/dashboard/policy-update", 200),
            ("POST", "/dashboard/policy-update", 302),
        ],
    ),
    "dashboard-history": Page(True, lambda w: [("GET", "/dashboard/history", 200)]),
    "dashboard-receipt": Page(
        True, lambda w: [("GET", f"/dashboard/history/{w.bobs_event}/receipt", 404)]
    ),
    "dashboard-data": Page(True, lambda w: [("GET", "/dashboard/data", 200)]),
    "dashboard-export": Page(True, lambda w: [("GET", "/dashboard/data/export", 200)]),
    "dashboard-ads": Page(True, lambda w: [("GET", "/dashboard/ads/", 200)]),
    "dashboard-ads-hide": Page(True, lambda w: [("POST", "/dashboard/ads/hide", 404)]),
    "dashboard-ads-unhide": Page(
        True,
        lambda w: [("POST", f"/dashboard/ads/hidden/{w.bobs_hidden_advertiser}/show", 404)],
    ),
    "dashboard-ads-erase": Page(
        True,
        lambda w: [("GET", "/dashboard/ads/erase", 200), ("POST", "/dashboard/ads/erase", 302)],
    ),
}

# Form fields a page reads, so that Anna's request is otherwise valid.
FORM = {
    "granted": "true",
    "purpose_ads_personalization": "true",
    "purpose_ads_data_sharing": "false",
    "language": "fr",
    "next": "/dashboard/",
    "password": "not-bobs-password",
}


def _walk(patterns: list[Any], prefix: str = "") -> Any:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.name


def dashboard_patterns() -> set[str]:
    """The names of every URL pattern that is neither the admin, the API nor a probe."""
    return {
        name
        for route, name in _walk(get_resolver().url_patterns)
        if not route.startswith(("admin/", "api/", "healthz"))
    }


def test_every_dashboard_url_pattern_is_covered() -> None:
    found = dashboard_patterns()

    assert None not in found  # a pattern without a name could not be listed here
    assert found == set(PAGES)


def test_a_page_needs_a_session_exactly_when_it_says(world: World) -> None:
    for name, page in PAGES.items():
        for method, path, _ in page.requests(world):
            response = Client().generic(method, path)
            sent_to_sign_in = (
                response.status_code == 302 and response["Location"] == "/dashboard/signin"
            )
            assert sent_to_sign_in == page.session, (name, method, path, response.status_code)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_a_session_with_another_subjects_ids_reaches_only_its_own(world: World, name: str) -> None:
    annas_browser = signed_in_client(world.anna)
    bob_before = footprint(world.bob)

    for method, path, status in PAGES[name].requests(world):
        if method == "GET":
            response = annas_browser.get(path + world.bobs_query, HTTP_SEC_GPC="1")
        else:
            data = {**FORM, **world.bobs_fields}
            response = annas_browser.post(path + world.bobs_query, data, HTTP_SEC_GPC="1")

        assert response.status_code == status, (method, path, response.status_code)
        # The language switcher sends the visitor back to the address they asked for:
        # the query Anna typed is shown back to her, and is not Bob's data.
        body = response.content.decode().replace(escape(world.bobs_query), "")
        markers = (
            (BOBS_AD, BOBS_HIDDEN) if PAGES[name].echoes_input else (BOB, BOBS_AD, BOBS_HIDDEN)
        )
        for marker in markers:
            assert marker not in body, (method, path, marker)
        if name != "dashboard-signout":
            assert annas_browser.session.get(SESSION_KEY) == world.anna.pk, (method, path)

    assert footprint(world.bob) == bob_before
    # Bob's own session is untouched by whatever Anna's did.
    assert world.bobs_browser.get("/dashboard/").status_code == 200
    assert world.bobs_browser.session[SESSION_KEY] == world.bob.pk


def test_the_export_is_the_sessions_subjects_only(world: World) -> None:
    annas_browser = signed_in_client(world.anna)

    export = annas_browser.get("/dashboard/data/export" + world.bobs_query).json()

    assert export["subject"]["external_id"] == world.anna.external_id
    assert export == json.loads(
        json.dumps(
            selectors.subject_export(subject=Subject.objects.get(pk=world.anna.pk)),
            cls=DjangoJSONEncoder,
        )
    )


def test_a_forged_session_cookie_reaches_nothing(world: World, settings: Any) -> None:
    browser = Client()
    browser.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
    for name, page in PAGES.items():
        if page.session:
            for method, path, _ in page.requests(world):
                response = browser.generic(method, path)
                assert response.status_code == 302, (name, path)
                assert response["Location"] == "/dashboard/signin"
