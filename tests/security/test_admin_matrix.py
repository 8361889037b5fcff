"""Who reaches which admin page: every registered model's changelist, add, change,
delete and history pages, every custom admin page and bulk action, for each staff
group, a staff account in no group, a superuser, a signed-in user who is not staff
and an anonymous visitor — exactly as docs/ADMIN.md says.

The expectations come from `tests/security/admin_matrix.py`; the tests check that it
covers every model in `admin.site` and every custom URL a ModelAdmin adds (a new one
without an entry fails here), and that docs/ADMIN.md's matrix says the same. Refused
requests (403, or the login page) are checked with GET and with POST, and must leave
every table as it was. Then support's staff change: refused without a reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from consent import services
from consent.choices import ActorType, Source
from consent.errors import InvalidValue
from consent.models import ConsentEvent, Rollout
from tests.security.admin_matrix import (
    ANONYMOUS,
    BY_LABEL,
    CUSTOM_BY_NAME,
    CUSTOM_VIEWS,
    INSTANCES,
    MODELS,
    NOT_STAFF,
    PERSONAS,
    STAFF,
    SUPPORT,
    CustomView,
    Model,
    describe,
    persona_user,
)
from tests.security.api_matrix import fingerprint

pytestmark = pytest.mark.django_db

DOCS = Path(django_settings.BASE_DIR) / "docs" / "ADMIN.md"
LOGIN = "/admin/login/"
STANDARD = ("changelist", "add", "change", "delete", "history")
ADMIN_APPS = ("consent", "ads", "billing", "auth", "axes")


def client_of(persona: str) -> Client:
    client = Client()
    user = persona_user(persona)
    if user is not None:
        client.force_login(user)
    return client


def everything() -> dict[str, Any]:
    return fingerprint(apps=ADMIN_APPS)


def assert_sent_to_login(response: Any) -> None:
    assert response.status_code == 302, response
    assert response["Location"].startswith(f"{LOGIN}?next=")


# --- the tables cover the admin ------------------------------------------------------------


def _label(model: Any) -> str:
    return str(model._meta.label)


def test_every_registered_model_has_a_row_and_an_instance() -> None:
    registered = {_label(model) for model in admin.site._registry}

    assert {m.label for m in MODELS} == registered
    assert set(INSTANCES) == registered
    assert len(BY_LABEL) == len(MODELS)


def test_every_custom_admin_url_has_a_row() -> None:
    custom = set()
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        standard = {f"{meta.app_label}_{meta.model_name}_{view}" for view in STANDARD}
        custom |= {p.name for p in model_admin.get_urls() if p.name and p.name not in standard}

    assert custom == set(CUSTOM_BY_NAME)


def test_the_staff_groups_are_the_ones_the_migrations_create() -> None:
    assert set(Group.objects.values_list("name", flat=True)) == {
        "Policy staff",
        "Support",
        "Billing ops",
    }


def docs_rows(heading: str) -> dict[str, list[str]]:
    section = DOCS.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([\w.]+)`", cells[0])
        if match:
            rows[match[1]] = cells[1:]
    return rows


def test_the_documented_model_matrix_says_what_the_tests_check() -> None:
    documented = docs_rows("## Access matrix")

    assert set(documented) == {m.label for m in MODELS} | {v.name for v in CUSTOM_VIEWS}
    for model in MODELS:
        assert documented[model.label][1:] == [
            describe(model.of(p), model.actions_of(p)) for p in STAFF
        ], model.label
    for view in CUSTOM_VIEWS:
        assert documented[view.name][1:] == [
            "yes" if view.expected(p) < 400 else "—" for p in STAFF
        ], view.name


# --- every model's pages x every persona -----------------------------------------------------


def urls(model: Model) -> dict[str, str]:
    obj = INSTANCES[model.label]()
    assert obj is not None, model.label
    app, name = model.label.lower().split(".")
    base = f"admin:{app}_{name}"
    return {
        "changelist": reverse(f"{base}_changelist"),
        "add": reverse(f"{base}_add"),
        "change": reverse(f"{base}_change", args=[obj.pk]),
        "delete": reverse(f"{base}_delete", args=[obj.pk]),
        "history": reverse(f"{base}_history", args=[obj.pk]),
    }


def offered_actions(response: Any) -> set[str]:
    form = response.context.get("action_form")
    if form is None:
        return set()
    return {name for name, _ in form.fields["action"].choices if name}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.label)
def test_model_pages(model: Model, persona: str) -> None:
    pages = urls(model)
    client = client_of(persona)
    before = everything()

    if persona in (NOT_STAFF, ANONYMOUS):
        for path in pages.values():
            assert_sent_to_login(client.get(path))
        for page in ("add", "change", "delete"):
            assert_sent_to_login(client.post(pages[page], {"post": "yes"}))
        assert everything() == before
        return

    rights = model.of(persona)
    sees = bool(set(rights) & {"v", "c"})
    responses = {page: client.get(path) for page, path in pages.items()}
    assert {page: response.status_code for page, response in responses.items()} == {
        "changelist": 200 if sees else 403,
        "add": 200 if "a" in rights else 403,
        "change": 200 if sees else 403,
        "delete": 200 if "d" in rights else 403,
        "history": 200 if sees else 403,
    }, (model.label, persona)
    if sees:
        assert offered_actions(responses["changelist"]) == model.actions_of(persona)
        change = responses["change"].context
        assert change["has_change_permission"] == ("c" in rights)
        assert change["has_delete_permission"] == ("d" in rights)

    # What the persona may not do, it cannot do with a POST either.
    for page, right in (("add", "a"), ("change", "c"), ("delete", "d")):
        if right not in rights:
            assert client.post(pages[page], {"post": "yes"}).status_code == 403, page
    assert everything() == before


# --- custom pages x every persona -------------------------------------------------------------


def custom_path(view: CustomView) -> str:
    rollout = Rollout.objects.get(version__label="2025-06")
    args: dict[str, Callable[[], list[Any]]] = {
        "consent_consentstate_statistics": list,
        "consent_consentstate_statistics_csv": list,
        "consent_rollout_control": lambda: [rollout.pk, "pause"],
        "consent_rollout_rollback_phase": lambda: [rollout.pk, rollout.phases.order_by("pk")[0].pk],
        "consent_subject_staff_change": lambda: [INSTANCES["consent.Subject"]().pk],
        "billing_invoice_print": lambda: [INSTANCES["billing.Invoice"]().pk],
        "auth_user_password_change": lambda: [INSTANCES["auth.User"]().pk],
    }
    return reverse(f"admin:{view.name}", args=args[view.name]())


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("view", CUSTOM_VIEWS, ids=lambda v: v.name)
def test_custom_pages(view: CustomView, persona: str) -> None:
    path = custom_path(view)
    client = client_of(persona)
    before = everything()

    response = client.generic(view.method, path)

    if persona in (NOT_STAFF, ANONYMOUS):
        assert_sent_to_login(response)
    else:
        assert response.status_code == view.expected(persona), response
    if response.status_code != 302 or persona in (NOT_STAFF, ANONYMOUS):
        assert everything() == before


@pytest.mark.parametrize("persona", PERSONAS)
def test_the_index_and_each_apps_page(persona: str) -> None:
    client = client_of(persona)
    if persona in (NOT_STAFF, ANONYMOUS):
        assert_sent_to_login(client.get("/admin/"))
        for app in ADMIN_APPS:
            assert_sent_to_login(client.get(f"/admin/{app}/"))
        return

    assert client.get("/admin/").status_code == 200
    for app in ADMIN_APPS:
        sees_a_model = any(
            set(m.of(persona)) & {"v", "c"} for m in MODELS if m.label.split(".")[0] == app
        )
        # Django answers 404 for an app of which the user may see no model.
        assert client.get(f"/admin/{app}/").status_code == (200 if sees_a_model else 404), app


# --- support's staff change needs a reason --------------------------------------------------


@pytest.fixture
def support() -> Client:
    return client_of(SUPPORT)


@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"], ids=repr)
def test_a_staff_change_without_a_reason_is_refused(support: Client, reason: str | None) -> None:
    subject = INSTANCES["consent.Subject"]()
    path = reverse("admin:consent_subject_staff_change", args=[subject.pk])
    data = {"purpose": "analytics", "decision": "grant"}
    if reason is not None:
        data["reason"] = reason
    before = everything()

    response = support.post(path, data)

    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert everything() == before


def test_a_staff_change_with_a_reason_is_recorded_with_it(support: Client) -> None:
    subject = INSTANCES["consent.Subject"]()
    path = reverse("admin:consent_subject_staff_change", args=[subject.pk])

    response = support.post(
        path, {"purpose": "analytics", "decision": "grant", "reason": "Ticket 4711"}
    )

    assert response.status_code == 302
    event = ConsentEvent.objects.filter(subject=subject).latest("id")
    assert (event.source, event.reason, event.actor_id) == (
        Source.STAFF,
        "Ticket 4711",
        "staff:Support",
    )


@pytest.mark.parametrize("reason", ["", "  \n "], ids=repr)
def test_the_service_refuses_a_staff_change_without_a_reason_too(reason: str) -> None:
    subject = INSTANCES["consent.Subject"]()
    events = ConsentEvent.objects.count()

    with pytest.raises(InvalidValue) as refused:
        services.record_choice(
            external_id=subject.external_id,
            purpose_key="analytics",
            granted=True,
            source=Source.STAFF,
            actor=services.Actor(ActorType.STAFF, "staff:someone"),
            reason=reason,
        )

    assert refused.value.field == "reason"
    assert ConsentEvent.objects.count() == events
