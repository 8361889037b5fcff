"""Secrets at rest: tokens and sign-in links are stored hashed, passwords too, and no
table holds a raw token, link token, password or form CSRF token anywhere.

Every text, character and JSON column of every model is searched for each raw value
after the flows that create and use them."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import models
from django.db.models.functions import Cast
from django.test import Client
from rest_framework.test import APIClient

from consent import auth, services
from consent.models import DashboardLink, ServiceToken, WebhookSubscription
from tests.dashboard.conftest import PASSWORD, with_login
from tests.factories import SubjectFactory

pytestmark = pytest.mark.django_db

TEXT_FIELDS = (models.CharField, models.TextField, models.JSONField)


def tables_holding(value: str) -> list[str]:
    """`app.Model.field` for every column in which some row contains `value`."""
    found = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if not isinstance(field, TEXT_FIELDS):
                continue
            rows = model._default_manager.annotate(
                _as_text=Cast(field.name, models.TextField())
            ).filter(_as_text__contains=value)
            if rows.exists():
                found.append(f"{model._meta.label}.{field.name}")
    return found


def test_the_search_finds_a_value_wherever_it_is_stored() -> None:
    SubjectFactory.create(external_id="needle-in-a-subject", country="DE")
    assert "consent.Subject.external_id" in tables_holding("needle-in-a-subject")
    assert tables_holding("no-such-value-anywhere") == []


def test_a_service_token_is_stored_as_its_hash_and_a_short_prefix() -> None:
    token, raw = services.create_service_token(name="at-rest", scopes=["consent:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/subjects/nobody").status_code == 404  # used once
    row = ServiceToken.objects.get(pk=token.pk)
    assert row.token_hash == hashlib.sha256(raw.encode()).hexdigest() == auth.hash_token(raw)
    assert raw.startswith(row.prefix)
    assert len(row.prefix) == 12  # "prl_" and 8 of the token's 43 characters
    assert tables_holding(raw) == []
    assert tables_holding(raw[12:]) == []  # nor the secret part


def test_a_sign_in_link_is_stored_as_its_hash_before_and_after_use() -> None:
    SubjectFactory.create(external_id="at-rest-anna", country="DE")
    url, _ = services.issue_dashboard_link(external_id="at-rest-anna", issued_by=None)
    path = urlsplit(url).path
    raw = path.rsplit("/", 1)[1]
    assert tables_holding(raw) == []
    browser = Client()
    assert browser.post(path).status_code == 302
    link = DashboardLink.objects.get()
    assert link.used_at is not None
    assert link.token_hash == auth.hash_token(raw)
    assert tables_holding(raw) == []


def test_the_api_hands_out_a_link_without_keeping_it() -> None:
    SubjectFactory.create(external_id="at-rest-bob", country="DE")
    _, raw_token = services.create_service_token(name="app", scopes=["consent:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    response = client.post("/api/v1/subjects/at-rest-bob/dashboard-links")
    assert response.status_code == 201
    raw = urlsplit(response.json()["url"]).path.rsplit("/", 1)[1]
    assert tables_holding(raw) == []
    assert tables_holding(raw_token) == []


def test_passwords_and_form_tokens_of_failed_sign_ins_are_not_kept() -> None:
    # django-axes keeps the form data of a failed attempt (its rate limit): the
    # password and the CSRF token are masked there.
    subject = with_login(SubjectFactory.create(external_id="at-rest-carol", country="DE"))
    browser = Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.73")
    browser.get("/dashboard/signin")
    csrf = browser.cookies["csrftoken"].value
    guesses = [f"not-the-Password-{i}" for i in range(3)]
    for guess in guesses:
        response = browser.post(
            "/dashboard/signin",
            {"username": subject.external_id, "password": guess, "csrfmiddlewaretoken": csrf},
        )
        assert response.status_code == 400
    assert apps.get_model("axes", "AccessAttempt").objects.count() == 1
    for secret in [*guesses, csrf, PASSWORD]:
        assert tables_holding(secret) == [], secret
    user = User.objects.get(username=subject.external_id)
    assert user.password.startswith(("pbkdf2_sha256$", "argon2", "scrypt"))


def test_a_webhook_secret_is_kept_since_signing_needs_it_but_never_shown_again() -> None:
    # Standard Webhooks signatures are HMACs: the secret must be readable to sign, so
    # it cannot be hashed like a token. It is shown once, at subscription; the list
    # and the admin show a fingerprint only.
    _, raw_token = services.create_service_token(name="svc", scopes=["consent:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    created = client.post(
        "/api/v1/webhooks",
        {"name": "hooks", "url": "https://hooks.example.com/in", "events": ["consent.changed"]},
        format="json",
    )
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert tables_holding(secret) == ["consent.WebhookSubscription.secret"]
    assert secret not in client.get("/api/v1/webhooks").content.decode()
    staff = User.objects.create_superuser("rest-root", password="pw-for-tests-only")
    admin = Client()
    admin.force_login(staff)
    subscription = WebhookSubscription.objects.get()
    page = admin.get(f"/admin/consent/webhooksubscription/{subscription.pk}/change/")
    assert page.status_code == 200
    assert secret not in page.content.decode()
