"""Management commands and the staff admin."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

from consent.auth import hash_token
from consent.management.commands import seed_demo
from consent.models import ConsentEvent, ServiceToken, Subject
from tests.factories import SubjectFactory

pytestmark = pytest.mark.django_db


def _create_token(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("create_service_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip()


def test_create_service_token_prints_the_token_once_and_stores_its_hash() -> None:
    raw = _create_token("app-backend", "--scopes", "consent:read,consent:write")

    token = ServiceToken.objects.get(account__name="app-backend")
    assert raw.startswith("prl_")
    assert token.token_hash == hash_token(raw)
    assert raw not in (token.token_hash, token.prefix)
    assert token.scopes == ["consent:read", "consent:write"]


def test_create_service_token_refuses_unknown_scopes() -> None:
    with pytest.raises(CommandError, match="Unknown scopes"):
        _create_token("app-backend", "--scopes", "consent:read,everything")
    assert not ServiceToken.objects.exists()


def test_a_printed_token_authenticates_against_the_api() -> None:
    raw = _create_token("policy-tool", "--scopes", "policy:read")
    response = Client().get("/api/v1/purposes", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200


@override_settings(DEBUG=True)
def test_seed_demo_is_repeatable_and_replaces_the_demo_token() -> None:
    call_command("seed_demo", stdout=StringIO())
    first_tokens = set(ServiceToken.objects.values_list("pk", flat=True))
    events = ConsentEvent.objects.count()

    call_command("seed_demo", stdout=StringIO())

    assert Subject.objects.filter(external_id__startswith="demo-").count() == len(
        seed_demo.DEMO_SUBJECTS
    )
    assert ConsentEvent.objects.count() == events
    live = ServiceToken.objects.filter(revoked_at__isnull=True)
    assert live.count() == 1
    assert live.get().pk not in first_tokens


@override_settings(DEBUG=True)
def test_demo_subjects_have_a_web_login_and_staff_can_reach_the_admin() -> None:
    call_command("seed_demo", stdout=StringIO())
    anna = Subject.objects.get(external_id="demo-de-anna")
    assert anna.user is not None
    assert anna.user.check_password(seed_demo.DEMO_PASSWORD)
    client = Client()
    assert client.login(username=seed_demo.STAFF_USERNAME, password=seed_demo.STAFF_PASSWORD)
    assert client.get("/admin/consent/subject/").status_code == 200


def test_seed_demo_refuses_without_debug() -> None:
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("seed_demo", stdout=StringIO())
    assert not Subject.objects.exists()


@pytest.fixture
def staff_client() -> Client:
    User.objects.create_superuser("root-staff", "staff@parley.invalid", "pw-for-tests-only")
    client = Client()
    client.force_login(User.objects.get(username="root-staff"))
    return client


def test_staff_revoke_tokens_in_the_admin_and_the_token_stops_working(
    staff_client: Client,
) -> None:
    raw = _create_token("ad-server", "--scopes", "policy:read")
    token = ServiceToken.objects.get()

    response = staff_client.post(
        "/admin/consent/servicetoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )

    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None
    api = Client().get("/api/v1/purposes", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.status_code == 401


def test_consent_events_cannot_be_changed_or_deleted_in_the_admin(staff_client: Client) -> None:
    SubjectFactory.create()
    event = ConsentEvent.objects.first()
    assert event is not None

    page = staff_client.get(f"/admin/consent/consentevent/{event.pk}/change/")
    assert page.status_code == 200  # viewable
    assert b'name="_save"' not in page.content
    delete = staff_client.post(f"/admin/consent/consentevent/{event.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403
    assert ConsentEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.parametrize(
    "path",
    [
        "/admin/consent/purpose/",
        "/admin/consent/jurisdiction/",
        "/admin/consent/jurisdiction/1/change/",
        "/admin/consent/policyversion/",
        "/admin/consent/rollout/",
        "/admin/consent/subject/",
        "/admin/consent/consentevent/",
        "/admin/consent/consentstate/",
        "/admin/consent/serviceaccount/",
        "/admin/consent/metadatacategory/",
    ],
)
def test_admin_pages_render(staff_client: Client, path: str) -> None:
    SubjectFactory.create()
    if "jurisdiction/1" in path:
        from consent.models import Jurisdiction

        path = f"/admin/consent/jurisdiction/{Jurisdiction.objects.get(code='DE').pk}/change/"
    assert staff_client.get(path).status_code == 200
