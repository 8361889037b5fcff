"""Billing accounts and business plans: Free and Premium, calendar-month periods,
prorated upgrades, downgrades and cancellation at the end of the period, and the
verified badge that only a paid Premium plan gives."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from billing import services
from billing.errors import PriceMissing
from billing.models import BillingAccount, Plan, PlanPrice, Subscription, SubscriptionCharge
from consent.errors import Conflict, InvalidValue

pytestmark = pytest.mark.django_db

DEC_1 = datetime(2025, 12, 1, tzinfo=UTC)
DEC_11 = datetime(2025, 12, 11, tzinfo=UTC)  # 21 of December's 31 days are left
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)


def open_account(
    plan: str = "free", now: datetime = DEC_1, currency: str = "USD"
) -> BillingAccount:
    return services.create_account(
        kind="business", name="Casa Verde", country="BR", currency=currency, plan=plan, now=now
    )


def active(account: BillingAccount) -> Subscription:
    return Subscription.objects.get(account=account, status="active")


def charges(account: BillingAccount) -> list[tuple[str, Decimal]]:
    return [
        (c.plan.code, c.amount)
        for c in SubscriptionCharge.objects.filter(account=account).select_related("plan")
    ]


def test_plans_are_free_and_premium_with_their_features() -> None:
    free, premium = Plan.objects.get(code="free"), Plan.objects.get(code="premium")

    assert free.is_default
    assert not any(
        [free.advanced_analytics, free.automation_workflows, free.crm_integration,
         free.dedicated_support, free.verified_badge]
    )  # fmt: skip
    assert all(
        [premium.advanced_analytics, premium.automation_workflows, premium.crm_integration,
         premium.dedicated_support, premium.verified_badge]
    )  # fmt: skip
    assert PlanPrice.objects.get(plan=premium, currency="USD").monthly_price == Decimal("29.00")


def test_a_new_account_starts_on_the_free_plan_for_the_calendar_month() -> None:
    account = open_account(now=DEC_11)
    subscription = active(account)

    assert subscription.plan.code == "free"
    assert (subscription.current_period_start, subscription.current_period_end) == (DEC_1, JAN_1)
    assert charges(account) == []
    assert not account.verified_badge


def test_premium_from_mid_month_is_charged_for_the_rest_of_the_month() -> None:
    account = open_account(plan="premium", now=DEC_11)

    # 29.00 * 21/31 = 19.645161… kept exact to six places until an invoice rounds it.
    assert charges(account) == [("premium", Decimal("19.645161"))]
    assert account.verified_badge


def test_an_upgrade_starts_now_and_charges_the_prorated_difference() -> None:
    account = open_account(now=DEC_1)

    upgraded = services.change_plan(account_id=account.pk, plan="premium", now=DEC_11)

    assert upgraded.plan.code == "premium"
    assert (upgraded.current_period_start, upgraded.current_period_end) == (DEC_1, JAN_1)
    assert charges(account) == [("premium", Decimal("19.645161"))]
    assert Subscription.objects.filter(account=account, status="ended").count() == 1
    account.refresh_from_db()
    assert account.verified_badge


def test_upgrading_on_the_first_instant_of_the_period_costs_the_whole_month() -> None:
    account = open_account(now=DEC_1)
    services.change_plan(account_id=account.pk, plan="premium", now=DEC_1)

    assert charges(account) == [("premium", Decimal("29.000000"))]


def test_a_downgrade_waits_for_the_end_of_the_period() -> None:
    account = open_account(plan="premium", now=DEC_1)

    pending = services.change_plan(account_id=account.pk, plan="free", now=DEC_11)

    assert (pending.plan.code, pending.next_plan.code if pending.next_plan else None) == (
        "premium",
        "free",
    )
    account.refresh_from_db()
    assert account.verified_badge  # paid until the end of the period

    assert services.renew_subscriptions(now=JAN_1) == 1
    account.refresh_from_db()
    assert active(account).plan.code == "free"
    assert not account.verified_badge
    assert charges(account) == [("premium", Decimal("29.000000"))]


def test_cancelling_returns_to_free_at_the_period_end_and_can_be_withdrawn() -> None:
    account = open_account(plan="premium", now=DEC_1)

    services.cancel_plan(account_id=account.pk, now=DEC_11)
    assert active(account).next_plan == Plan.objects.get(code="free")
    services.change_plan(account_id=account.pk, plan="premium", now=DEC_11)
    assert active(account).next_plan is None

    services.renew_subscriptions(now=JAN_1)
    renewed = active(account)
    assert (renewed.plan.code, renewed.current_period_start) == ("premium", JAN_1)
    assert charges(account) == [("premium", Decimal("29.000000"))] * 2


def test_cancelling_the_free_plan_is_refused() -> None:
    account = open_account()
    with pytest.raises(Conflict):
        services.cancel_plan(account_id=account.pk, now=DEC_11)


def test_renewal_catches_up_on_missed_months_and_is_idempotent() -> None:
    account = open_account(plan="premium", now=DEC_1)

    assert services.renew_subscriptions(now=datetime(2026, 2, 3, tzinfo=UTC)) == 2
    assert services.renew_subscriptions(now=datetime(2026, 2, 3, tzinfo=UTC)) == 0
    assert active(account).current_period_start == datetime(2026, 2, 1, tzinfo=UTC)
    assert len(charges(account)) == 3


def test_a_plan_without_a_price_in_the_accounts_currency_is_refused() -> None:
    PlanPrice.objects.filter(plan__code="premium", currency="JPY").delete()
    account = open_account(currency="JPY")

    with pytest.raises(PriceMissing):
        services.change_plan(account_id=account.pk, plan="premium", now=DEC_11)


def test_a_premium_plan_at_no_charge_gives_no_badge() -> None:
    PlanPrice.objects.filter(plan__code="premium", currency="USD").update(monthly_price=0)

    account = open_account(plan="premium")

    assert not account.verified_badge


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"country": "XX"}, "country"),
        ({"currency": "XYZ"}, "currency"),
        ({"kind": "reseller"}, "kind"),
        ({"plan": "platinum"}, "plan"),
    ],
)
def test_bad_account_values_are_refused(values: dict[str, Any], field: str) -> None:
    base = {"kind": "business", "name": "X", "country": "BR", "currency": "BRL"}
    with pytest.raises(InvalidValue) as refused:
        services.create_account(**{**base, **values})
    assert refused.value.field == field


# --- the API ---------------------------------------------------------------------------------


@pytest.fixture
def crm(api_client: Callable[..., APIClient]) -> APIClient:
    return api_client("billing:read", "billing:write", name="business-crm")


def test_the_api_opens_and_lists_accounts_as_the_contract_says(crm: APIClient) -> None:
    created = crm.post(
        "/api/v1/billing/accounts",
        {"name": "Casa Verde", "country": "BR", "currency": "BRL", "plan": "premium"},
        format="json",
    )
    listed = crm.get("/api/v1/billing/accounts")

    assert created.status_code == 201
    body = created.json()
    assert {k: body[k] for k in ["name", "country", "currency", "plan", "kind"]} == {
        "name": "Casa Verde",
        "country": "BR",
        "currency": "BRL",
        "plan": "premium",
        "kind": "business",
    }
    assert body["verified_badge"] is True
    assert body["subscription"]["monthly_price"] == "149.000000"
    assert listed.status_code == 200
    assert [a["id"] for a in listed.json()["results"]] == [body["id"]]
    assert set(listed.json()["results"][0]) >= {"id", "name", "country", "currency", "plan"}


def test_the_api_changes_plans(crm: APIClient) -> None:
    account = open_account()

    upgraded = crm.put(
        f"/api/v1/billing/accounts/{account.pk}/plan", {"plan": "premium"}, format="json"
    )
    downgraded = crm.put(
        f"/api/v1/billing/accounts/{account.pk}/plan", {"plan": "free"}, format="json"
    )
    unknown = crm.put(f"/api/v1/billing/accounts/{account.pk}/plan", {"plan": "x"}, format="json")
    missing = crm.put("/api/v1/billing/accounts/999999/plan", {"plan": "free"}, format="json")

    assert (upgraded.status_code, upgraded.json()["plan"]) == (200, "premium")
    assert downgraded.json()["subscription"]["next_plan"] == "free"
    assert downgraded.json()["plan"] == "premium"
    assert unknown.status_code == 400
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "A", "country": "BR", "currency": "BRL", "colour": "green"},
        {"name": "A", "country": "Brazil", "currency": "BRL"},
        {"name": "A", "country": "QQ", "currency": "BRL"},
        {"name": "A", "country": "BR", "currency": "DOGE"},
        {"name": "", "country": "BR", "currency": "BRL"},
        ["not", "an", "object"],
    ],
)
def test_bad_account_bodies_get_a_400_problem(crm: APIClient, body: Any) -> None:
    answer = crm.post("/api/v1/billing/accounts", body, format="json")

    assert answer.status_code == 400
    assert answer["Content-Type"] == "application/problem+json"
    assert not BillingAccount.objects.exists()


def test_accounts_need_billing_scopes(api_client: Callable[..., APIClient]) -> None:
    consent_only = api_client("consent:read", "consent:write")
    reader = api_client("billing:read")

    assert consent_only.get("/api/v1/billing/accounts").status_code == 403
    assert reader.get("/api/v1/billing/accounts").status_code == 200
    assert (
        reader.post(
            "/api/v1/billing/accounts",
            {"name": "A", "country": "BR", "currency": "BRL"},
            format="json",
        ).status_code
        == 403
    )


def test_the_account_list_takes_a_fixed_number_of_queries(
    crm: APIClient, django_assert_num_queries: Callable[..., Any]
) -> None:
    for n in range(12):
        open_account(plan="premium" if n % 2 else "free")
    crm.get("/api/v1/billing/accounts")  # the token is verified and cached

    # the accounts page, and their active subscriptions with both plans
    with django_assert_num_queries(2):
        answer = crm.get("/api/v1/billing/accounts")
    assert len(answer.json()["results"]) == 12


@given(seconds=st.integers(min_value=0, max_value=31 * 86400 - 1))
def test_an_upgrade_never_costs_more_than_the_difference_for_the_whole_month(
    seconds: int,
) -> None:
    at = DEC_1 + timedelta(seconds=seconds)

    charged = services.prorated(Decimal("29.00"), start=DEC_1, end=JAN_1, at=at)

    assert Decimal(0) < charged <= Decimal("29.00")
    assert abs(charged - Decimal("29.00") * (31 * 86400 - seconds) / (31 * 86400)) <= Decimal(
        "0.0000005"
    )
