"""The staff admin's access matrix: the one place the tests read who reaches which page.

`MODELS` gives, for every model registered in the admin, what each staff persona may
do there — `v`iew, `a`dd, `c`hange, `d`elete — and the bulk actions it is offered;
`CUSTOM_VIEWS` gives the answer each persona gets from each custom admin page.
Personas are the three staff groups created by the migrations (`consent.0005`,
`ads.0002`, `billing.0004`), a staff account in no group, and a superuser; a signed-in
user who is not staff and an anonymous visitor are sent to the admin login page for
every admin URL. `tests/security/test_admin_matrix.py` checks every cell, that these
tables cover every registered model and custom view, and that docs/ADMIN.md says the
same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group, User
from django.utils import timezone

from ads.choices import CampaignStatus, Placement, Pricing
from ads.models import Advertiser, Campaign
from billing import invoicing
from billing import services as billing_services
from billing.models import CommissionRate, Invoice, MarketRate, Payout, Plan, RateCard
from consent import services, webhooks
from consent.choices import ActorType, Source
from consent.models import (
    ConsentEvent,
    ConsentState,
    Jurisdiction,
    MetadataCategory,
    PolicyVersion,
    Purpose,
    Rollout,
    WebhookDelivery,
)
from tests.factories import SubjectFactory

POLICY, SUPPORT, BILLING = "Policy staff", "Support", "Billing ops"
NO_GROUP, SUPERUSER = "staff without a group", "superuser"
NOT_STAFF, ANONYMOUS = "signed in, not staff", "anonymous"
STAFF = [POLICY, SUPPORT, BILLING, NO_GROUP, SUPERUSER]
PERSONAS = [*STAFF, NOT_STAFF, ANONYMOUS]
RIGHTS = {"v": "view", "a": "add", "c": "change", "d": "delete"}


@dataclass(frozen=True)
class Model:
    """A registered model: per staff persona its rights ("vac") and bulk actions."""

    label: str
    rights: dict[str, str]
    actions: dict[str, set[str]] = field(default_factory=dict)

    def of(self, persona: str) -> str:
        return self.rights.get(persona, "")

    def actions_of(self, persona: str) -> set[str]:
        return self.actions.get(persona, set())


BULK_DELETE = {"delete_selected"}

MODELS = [
    # --- consent: reference data and rollouts (policy staff)
    Model(
        "consent.MetadataCategory",
        {POLICY: "vac", SUPERUSER: "vacd"},
        {SUPERUSER: BULK_DELETE},
    ),
    Model("consent.Purpose", {POLICY: "vac", SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    # A draft version: a published one cannot be deleted, by anyone.
    Model("consent.PolicyVersion", {POLICY: "vac", SUPERUSER: "vacd"}),
    Model("consent.Jurisdiction", {POLICY: "vac", SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    Model("consent.Rollout", {POLICY: "vac", SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    # --- consent: individuals (support); events and states are read-only for everyone
    Model("consent.Subject", {SUPPORT: "v", SUPERUSER: "v"}),
    Model("consent.ConsentEvent", {SUPPORT: "v", SUPERUSER: "v"}),
    Model("consent.ConsentState", {SUPPORT: "v", SUPERUSER: "v"}),
    # --- consent: services and webhooks (superusers)
    Model("consent.ServiceAccount", {SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    Model("consent.ServiceToken", {SUPERUSER: "vc"}, {SUPERUSER: {"revoke"}}),
    Model("consent.WebhookSubscription", {SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    Model("consent.OutboxMessage", {SUPERUSER: "v"}),
    Model("consent.WebhookDelivery", {SUPERUSER: "v"}, {SUPERUSER: {"retry_now"}}),
    # --- ads (billing ops)
    Model("ads.Advertiser", {BILLING: "vac", SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    Model("ads.Campaign", {BILLING: "vac", SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    # --- billing (billing ops); nobody deletes billing data or changes what was charged
    Model("billing.BillingAccount", {BILLING: "vac", SUPERUSER: "vac"}),
    Model("billing.Plan", {BILLING: "vac", SUPERUSER: "vac"}),
    Model("billing.RateCard", {BILLING: "vac", SUPERUSER: "vac"}),
    Model("billing.MarketRate", {BILLING: "vc", SUPERUSER: "vc"}),
    Model("billing.CommissionRate", {BILLING: "vac", SUPERUSER: "vac"}),
    Model("billing.Product", {BILLING: "vac", SUPERUSER: "vac"}),
    Model("billing.Purchase", {BILLING: "v", SUPERUSER: "v"}),
    Model("billing.Invoice", {BILLING: "v", SUPERUSER: "v"}),
    Model(
        "billing.Payout",
        {BILLING: "v", SUPERUSER: "v"},
        {BILLING: {"mark_paid"}, SUPERUSER: {"mark_paid"}},
    ),
    # --- staff accounts and the sign-in rate limit (superusers)
    Model("auth.User", {SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    Model("auth.Group", {SUPERUSER: "vacd"}, {SUPERUSER: BULK_DELETE}),
    Model(
        "axes.AccessAttempt",
        {SUPERUSER: "vcd"},
        {SUPERUSER: {"cleanup_expired_attempts", "delete_selected"}},
    ),
    Model("axes.AccessFailureLog", {SUPERUSER: "vcd"}, {SUPERUSER: BULK_DELETE}),
    Model("axes.AccessLog", {SUPERUSER: "vcd"}, {SUPERUSER: BULK_DELETE}),
]
BY_LABEL = {model.label: model for model in MODELS}


@dataclass(frozen=True)
class CustomView:
    """A custom admin page: the URL name, its method, and who gets which answer (every
    other staff persona: 403)."""

    name: str
    method: str
    allowed: dict[str, int]
    what: str

    def expected(self, persona: str) -> int:
        return self.allowed.get(persona, 403)


CUSTOM_VIEWS = [
    CustomView(
        "consent_consentstate_statistics",
        "GET",
        {POLICY: 200, SUPERUSER: 200},
        "consent statistics (page)",
    ),
    CustomView(
        "consent_consentstate_statistics_csv",
        "GET",
        {POLICY: 200, SUPERUSER: 200},
        "consent statistics (CSV)",
    ),
    CustomView(
        "consent_rollout_control",
        "POST",
        {POLICY: 302, SUPERUSER: 302},
        "rollout controls: start now, pause, resume, cancel, dry run",
    ),
    CustomView(
        "consent_rollout_rollback_phase",
        "POST",
        {POLICY: 302, SUPERUSER: 302},
        "roll back a phase",
    ),
    CustomView(
        "consent_subject_staff_change",
        "GET",
        {SUPPORT: 200, SUPERUSER: 200},
        "record a staff consent change (with a reason)",
    ),
    CustomView("billing_invoice_print", "GET", {BILLING: 200, SUPERUSER: 200}, "printable invoice"),
    CustomView(
        "auth_user_password_change", "GET", {SUPERUSER: 200}, "set a staff account's password"
    ),
]
CUSTOM_BY_NAME = {view.name: view for view in CUSTOM_VIEWS}


# --- personas ------------------------------------------------------------------------------


def persona_user(persona: str) -> User | None:
    """The persona's user (None for the anonymous visitor), signed in by the tests with
    `force_login`: no password to hash."""
    username = persona.replace(" ", "-").replace(",", "")
    if persona == ANONYMOUS:
        return None
    if persona == SUPERUSER:
        return User.objects.create_superuser(username, email=None, password=None)
    user = User.objects.create_user(username, is_staff=persona != NOT_STAFF)
    if persona in (POLICY, SUPPORT, BILLING):
        user.groups.add(Group.objects.get(name=persona))
    return user


# --- one instance of every registered model -------------------------------------------------

JULY = datetime(2025, 7, 10, 10, 0, tzinfo=UTC)
AUGUST_CLOSED = datetime(2025, 9, 2, tzinfo=UTC)


def _subject() -> Any:
    return SubjectFactory.create(external_id="matrix-subject", country="DE")


def _event() -> ConsentEvent:
    subject = _subject()
    services.record_choice(
        external_id=subject.external_id,
        purpose_key="analytics",
        granted=True,
        source=Source.USER_APP,
        actor=services.Actor(ActorType.SERVICE, "service:tests"),
    )
    return ConsentEvent.objects.filter(subject=subject).latest("id")


def _advertiser() -> Advertiser:
    return Advertiser.objects.create(name="Lumen", country="DE", currency="EUR")


def _campaign() -> Campaign:
    return Campaign.objects.create(
        advertiser=_advertiser(),
        name="Autumn",
        placement=Placement.STATUS,
        status=CampaignStatus.ACTIVE,
        starts_at=timezone.now() - timedelta(days=1),
        pricing=Pricing.CPM,
        bid=Decimal("4"),
        daily_budget=Decimal("10"),
        total_budget=Decimal("100"),
    )


def _sale() -> Any:
    account = billing_services.create_account(
        kind="business", name="Casa", country="BR", currency="BRL", now=JULY
    )
    product = billing_services.create_product(
        seller_id=account.pk, type="guide", title="Guide", price=Decimal("10")
    )
    bought, _ = billing_services.purchase(
        purchase_id="p-1", product_id=product.pk, buyer="u", payment_method="x", now=JULY
    )
    return bought


def _closed_month() -> Any:
    account = _sale().seller
    invoicing.close_account_period(
        account_id=account.pk, period_start=datetime(2025, 7, 1, tzinfo=UTC), now=AUGUST_CLOSED
    )
    return account


def _delivery() -> WebhookDelivery:
    webhooks.subscribe(name="crm", url="https://crm.example.com/h", events=["consent.changed"])
    _event()
    webhooks.fan_out()
    delivery = WebhookDelivery.objects.order_by("pk").first()
    assert delivery is not None
    return delivery


def _outbox() -> Any:
    return _delivery().message


def _access(model_name: str) -> Any:
    from axes import models as axes_models

    fields: dict[str, Any] = {
        "user_agent": "tests",
        "ip_address": "192.0.2.1",
        "username": "someone",
        "http_accept": "text/html",
        "path_info": "/dashboard/signin",
    }
    if model_name == "AccessAttempt":
        fields |= {"get_data": "", "post_data": "", "failures_since_start": 1}
    return getattr(axes_models, model_name).objects.create(**fields)


INSTANCES: dict[str, Callable[[], Any]] = {
    "consent.MetadataCategory": lambda: MetadataCategory.objects.order_by("pk").first(),
    "consent.Purpose": lambda: Purpose.objects.get(key="analytics"),
    "consent.PolicyVersion": lambda: PolicyVersion.objects.create(label="2027-01", title="Draft"),
    "consent.Jurisdiction": lambda: Jurisdiction.objects.get(code="DE"),
    "consent.Rollout": lambda: Rollout.objects.get(version__label="2025-06"),
    "consent.Subject": _subject,
    "consent.ConsentEvent": _event,
    "consent.ConsentState": lambda: ConsentState.objects.filter(subject=_subject()).first(),
    "consent.ServiceAccount": lambda: (
        services.create_service_token(name="crm", scopes=["consent:read"])[0].account
    ),
    "consent.ServiceToken": lambda: services.create_service_token(
        name="crm", scopes=["consent:read"]
    )[0],
    "consent.WebhookSubscription": lambda: webhooks.subscribe(
        name="crm", url="https://crm.example.com/h", events=["consent.changed"]
    ),
    "consent.OutboxMessage": _outbox,
    "consent.WebhookDelivery": _delivery,
    "ads.Advertiser": _advertiser,
    "ads.Campaign": _campaign,
    "billing.BillingAccount": lambda: billing_services.create_account(
        kind="business", name="Casa", country="BR", currency="BRL"
    ),
    "billing.Plan": lambda: Plan.objects.order_by("pk").first(),
    "billing.RateCard": lambda: RateCard.objects.order_by("pk").first(),
    "billing.MarketRate": lambda: MarketRate.objects.order_by("pk").first(),
    "billing.CommissionRate": lambda: CommissionRate.objects.order_by("pk").first(),
    "billing.Product": lambda: billing_services.create_product(
        seller_id=billing_services.create_account(
            kind="business", name="Casa", country="BR", currency="BRL"
        ).pk,
        type="guide",
        title="Guide",
        price=Decimal("29.00"),
    ),
    "billing.Purchase": _sale,
    "billing.Invoice": lambda: Invoice.objects.get(account=_closed_month()),
    "billing.Payout": lambda: Payout.objects.get(account=_closed_month()),
    "auth.User": lambda: User.objects.create_user("someone-else"),
    "auth.Group": lambda: Group.objects.get(name=SUPPORT),
    "axes.AccessAttempt": lambda: _access("AccessAttempt"),
    "axes.AccessFailureLog": lambda: _access("AccessFailureLog"),
    "axes.AccessLog": lambda: _access("AccessLog"),
}


def describe(rights: str, actions: set[str]) -> str:
    """A cell of docs/ADMIN.md's matrix: "view, add, change (+ revoke)" or "—"."""
    if not rights:
        return "—"
    words = ", ".join(RIGHTS[letter] for letter in "vacd" if letter in rights)
    shown = sorted(actions - BULK_DELETE)
    return words + (f" (+ {', '.join(shown)})" if shown else "")
