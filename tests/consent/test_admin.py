"""The staff admin: least privilege per group, support's staff change, consent
statistics, rule validation and the rollout pages.

The cast (each a staff user put in their group by name, never a superuser):
- Pat, policy staff: reference data, rollouts and statistics; no individual's data;
- Sam, support: looks people up, reads their history, records staff changes;
- Bo, billing ops: no consent permission at all (billing models come later);
- an outsider with an account but no staff flag, and an anonymous visitor.

Django's admin answers a staff user without the permission with 403, and anyone who
is not active staff with a redirect (302) to the admin login page.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from django import forms
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from consent import selectors, services
from consent.admin_views import consent_statistics
from consent.choices import ActorType, Mechanism, RolloutStatus, Source
from consent.forms import JurisdictionForm, PurposeForm, rule_mechanism_errors
from consent.models import (
    ConsentEvent,
    ConsentState,
    Jurisdiction,
    JurisdictionRule,
    PolicyVersion,
    Purpose,
    Rollout,
    RolloutAction,
    RolloutPhase,
    Subject,
)
from tests.conftest import BILLING_OPS, POLICY_STAFF, SUPPORT, logged_in, staff_member
from tests.factories import SubjectFactory

pytestmark = pytest.mark.django_db

ADMIN_LOGIN = "/admin/login/"


# --- personas (Pat, Sam and Bo come from tests/conftest.py) ---------------------------


@pytest.fixture
def outsider() -> Client:
    return logged_in(User.objects.create_user("not-staff", password="pw-for-tests-only"))


@pytest.fixture
def personas(pat: Client, sam: Client, bo: Client) -> dict[str, Client]:
    return {"policy": pat, "support": sam, "billing": bo}


@pytest.fixture
def anna() -> Subject:
    return SubjectFactory.create(external_id="anna-de", country="DE")


# --- helpers --------------------------------------------------------------------------------


def form_data(response: Any, **overrides: Any) -> dict[str, Any]:
    """The admin change form of `response` as the browser would submit it unchanged
    (main form, inline formsets and their management forms), then `overrides`."""
    data: dict[str, Any] = {}

    def add(form: forms.BaseForm) -> None:
        for bound in form:
            if bound.field.disabled:
                continue
            value = bound.value()
            widget = bound.field.widget
            if isinstance(widget, forms.MultiWidget):
                parts = value if isinstance(value, list) else widget.decompress(value) or []
                for index, part in enumerate(parts):  # AdminSplitDateTime: date _0, time _1
                    data[f"{bound.html_name}_{index}"] = "" if part is None else str(part)
            elif isinstance(value, bool) or isinstance(widget, forms.CheckboxInput):
                if value:
                    data[bound.html_name] = "on"
            elif isinstance(value, list | tuple):
                data[bound.html_name] = [str(v) for v in value]
            elif value is not None:
                data[bound.html_name] = str(value)

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        add(inline.formset.management_form)
        for form in inline.formset.forms:
            add(form)
    data.update(overrides)
    return data


def rule_index(response: Any, purpose_key: str) -> int:
    """Position of a purpose's row in the jurisdiction page's rules formset."""
    [inline] = response.context["inline_admin_formsets"]
    for index, form in enumerate(inline.formset.forms):
        if form.instance.purpose.key == purpose_key:
            return index
    raise AssertionError(f"no rule row for {purpose_key}")


def errors_of(response: Any) -> str:
    """Every error message on an admin change form page, as one string."""
    forms_with_errors = [response.context["adminform"].form]
    messages: list[str] = []
    for inline in response.context["inline_admin_formsets"]:
        forms_with_errors += inline.formset.forms
        messages += inline.formset.non_form_errors()
    for form in forms_with_errors:
        messages += [message for errors in form.errors.values() for message in errors]
    return " ".join(messages)


def choose(subject: Subject, purpose: str, granted: bool, source: Source) -> None:
    services.record_choice(
        external_id=subject.external_id,
        purpose_key=purpose,
        granted=granted,
        source=source,
        actor=services.Actor(ActorType.SUBJECT, subject.external_id),
    )


def born(age: int) -> int:
    return selectors.today().year - age - 1


# --- groups ---------------------------------------------------------------------------------


def test_the_staff_groups_exist_with_least_privilege() -> None:
    def codenames(group: str) -> set[str]:
        return set(Group.objects.get(name=group).permissions.values_list("codename", flat=True))

    policy = codenames(POLICY_STAFF)
    assert {
        "change_purpose",
        "change_jurisdiction",
        "change_jurisdictionrule",
        "change_policyversion",
        "change_rollout",
        "control_rollout",
        "view_rolloutaction",
        "view_consent_statistics",
    } <= policy
    individual = {"subject", "consentevent", "consentstate", "servicetoken", "serviceaccount"}
    assert not {p for p in policy if p.split("_", 1)[1] in individual}
    assert not {p for p in policy if p.startswith("delete_") and p != "delete_rolloutphase"}
    assert codenames(SUPPORT) == {
        "view_subject",
        "record_staff_change",
        "view_consentevent",
        "view_consentstate",
    }
    # Billing ops has no consent permission at all; its ads permissions (advertisers and
    # campaigns) are pinned in tests/ads/test_admin.py.
    billing = Group.objects.get(name=BILLING_OPS).permissions
    assert not billing.filter(content_type__app_label="consent").exists()


def test_the_new_permissions_are_declared_on_their_models() -> None:
    found = {
        (p.content_type.model, p.codename)
        for p in Permission.objects.filter(
            codename__in=["record_staff_change", "view_consent_statistics", "control_rollout"]
        ).select_related("content_type")
    }
    assert found == {
        ("subject", "record_staff_change"),
        ("consentstate", "view_consent_statistics"),
        ("rollout", "control_rollout"),
    }


# --- who reaches which page ------------------------------------------------------------------


@pytest.fixture
def pages(anna: Subject) -> dict[str, list[str]]:
    event = ConsentEvent.objects.filter(subject=anna).first()
    assert event is not None
    de = Jurisdiction.objects.get(code="DE")
    version = PolicyVersion.objects.get(label="2025-06")
    purpose = Purpose.objects.get(key="analytics")
    rollout = Rollout.objects.order_by("pk").first()
    assert rollout is not None
    return {
        "policy": [
            "/admin/consent/purpose/",
            f"/admin/consent/purpose/{purpose.pk}/change/",
            "/admin/consent/metadatacategory/",
            "/admin/consent/jurisdiction/",
            f"/admin/consent/jurisdiction/{de.pk}/change/",
            "/admin/consent/policyversion/",
            f"/admin/consent/policyversion/{version.pk}/change/",
            "/admin/consent/policyversion/add/",
            "/admin/consent/rollout/",
            f"/admin/consent/rollout/{rollout.pk}/change/",
            "/admin/consent/consentstate/statistics/",
            "/admin/consent/consentstate/statistics.csv",
        ],
        "support": [
            "/admin/consent/subject/",
            f"/admin/consent/subject/?q={anna.external_id}",
            f"/admin/consent/subject/{anna.pk}/change/",
            f"/admin/consent/subject/{anna.pk}/history/",
            f"/admin/consent/subject/{anna.pk}/staff-change/",
            f"/admin/consent/consentevent/?subject__id__exact={anna.pk}",
            f"/admin/consent/consentevent/{event.pk}/change/",
            "/admin/consent/consentstate/",
        ],
        # Billing ops has no page of the consent app (its billing pages come with the
        # billing models); like everyone here it has the admin home page.
        "billing": [],
        "superusers": [
            "/admin/consent/serviceaccount/",
            "/admin/consent/servicetoken/",
            "/admin/auth/user/",
            "/admin/auth/group/",
        ],
    }


@pytest.mark.parametrize("persona", ["policy", "support", "billing"])
def test_each_group_reaches_exactly_its_pages(
    persona: str, personas: dict[str, Client], pages: dict[str, list[str]]
) -> None:
    client = personas[persona]
    assert client.get("/admin/").status_code == 200
    for path in pages[persona]:
        assert client.get(path).status_code == 200, path
    for other, paths in pages.items():
        if other == persona:
            continue
        for path in paths:
            assert client.get(path).status_code == 403, (persona, path)


def test_the_consent_app_page_lists_only_what_each_group_may_see(
    pat: Client, sam: Client, bo: Client
) -> None:
    policy_page = pat.get("/admin/consent/").content.decode()
    assert "/admin/consent/purpose/" in policy_page
    assert "/admin/consent/consentstate/statistics/" in policy_page
    assert "/admin/consent/subject/" not in policy_page

    support_page = sam.get("/admin/consent/").content.decode()
    assert "/admin/consent/subject/" in support_page
    assert "/admin/consent/purpose/" not in support_page
    assert "statistics" not in support_page

    # Django answers 404 for an app of which the user may see no model.
    assert bo.get("/admin/consent/").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/admin/consent/subject/",
        "/admin/consent/consentstate/statistics/",
        "/admin/consent/rollout/",
    ],
)
def test_anyone_but_active_staff_is_sent_to_the_login_page(outsider: Client, path: str) -> None:
    for client in (outsider, Client()):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{ADMIN_LOGIN}?next=")


def test_policy_staff_never_see_an_individual(pat: Client, anna: Subject) -> None:
    state = ConsentState.objects.filter(subject=anna).first()
    assert state is not None
    for path in (
        "/admin/consent/subject/",
        f"/admin/consent/subject/{anna.pk}/change/",
        "/admin/consent/consentevent/",
        f"/admin/consent/consentevent/{state.event_id}/change/",
        "/admin/consent/consentstate/",
        f"/admin/consent/consentstate/{state.pk}/change/",
    ):
        assert pat.get(path).status_code == 403, path
    for path in ("/admin/consent/consentstate/statistics/", "/admin/", "/admin/consent/"):
        assert anna.external_id not in pat.get(path).content.decode()


# --- support -----------------------------------------------------------------------------------


def test_support_opens_a_subject_and_reads_their_history(sam: Client, anna: Subject) -> None:
    choose(anna, "analytics", True, Source.USER_WEB)
    found = sam.get("/admin/consent/subject/", {"q": "anna-de"})
    assert found.status_code == 200
    assert f"/admin/consent/subject/{anna.pk}/change/" in found.content.decode()

    page = sam.get(f"/admin/consent/subject/{anna.pk}/change/").content.decode()
    history_url = f"/admin/consent/consentevent/?subject__id__exact={anna.pk}"
    assert history_url.replace("&", "&amp;") in page
    assert f"/admin/consent/subject/{anna.pk}/staff-change/" in page
    assert 'name="_save"' not in page  # the subject itself is read-only

    other = SubjectFactory.create(external_id="someone-else", country="FR")
    history = sam.get(history_url)
    assert history.status_code == 200
    events = list(history.context["cl"].result_list)
    assert events
    assert {e.subject_id for e in events} == {anna.pk}
    assert other.pk not in {e.subject_id for e in events}
    assert next(e.source for e in events) == Source.USER_WEB  # newest first


def test_support_records_a_staff_change_with_a_reason(sam: Client, anna: Subject) -> None:
    response = sam.post(
        f"/admin/consent/subject/{anna.pk}/staff-change/",
        {
            "purpose": "analytics",
            "decision": "grant",
            "reason": "Ticket 4711: asked by phone to allow analytics",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == f"/admin/consent/subject/{anna.pk}/change/"
    event = ConsentEvent.objects.filter(subject=anna).latest("id")
    assert event.source == Source.STAFF
    assert event.granted is True
    assert event.purpose.key == "analytics"
    assert event.reason == "Ticket 4711: asked by phone to allow analytics"
    assert event.actor_type == ActorType.STAFF
    assert event.actor_id == "staff:support-sam"
    state = ConsentState.objects.get(subject=anna, purpose__key="analytics")
    assert (state.granted, state.source, state.event_id) == (True, Source.STAFF, event.pk)


@pytest.mark.parametrize("reason", ["", "   \n  "])
def test_a_staff_change_without_a_reason_is_refused(
    sam: Client, anna: Subject, reason: str
) -> None:
    before = ConsentEvent.objects.count()

    response = sam.post(
        f"/admin/consent/subject/{anna.pk}/staff-change/",
        {"purpose": "analytics", "decision": "grant", "reason": reason},
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {"reason": ["This field is required."]}
    assert "This field is required." in response.content.decode()
    assert ConsentEvent.objects.count() == before


def test_a_staff_change_the_rules_forbid_is_shown_as_an_error(sam: Client) -> None:
    child = SubjectFactory.create(external_id="child-de", country="DE", birth_year=born(12))
    before = ConsentEvent.objects.count()

    response = sam.post(
        f"/admin/consent/subject/{child.pk}/staff-change/",
        {"purpose": "analytics", "decision": "grant", "reason": "Parent asked"},
    )
    essential = sam.post(
        f"/admin/consent/subject/{child.pk}/staff-change/",
        {"purpose": "service_delivery", "decision": "refuse", "reason": "Asked"},
    )

    assert response.status_code == 200
    assert "age rule" in str(response.context["form"].errors["decision"])
    assert essential.status_code == 200
    assert "purpose" in essential.context["form"].errors  # essential: not offered
    assert ConsentEvent.objects.count() == before


def test_only_support_may_record_a_staff_change(pat: Client, bo: Client, anna: Subject) -> None:
    before = ConsentEvent.objects.count()
    data = {"purpose": "analytics", "decision": "grant", "reason": "Because"}
    for client in (pat, bo):
        response = client.post(f"/admin/consent/subject/{anna.pk}/staff-change/", data)
        assert response.status_code == 403
    assert ConsentEvent.objects.count() == before


# --- consent statistics ---------------------------------------------------------------------------


@pytest.fixture
def known_consents(anna: Subject) -> None:
    """DE: 4 people (1 granted analytics on the web, 1 in the app, 2 kept the opt-in
    default), plus one erased person who must not count; US-CA: 1 person refused by
    support (staff). service_delivery is granted for everyone by default."""
    bert = SubjectFactory.create(external_id="bert-de", country="DE")
    SubjectFactory.create(external_id="carl-de", country="DE")
    SubjectFactory.create(external_id="dora-de", country="DE")
    gone = SubjectFactory.create(external_id="gone-de", country="DE")
    maria = SubjectFactory.create(external_id="maria-ca", country="US", subdivision="US-CA")
    choose(anna, "analytics", True, Source.USER_WEB)
    choose(bert, "analytics", True, Source.USER_APP)
    choose(gone, "analytics", True, Source.USER_WEB)
    services.erase_subject(external_id=gone.external_id, actor=services.SYSTEM)
    services.record_choice(
        external_id=maria.external_id,
        purpose_key="analytics",
        granted=False,
        source=Source.STAFF,
        actor=services.Actor(ActorType.STAFF, "staff:support-sam"),
        reason="Ticket 1",
    )


def statistics_csv(client: Client, **params: str) -> dict[tuple[str, str], dict[str, str]]:
    response = client.get("/admin/consent/consentstate/statistics.csv", params)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    rows = csv.DictReader(io.StringIO(response.content.decode()))
    return {(row["jurisdiction"], row["purpose"]): row for row in rows}


def test_statistics_csv_gives_shares_and_sources(pat: Client, known_consents: None) -> None:
    rows = statistics_csv(pat)

    de = rows[("DE", "analytics")]
    assert (de["total"], de["granted"], de["denied"]) == ("4", "2", "2")
    assert (de["granted_share"], de["denied_share"]) == ("0.5000", "0.5000")
    assert (de["user_web_granted"], de["user_app_granted"]) == ("1", "1")
    assert de["rollout_default_denied"] == "2"
    assert de["erasure_denied"] == "0"  # the erased person is left out

    ca = rows[("US-CA", "analytics")]
    assert (ca["total"], ca["granted"], ca["denied"], ca["staff_denied"]) == ("1", "0", "1", "1")

    everywhere = rows[("All", "analytics")]
    assert (everywhere["total"], everywhere["granted"], everywhere["denied"]) == ("5", "2", "3")
    assert everywhere["granted_share"] == "0.4000"
    assert rows[("All", "service_delivery")]["granted_share"] == "1.0000"
    assert set(rows) == {
        (code, purpose)
        for code in ("All", "DE", "US-CA")
        for purpose in ("service_delivery", "analytics")
    }


def test_statistics_page_shows_the_table_and_an_svg_chart(
    pat: Client, known_consents: None
) -> None:
    response = pat.get("/admin/consent/consentstate/statistics/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "<svg" in page
    assert "<script" not in page.split('id="content-main"')[1]
    assert "DE · analytics: 2 of 4 granted (50.0%)</title>" in page
    assert "US-CA · analytics: Changed by support staff — 1 of 1" in page
    rows = {(r.jurisdiction, r.purpose): r for r in response.context["stats"].rows}
    assert rows["DE", "analytics"].granted_percent == "50.0"
    assert "2 (50.0%)" in page
    assert [t.purpose for t in response.context["stats"].totals] == [
        "service_delivery",
        "analytics",
    ]
    assert 'style="' not in page.split('id="content-main"')[1]


def test_statistics_can_be_narrowed_to_a_region_and_a_purpose(
    pat: Client, known_consents: None
) -> None:
    us = statistics_csv(pat, region="us", purpose="analytics")
    assert set(us) == {("All", "analytics"), ("US-CA", "analytics")}

    unknown = pat.get("/admin/consent/consentstate/statistics/", {"purpose": "nonsense"})
    assert unknown.status_code == 200  # an unknown filter shows everything, with a note
    assert "Unknown filter value" in unknown.content.decode()


def test_statistics_are_one_aggregate_query_whatever_the_number_of_subjects(
    pat: Client, known_consents: None
) -> None:
    def count_queries(path: str) -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as queries:
            assert pat.get(path).status_code == 200
        return len(queries), [q["sql"] for q in queries.captured_queries]

    pat.get("/admin/")  # the session and permission caches of a first request
    page_small, sql = count_queries("/admin/consent/consentstate/statistics/")
    csv_small, _ = count_queries("/admin/consent/consentstate/statistics.csv")
    for n in range(15):
        SubjectFactory.create(external_id=f"more-{n}", country=["FR", "US", "BR"][n % 3])
    page_large, _ = count_queries("/admin/consent/consentstate/statistics/")
    csv_large, _ = count_queries("/admin/consent/consentstate/statistics.csv")

    # session, user, the user's and the group's permissions, the purposes of the
    # filter, and the aggregate
    assert (page_small, page_large) == (6, 6)
    # session, user, the user's and the group's permissions, and the aggregate
    assert (csv_small, csv_large) == (5, 5)
    aggregates = [s for s in sql if 'FROM "consent_consentstate"' in s]
    assert len(aggregates) == 1
    assert "GROUP BY" in aggregates[0]
    assert "COUNT(" in aggregates[0]


def test_statistics_selector_groups_by_jurisdiction_purpose_source_and_decision(
    known_consents: None, django_assert_num_queries: Callable[..., Any]
) -> None:
    with django_assert_num_queries(1):
        stats = consent_statistics(purpose_key="analytics")
    [total] = stats.totals
    assert (total.granted, total.denied) == (2, 3)
    assert total.by_source == {
        (Source.USER_WEB, True): 1,
        (Source.USER_APP, True): 1,
        (Source.ROLLOUT_DEFAULT, False): 2,
        (Source.STAFF, False): 1,
    }


# --- validation of the reference data ---------------------------------------------------------


@pytest.fixture
def de_page(pat: Client) -> tuple[str, Any]:
    path = f"/admin/consent/jurisdiction/{Jurisdiction.objects.get(code='DE').pk}/change/"
    response = pat.get(path)
    assert response.status_code == 200
    return path, response


def test_always_on_is_refused_for_a_purpose_that_is_not_essential(
    pat: Client, de_page: tuple[str, Any]
) -> None:
    path, page = de_page
    row = rule_index(page, "analytics")

    response = pat.post(path, form_data(page, **{f"rules-{row}-mechanism": "always_on"}))

    assert response.status_code == 200
    assert "only for essential purposes" in errors_of(response)
    assert "only for essential purposes" in response.content.decode()
    rule = JurisdictionRule.objects.get(jurisdiction__code="DE", purpose__key="analytics")
    assert rule.mechanism == Mechanism.OPT_IN


def test_an_essential_purpose_must_stay_always_on(pat: Client, de_page: tuple[str, Any]) -> None:
    path, page = de_page
    row = rule_index(page, "service_delivery")

    response = pat.post(
        path, form_data(page, **{f"rules-{row}-mechanism": "opt_in", "name": "Renamed"})
    )

    assert response.status_code == 200
    assert "'service_delivery' is essential" in errors_of(response)
    de = Jurisdiction.objects.get(code="DE")
    assert de.name != "Renamed"  # nothing of the page is saved
    assert de.rules.get(purpose__key="service_delivery").mechanism == Mechanism.ALWAYS_ON


def test_a_valid_rule_change_is_saved(pat: Client, de_page: tuple[str, Any]) -> None:
    path, page = de_page
    row = rule_index(page, "analytics")

    response = pat.post(path, form_data(page, **{f"rules-{row}-mechanism": "opt_out"}))

    assert response.status_code == 302
    rule = JurisdictionRule.objects.get(jurisdiction__code="DE", purpose__key="analytics")
    assert rule.mechanism == Mechanism.OPT_OUT


def test_consent_age_cannot_exceed_the_age_of_majority(
    pat: Client, de_page: tuple[str, Any]
) -> None:
    path, page = de_page

    response = pat.post(path, form_data(page, consent_age="19", minor_age="18"))

    assert response.status_code == 200
    assert "cannot be above the age of majority" in errors_of(response)
    assert Jurisdiction.objects.get(code="DE").consent_age == 16


@pytest.mark.parametrize("label", ["2025-6", "2025-13", "June 2025", "2025-06-01"])
def test_a_policy_version_label_must_be_year_and_month(pat: Client, label: str) -> None:
    page = pat.get("/admin/consent/policyversion/add/")
    data = form_data(page, label=label, title="Something new")

    response = pat.post("/admin/consent/policyversion/add/", data)

    assert response.status_code == 200
    assert "Use YYYY-MM" in errors_of(response)
    assert not PolicyVersion.objects.filter(title="Something new").exists()


def test_a_policy_version_with_a_good_label_is_created(pat: Client) -> None:
    page = pat.get("/admin/consent/policyversion/add/")

    response = pat.post(
        "/admin/consent/policyversion/add/",
        form_data(page, label="2026-07", title="Summer terms"),
    )

    assert response.status_code == 302
    assert PolicyVersion.objects.get(label="2026-07").title == "Summer terms"


def test_a_live_policy_versions_label_cannot_change(pat: Client) -> None:
    version = PolicyVersion.objects.get(label="2024-01")  # every jurisdiction's current one
    path = f"/admin/consent/policyversion/{version.pk}/change/"

    response = pat.post(path, form_data(pat.get(path), label="2023-12"))

    assert response.status_code == 200
    assert "cannot change" in errors_of(response)
    assert PolicyVersion.objects.filter(label="2024-01").exists()


def test_a_published_version_offers_no_delete_but_a_draft_does() -> None:
    admin_client = logged_in(User.objects.create_superuser("root-admin", password="pw-tests"))
    published = PolicyVersion.objects.get(label="2025-06")
    draft = PolicyVersion.objects.create(label="2031-01", title="Draft")

    refused = admin_client.get(f"/admin/consent/policyversion/{published.pk}/delete/")
    assert refused.status_code == 403
    changelist = admin_client.get("/admin/consent/policyversion/")
    assert "delete_selected" not in changelist.content.decode()

    deleted = admin_client.post(f"/admin/consent/policyversion/{draft.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not PolicyVersion.objects.filter(label="2031-01").exists()
    assert PolicyVersion.objects.filter(pk=published.pk).exists()


def test_a_purpose_becomes_essential_only_with_always_on_everywhere(pat: Client) -> None:
    analytics = Purpose.objects.get(key="analytics")
    path = f"/admin/consent/purpose/{analytics.pk}/change/"
    page = pat.get(path)
    data = form_data(page, essential="on")

    refused = pat.post(path, data)

    assert refused.status_code == 200
    assert "'analytics' is essential: it must be 'Always on'" in errors_of(refused)
    assert Purpose.objects.get(key="analytics").essential is False

    [inline] = page.context["inline_admin_formsets"]
    for index in range(len(inline.formset.forms)):
        data[f"{inline.formset.prefix}-{index}-mechanism"] = "always_on"
    accepted = pat.post(path, data)

    assert accepted.status_code == 302
    assert Purpose.objects.get(key="analytics").essential is True
    assert set(
        JurisdictionRule.objects.filter(purpose=analytics).values_list("mechanism", flat=True)
    ) == {Mechanism.ALWAYS_ON}


def test_an_essential_purpose_cannot_be_profiling_or_opted_out_by_gpc() -> None:
    purpose = Purpose.objects.get(key="service_delivery")
    data = {**PurposeForm(instance=purpose).initial, "gpc_applies": True, "profiling": True}
    data["categories"] = [c.pk for c in purpose.categories.all()]

    form = PurposeForm(data=data, instance=purpose)

    assert not form.is_valid()
    assert set(form.errors) == {"gpc_applies", "profiling"}


def test_the_seeded_reference_data_passes_the_admin_validation() -> None:
    for rule in JurisdictionRule.objects.select_related("purpose"):
        assert rule_mechanism_errors(purpose=rule.purpose, mechanism=rule.mechanism) is None
    for jurisdiction in Jurisdiction.objects.all():
        initial = JurisdictionForm(instance=jurisdiction).initial
        data = {k: v for k, v in initial.items() if v is not None}
        form = JurisdictionForm(data=data, instance=jurisdiction)
        assert form.is_valid(), (jurisdiction.code, form.errors)


# --- rollouts --------------------------------------------------------------------------------
# These use the rollout engine (`consent.rollouts`): start_now, pause, resume, cancel,
# dry_run and rollback_phase, each recording a RolloutAction.


@pytest.fixture
def rollout() -> Rollout:
    """A rollout of 2025-06 that has not started: phase 1 in DE (2 subjects), phase 2 in
    FR (1 subject), far in the future so that only staff can start them."""
    SubjectFactory.create(external_id="de-1", country="DE")
    SubjectFactory.create(external_id="de-2", country="DE")
    SubjectFactory.create(external_id="fr-1", country="FR")
    made = Rollout.objects.create(
        version=PolicyVersion.objects.get(label="2025-06"),
        name="Test rollout",
        status=RolloutStatus.SCHEDULED,
    )
    for position, code in ((1, "DE"), (2, "FR")):
        phase = RolloutPhase.objects.create(
            rollout=made,
            position=position,
            starts_at=datetime.combine(date(2099, position, 1), time(), tzinfo=UTC),
        )
        phase.jurisdictions.set([Jurisdiction.objects.get(code=code)])
    return made


def rollout_url(rollout: Rollout, tail: str = "change/") -> str:
    return f"/admin/consent/rollout/{rollout.pk}/{tail}"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_rollout_page_shows_phases_progress_and_controls(pat: Client, rollout: Rollout) -> None:
    phase = rollout.phases.get(position=1)
    RolloutPhase.objects.filter(pk=phase.pk).update(
        status=RolloutStatus.RUNNING, total=200, processed=50, failed=3
    )

    page = pat.get(rollout_url(rollout))

    assert page.status_code == 200
    html = page.content.decode()
    assert '<progress max="200" value="50"' in html
    assert "50 / 200 (25.0%)" in html
    assert "3 failed" in html
    for action in ("start", "pause", "dry-run", "cancel"):
        assert f'action="{rollout_url(rollout, f"control/{action}/")}"' in html, action
    assert "control/resume/" not in html  # only a paused rollout resumes
    assert f"phases/{phase.pk}/rollback/" not in html  # it has not started
    assert html.count("csrfmiddlewaretoken") >= 5
    assert "No dry run yet." in html
    assert 'style="' not in html.split('id="content-main"')[1].split("<form")[0]


def test_rollout_controls_are_for_holders_of_control_rollout_only(
    sam: Client, rollout: Rollout
) -> None:
    viewer = staff_member("viewer-vic", None)
    viewer.user_permissions.add(Permission.objects.get(codename="view_rollout"))
    vic = logged_in(viewer)

    page = vic.get(rollout_url(rollout))

    assert page.status_code == 200
    assert "control/start/" not in page.content.decode()
    for client in (vic, sam):
        assert client.post(rollout_url(rollout, "control/start/")).status_code == 403
    assert sam.get(rollout_url(rollout)).status_code == 403
    assert not RolloutAction.objects.filter(rollout=rollout).exists()
    assert rollout.phases.filter(status=RolloutStatus.SCHEDULED).count() == 2


def test_controls_accept_only_post(pat: Client, rollout: Rollout) -> None:
    assert pat.get(rollout_url(rollout, "control/start/")).status_code == 405
    assert pat.post(rollout_url(rollout, "control/explode/")).status_code == 403


def test_staff_start_the_next_phase_now_and_the_history_names_them(
    pat: Client, rollout: Rollout
) -> None:
    response = pat.post(rollout_url(rollout, "control/start/"), follow=True)

    assert response.redirect_chain == [(rollout_url(rollout), 302)]
    assert "Started the next phase (phase 1)." in messages_of(response)
    first = rollout.phases.get(position=1)
    assert first.status == RolloutStatus.RUNNING
    assert first.started_at is not None
    assert rollout.phases.get(position=2).status == RolloutStatus.SCHEDULED
    action = RolloutAction.objects.filter(rollout=rollout).latest("id")
    assert action.actor == "staff:policy-pat"
    html = response.content.decode()
    assert "staff:policy-pat" in html
    assert f"phases/{first.pk}/rollback/" in html  # a started phase can be rolled back


def test_pause_then_resume(pat: Client, rollout: Rollout) -> None:
    pat.post(rollout_url(rollout, "control/start/"))

    paused = pat.post(rollout_url(rollout, "control/pause/"), follow=True)
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PAUSED
    assert "Paused the rollout." in messages_of(paused)
    assert "control/resume/" in paused.content.decode()

    pat.post(rollout_url(rollout, "control/resume/"))
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING
    actors = set(RolloutAction.objects.filter(rollout=rollout).values_list("actor", flat=True))
    assert "staff:policy-pat" in actors


def test_an_invalid_transition_is_shown_and_changes_nothing(pat: Client, rollout: Rollout) -> None:
    response = pat.post(rollout_url(rollout, "control/resume/"), follow=True)

    assert response.status_code == 200
    assert any("cannot be resumed" in m for m in messages_of(response))
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.SCHEDULED
    assert not RolloutAction.objects.filter(rollout=rollout).exists()


def test_cancel_stops_the_rollout(pat: Client, rollout: Rollout) -> None:
    response = pat.post(rollout_url(rollout, "control/cancel/"), follow=True)

    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.CANCELLED
    assert "Cancelled the rollout." in messages_of(response)
    html = response.content.decode()
    assert "control/start/" not in html
    assert "control/cancel/" not in html


def test_the_dry_run_result_is_stored_and_shown(pat: Client, rollout: Rollout) -> None:
    response = pat.post(rollout_url(rollout, "control/dry-run/"), follow=True)

    rollout.refresh_from_db()
    assert rollout.dry_run is not None
    assert [p["subjects"] for p in rollout.dry_run["phases"]] == [2, 1]
    dry_run = response.context["dry_run"]
    assert [(p["position"], p["subjects"]) for p in dry_run["phases"]] == [(1, 2), (2, 1)]
    assert dry_run["phases"][0]["jurisdictions"] == [{"code": "DE", "subjects": 2}]
    html = response.content.decode()
    assert "Subjects the rollout would reach" in html
    assert "Decisions per purpose" in html
    assert RolloutAction.objects.filter(rollout=rollout, actor="staff:policy-pat").exists()


def test_a_started_phase_can_be_rolled_back(pat: Client, rollout: Rollout) -> None:
    pat.post(rollout_url(rollout, "control/start/"))
    phase = rollout.phases.get(position=1)

    response = pat.post(rollout_url(rollout, f"phases/{phase.pk}/rollback/"), follow=True)

    assert response.redirect_chain == [(rollout_url(rollout), 302)]
    assert any(m.startswith("Rolled back phase 1") for m in messages_of(response))
    phase.refresh_from_db()
    assert phase.status == RolloutStatus.ROLLED_BACK
    assert RolloutAction.objects.filter(phase=phase, actor="staff:policy-pat").count() >= 2


def test_a_phase_that_has_not_started_cannot_be_rolled_back(pat: Client, rollout: Rollout) -> None:
    phase = rollout.phases.get(position=2)

    response = pat.post(rollout_url(rollout, f"phases/{phase.pk}/rollback/"), follow=True)

    assert any("cannot be rolled back" in m for m in messages_of(response))
    phase.refresh_from_db()
    assert phase.status == RolloutStatus.SCHEDULED


def test_a_started_phase_is_read_only_in_the_form_and_cannot_be_deleted(
    pat: Client, rollout: Rollout
) -> None:
    pat.post(rollout_url(rollout, "control/start/"))
    page = pat.get(rollout_url(rollout))
    [inline] = page.context["inline_admin_formsets"]
    first = next(f for f in inline.formset.forms if f.instance.position == 1)
    assert all(first.fields[name].disabled for name in ("position", "starts_at", "jurisdictions"))

    index = inline.formset.forms.index(first)
    data = form_data(page, **{f"{inline.formset.prefix}-{index}-DELETE": "on"})
    response = pat.post(rollout_url(rollout), data)

    assert response.status_code == 200
    assert "has started: it cannot be deleted" in errors_of(response)
    assert rollout.phases.count() == 2


def test_phases_must_start_in_the_order_of_their_positions(pat: Client, rollout: Rollout) -> None:
    page = pat.get(rollout_url(rollout))
    [inline] = page.context["inline_admin_formsets"]
    second = next(i for i, f in enumerate(inline.formset.forms) if f.instance.position == 2)

    data = form_data(page, **{f"{inline.formset.prefix}-{second}-starts_at_0": "2098-01-01"})
    response = pat.post(rollout_url(rollout), data)

    assert response.status_code == 200
    assert "Phase 2 starts before phase 1" in errors_of(response)
