"""CSRF: every dashboard and admin address refuses a POST without the token, and the
API never accepts a browser session at all (bearer tokens only).

The URL patterns are enumerated from the URLconf, so an address added later is
covered without touching this file."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.views import APIView

from consent.auth import ServiceTokenAuthentication
from consent.dashboard import SESSION_KEY
from tests.dashboard.conftest import signed_in_client
from tests.factories import SubjectFactory
from tests.security.hardening_support import captured_logs, sample_address, url_routes

pytestmark = pytest.mark.django_db

FORM_DATA = {"granted": "true", "username": "x", "password": "y", "name": "forged"}


ROUTES = url_routes()
API = [(r, p) for r, p in ROUTES if r.startswith("api/")]
ADMIN = [sample_address(r, p) for r, p in ROUTES if r.startswith("admin/")]
DASHBOARD = [sample_address(r, p) for r, p in ROUTES if not r.startswith(("api/", "admin/"))]


def every_row_count() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


def csrf_refusals(logged: Any) -> list[str]:
    return [r.getMessage() for r in logged.records if r.name == "django.security.csrf"]


# --- the enumeration itself -----------------------------------------------------------------


def test_the_enumeration_finds_every_kind_of_address() -> None:
    assert len(DASHBOARD) >= 19
    assert len(ADMIN) >= 150
    assert len(API) >= 34
    for expected in [
        "/dashboard/choices/analytics",
        "/dashboard/login/sample",
        "/dashboard/ads/erase",
        "/i18n/setlang/",
        "/admin/login/",
        "/admin/consent/subject/1/change/",
        "/admin/consent/",
    ]:
        assert expected in DASHBOARD + ADMIN


def test_only_the_api_is_exempt_from_csrf() -> None:
    # DRF marks its views csrf_exempt; that is safe only because no API view accepts
    # a session (below). Every other view keeps Django's CSRF check.
    exempt = sorted(r for r, p in ROUTES if getattr(p.callback, "csrf_exempt", False))
    assert exempt == sorted(r for r, _ in API)


# --- the dashboard --------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARD)
def test_every_dashboard_address_refuses_a_post_without_the_token(path: str) -> None:
    subject = SubjectFactory.create(external_id="csrf-anna", country="DE")
    client = signed_in_client(subject, enforce_csrf_checks=True)
    before = every_row_count()
    with captured_logs() as logged:
        response = client.post(path, FORM_DATA)
    assert response.status_code == 403, path
    # (the token of a sign-in link is masked in the log line)
    logged_path = re.sub(r"^/dashboard/login/.+", "/dashboard/login/[redacted]", path)
    assert csrf_refusals(logged) == [f"Forbidden (CSRF token missing.): {logged_path}"]
    assert every_row_count() == before
    assert client.session[SESSION_KEY] == subject.pk


def test_a_dashboard_post_with_a_forged_token_is_refused_too() -> None:
    subject = SubjectFactory.create(external_id="csrf-bob", country="DE")
    client = signed_in_client(subject, enforce_csrf_checks=True)
    before = every_row_count()
    response = client.post(
        "/dashboard/choices/analytics", {"granted": "false", "csrfmiddlewaretoken": "A" * 64}
    )
    assert response.status_code == 403
    assert every_row_count() == before


def test_a_dashboard_post_with_the_token_goes_through() -> None:
    # The control: what the refusals above lack is only the token.
    subject = SubjectFactory.create(external_id="csrf-carol", country="DE")
    client = signed_in_client(subject, enforce_csrf_checks=True)
    token = client.cookies["csrftoken"].value
    response = client.post("/dashboard/signout", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert SESSION_KEY not in client.session


# --- the admin ------------------------------------------------------------------------------


@pytest.fixture
def superuser_browser() -> Client:
    user = User.objects.create_superuser("csrf-root", password="pw-for-tests-only")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_every_admin_address_refuses_a_post_without_the_token(superuser_browser: Client) -> None:
    before = every_row_count()
    accepted = []
    with captured_logs() as logged:
        for path in ADMIN:
            if superuser_browser.post(path, FORM_DATA).status_code != 403:
                accepted.append(path)
    assert accepted == []
    assert len(csrf_refusals(logged)) == len(ADMIN)
    assert every_row_count() == before
    assert superuser_browser.get("/admin/").status_code == 200  # still signed in


def test_an_admin_post_with_the_token_goes_through(superuser_browser: Client) -> None:
    superuser_browser.get("/admin/auth/group/add/")
    token = superuser_browser.cookies["csrftoken"].value
    response = superuser_browser.post(
        "/admin/auth/group/add/", {"name": "created", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert apps.get_model("auth", "Group").objects.filter(name="created").exists()


def test_the_admin_sign_in_refuses_a_post_without_the_token() -> None:
    User.objects.create_superuser("csrf-root2", password="pw-for-tests-only")
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/admin/login/", {"username": "csrf-root2", "password": "pw-for-tests-only"}
    )
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


# --- the API never takes a session ----------------------------------------------------------

API_METHODS = ("get", "post", "put", "patch", "delete")


def _api_calls() -> list[tuple[str, str]]:
    calls = []
    for route, pattern in API:
        view_class = getattr(pattern.callback, "cls", None)
        assert view_class is not None, route
        assert issubclass(view_class, APIView), route
        if route.startswith("api/schema") or route.startswith("api/docs"):
            continue  # the public schema and its page: read-only, no session involved
        for method in API_METHODS:
            if hasattr(view_class, method):
                calls.append((method, sample_address(route, pattern)))
    return calls


API_CALLS = _api_calls()


def test_every_api_view_authenticates_by_bearer_token_only() -> None:
    for route, pattern in API:
        view_class = pattern.callback.cls  # type: ignore[attr-defined]
        if route.startswith(("api/schema", "api/docs")):
            continue
        assert view_class.authentication_classes == [ServiceTokenAuthentication], route
    assert len(API_CALLS) >= 36


@pytest.mark.parametrize("who", ["staff", "subject"])
def test_a_signed_in_browser_gets_nothing_from_the_api(who: str) -> None:
    subject = SubjectFactory.create(external_id="sample", country="DE")
    if who == "staff":
        user = User.objects.create_superuser("api-root", password="pw-for-tests-only")
        browser = Client()
        browser.force_login(user)
    else:
        browser = signed_in_client(subject)
    browser.get("/dashboard/signin")  # the CSRF cookie, sent along with the token below
    token = browser.cookies["csrftoken"].value
    before = every_row_count()
    answered = {}
    for method, path in API_CALLS:
        body = {} if method == "get" else {"data": "{}", "content_type": "application/json"}
        response = getattr(browser, method)(path, HTTP_X_CSRFTOKEN=token, **body)
        answered[f"{method.upper()} {path}"] = (
            response.status_code,
            response["Content-Type"],
        )
    refused = (401, "application/problem+json")
    assert {call: answer for call, answer in answered.items() if answer != refused} == {}
    assert every_row_count() == before
