"""Production settings: `check --deploy` is clean, HSTS, secure cookies, and secrets
only from the environment.

The settings are read once, at start-up, from the environment, so production values
are taken from a child process started with production's variables; the requests
below then run in this process under exactly those values."""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import Morsel
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from consent.dashboard import SESSION_KEY
from tests.dashboard.conftest import PASSWORD, with_login
from tests.factories import SubjectFactory
from tests.security.hardening_support import production_env, run_django, settings_under

SECURITY_SETTINGS = (
    "DEBUG",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_SSL_REDIRECT",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "SECURE_CROSS_ORIGIN_OPENER_POLICY",
    "X_FRAME_OPTIONS",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_SAMESITE",
    "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_HTTPONLY",
    "CSRF_COOKIE_SAMESITE",
    "LANGUAGE_COOKIE_SECURE",
    "LANGUAGE_COOKIE_HTTPONLY",
    "LANGUAGE_COOKIE_SAMESITE",
)
ONE_YEAR = 365 * 24 * 3600


class HttpsClient(Client):
    """A client whose every request is made over HTTPS."""

    def generic(self, *args: Any, **kwargs: Any) -> Any:
        return super().generic(*args, **{**kwargs, "secure": True})


@pytest.fixture(scope="module")
def production() -> dict[str, Any]:
    [values] = settings_under(production_env(), names=SECURITY_SETTINGS)
    return values


@pytest.fixture
def production_client(production: dict[str, Any]) -> Iterator[Client]:
    """A browser on HTTPS talking to this process under production's settings."""
    values = {k: v for k, v in production.items() if k != "DEBUG"}
    with override_settings(**values):
        # Over HTTPS, Django's CSRF check also wants a same-origin Referer.
        yield HttpsClient(HTTP_REFERER="https://testserver/dashboard/signin")


# --- check --deploy -------------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_values() -> None:
    result = run_django(production_env(), "", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_would_catch_a_production_setting_turned_off() -> None:
    # The check above can fail: the same run with HSTS and secure cookies switched off.
    result = run_django(
        production_env(SECURE_HSTS_SECONDS="0", SESSION_COOKIE_SECURE="false"),
        "",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout  # HSTS
    assert "security.W012" in result.stderr + result.stdout  # session cookie


# --- the values production runs with --------------------------------------------------------


def test_production_sends_hsts_for_a_year_with_subdomains_and_preload(
    production: dict[str, Any],
) -> None:
    assert production["DEBUG"] is False
    assert production["SECURE_HSTS_SECONDS"] >= ONE_YEAR
    assert production["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert production["SECURE_HSTS_PRELOAD"] is True
    assert production["SECURE_SSL_REDIRECT"] is True


@pytest.mark.parametrize("cookie", ["SESSION", "CSRF", "LANGUAGE"])
def test_production_cookies_are_secure_httponly_and_same_site(
    production: dict[str, Any], cookie: str
) -> None:
    assert production[f"{cookie}_COOKIE_SECURE"] is True
    assert production[f"{cookie}_COOKIE_HTTPONLY"] is True
    assert production[f"{cookie}_COOKIE_SAMESITE"] in {"Lax", "Strict"}


def test_production_refuses_framing_sniffing_and_leaky_referrers(
    production: dict[str, Any],
) -> None:
    assert production["X_FRAME_OPTIONS"] == "DENY"
    assert production["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert production["SECURE_REFERRER_POLICY"] == "same-origin"
    assert production["SECURE_CROSS_ORIGIN_OPENER_POLICY"] == "same-origin"


# --- what a browser receives ----------------------------------------------------------------


def _flags(morsel: Morsel[str]) -> tuple[bool, bool, str]:
    return bool(morsel["secure"]), bool(morsel["httponly"]), morsel["samesite"]


def test_plain_http_is_redirected_to_https(production: dict[str, Any]) -> None:
    values = {k: v for k, v in production.items() if k != "DEBUG"}
    with override_settings(**values):
        response = Client().get("/dashboard/signin")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/dashboard/signin"


@pytest.mark.parametrize("path", ["/dashboard/signin", "/healthz", "/api/v1/purposes", "/admin/"])
def test_every_https_response_carries_hsts(production_client: Client, path: str) -> None:
    response = production_client.get(path)
    assert response["Strict-Transport-Security"] == (
        f"max-age={settings.SECURE_HSTS_SECONDS}; includeSubDomains; preload"
    )
    assert settings.SECURE_HSTS_SECONDS >= ONE_YEAR
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_the_session_csrf_and_language_cookies_are_sent_secure_httponly_and_lax(
    production_client: Client,
) -> None:
    subject = with_login(SubjectFactory.create(external_id="cookie-anna", country="DE"))

    production_client.get("/dashboard/signin")
    csrf = production_client.cookies[settings.CSRF_COOKIE_NAME]
    assert _flags(csrf) == (True, True, "Lax")

    response = production_client.post(
        "/dashboard/signin",
        {
            "username": subject.external_id,
            "password": PASSWORD,
            "csrfmiddlewaretoken": csrf.value,
        },
    )
    assert response.status_code == 302
    assert production_client.session[SESSION_KEY] == subject.pk
    assert _flags(response.cookies[settings.SESSION_COOKIE_NAME]) == (True, True, "Lax")

    response = production_client.post(
        "/i18n/setlang/",
        {"language": "fr", "next": "/dashboard/", "csrfmiddlewaretoken": csrf.value},
    )
    assert response.status_code == 302
    assert _flags(response.cookies[settings.LANGUAGE_COOKIE_NAME]) == (True, True, "Lax")


# --- secrets only from the environment ------------------------------------------------------


def test_production_takes_its_secret_key_from_the_environment_and_nowhere_else() -> None:
    given = production_env()
    missing = {k: v for k, v in production_env().items() if k != "SECRET_KEY"}
    refused = [
        missing,
        production_env(SECRET_KEY=""),
        production_env(SECRET_KEY="   "),
        production_env(SECRET_KEY="dev-only-insecure-key-never-used-in-production"),
    ]
    answers = settings_under(given, *refused, names=("SECRET_KEY",))
    assert answers[0] == {"SECRET_KEY": given["SECRET_KEY"]}
    for env, answer in zip(refused, answers[1:], strict=True):
        assert "SECRET_KEY" in answer.get("error", ""), (env.get("SECRET_KEY"), answer)
