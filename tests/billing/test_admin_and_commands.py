"""Billing ops in the admin, the rate-card import command and file format, the demo
seed, and the ads app's click-to-chat window as billing sees it.

The cast: Bo from billing ops, Pat from policy staff, Sam from support.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from ads import decisions
from ads.choices import CampaignStatus, Placement, Pricing
from ads.forms import AdvertiserForm
from ads.models import Ad, Advertiser, Campaign
from billing import ratecards, services
from billing.models import (
    BillingAccount,
    CommissionRate,
    MarketRate,
    Payout,
    Product,
    RateCard,
    Subscription,
)
from tests.billing.conftest import JULY, NOW, charge
from tests.conftest import BILLING_OPS
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

DATA = Path(ratecards.__file__).resolve().parent / "data"


# --- permissions and pages -------------------------------------------------------------------


def test_billing_ops_manage_billing_and_only_view_what_was_charged() -> None:
    granted = set(
        Group.objects.get(name=BILLING_OPS)
        .permissions.filter(content_type__app_label="billing")
        .values_list("codename", flat=True)
    )

    assert {
        "add_ratecard",
        "change_marketrate",
        "add_volumetier",
        "change_commissionrate",
    } <= granted
    assert {"view_invoice", "view_purchase", "view_payout", "change_payout"} <= granted
    assert not {c for c in granted if c.startswith("delete_")}
    assert not {"change_invoice", "change_invoiceline", "change_purchase", "add_invoice"} & granted
    assert not {c for c in granted if c.endswith(("messagecharge", "messagevolume"))}


def test_no_other_group_has_billing_permissions() -> None:
    for group in Group.objects.exclude(name=BILLING_OPS):
        assert not group.permissions.filter(content_type__app_label="billing").exists()


def test_billing_ops_reach_the_billing_pages(bo: Client, acme: BillingAccount) -> None:
    charge(acme)
    services.create_product(seller_id=acme.pk, type="guide", title="G", price=Decimal("5"))
    card = RateCard.objects.get(effective_from=date(2025, 7, 1))
    market = MarketRate.objects.filter(rate_card=card).first()
    assert market is not None
    for path in [
        "/admin/billing/",
        "/admin/billing/billingaccount/",
        "/admin/billing/billingaccount/add/",
        f"/admin/billing/billingaccount/{acme.pk}/change/",
        "/admin/billing/plan/",
        "/admin/billing/ratecard/",
        f"/admin/billing/ratecard/{card.pk}/change/",
        f"/admin/billing/marketrate/{market.pk}/change/",
        "/admin/billing/commissionrate/",
        "/admin/billing/product/",
        "/admin/billing/purchase/",
        "/admin/billing/invoice/",
        "/admin/billing/payout/",
    ]:
        assert bo.get(path).status_code == 200, path
    assert bo.get(f"/admin/billing/billingaccount/{acme.pk}/delete/").status_code == 403
    assert bo.get(f"/admin/billing/ratecard/{card.pk}/delete/").status_code == 403
    assert bo.get("/admin/billing/invoice/add/").status_code == 403
    assert bo.get("/admin/billing/messagecharge/").status_code == 404


@pytest.mark.parametrize("persona", ["pat", "sam"])
def test_policy_staff_and_support_do_not_see_billing(
    persona: str, request: pytest.FixtureRequest
) -> None:
    client: Client = request.getfixturevalue(persona)

    assert client.get("/admin/billing/ratecard/").status_code == 403
    assert client.get("/admin/billing/invoice/").status_code == 403


def test_an_account_added_in_the_admin_starts_on_the_free_plan(bo: Client) -> None:
    answer = bo.post(
        "/admin/billing/billingaccount/add/",
        {
            "kind": "business",
            "name": "Nova",
            "country": "in",
            "currency": "INR",
            "subscriptions-TOTAL_FORMS": "0",
            "subscriptions-INITIAL_FORMS": "0",
        },
    )

    assert answer.status_code == 302, answer.content
    account = BillingAccount.objects.get(name="Nova")
    assert account.country == "IN"
    assert Subscription.objects.get(account=account, status="active").plan.code == "free"


def _card_form(card: RateCard, **changes: dict[str, str]) -> dict[str, str]:
    """The rate card's change form as the admin renders it, with some rows changed."""
    markets = list(card.markets.order_by("is_rest_of_world", "name"))
    data = {
        "effective_from": card.effective_from.isoformat(),
        "name": card.name,
        "currency": card.currency,
        "auth_international_threshold": str(card.auth_international_threshold),
        "markets-TOTAL_FORMS": str(len(markets)),
        "markets-INITIAL_FORMS": str(len(markets)),
    }
    for n, market in enumerate(markets):
        row = {
            "id": str(market.pk),
            "rate_card": str(card.pk),
            "name": market.name,
            "countries": market.countries,
            "is_rest_of_world": "on" if market.is_rest_of_world else "",
            "notes": market.notes,
        }
        for column in ratecards.RATE_COLUMNS:
            value = getattr(market, column)
            row[column] = "" if value is None else str(value)
        row.update(changes.get(market.name, {}))
        data |= {f"markets-{n}-{k}": v for k, v in row.items() if v != ""}
    return data


def test_billing_ops_fill_the_rest_of_world_rates_in_the_admin(
    bo: Client, acme: BillingAccount
) -> None:
    card = RateCard.objects.get(effective_from=date(2025, 7, 1))

    answer = bo.post(
        f"/admin/billing/ratecard/{card.pk}/change/",
        _card_form(card, **{"Rest of world": {"marketing": "0.0600", "utility": "0.0100"}}),
    )

    assert answer.status_code == 302, answer.content.decode()[:2000]
    assert charge(acme, recipient_country="JP").amount == Decimal("0.0600")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Brazil": {"countries": "BR IN"}}, "IN is in both"),
        ({"Brazil": {"countries": "BR XQ"}}, "is not an ISO 3166-1 alpha-2 country code"),
        ({"Rest of world": {"countries": "JP"}}, "lists no countries"),
        ({"India": {"marketing": "-0.01"}}, "A rate is zero or more"),
    ],
)
def test_rate_card_edits_are_validated(
    bo: Client, changes: dict[str, dict[str, str]], message: str
) -> None:
    card = RateCard.objects.get(effective_from=date(2025, 7, 1))

    answer = bo.post(f"/admin/billing/ratecard/{card.pk}/change/", _card_form(card, **changes))

    assert answer.status_code == 200
    assert message in answer.content.decode()
    assert MarketRate.objects.get(rate_card=card, name="India").marketing == Decimal("0.0107")


def test_billing_ops_change_the_commission_of_a_product_type(bo: Client) -> None:
    guide = CommissionRate.objects.get(product_type="guide")
    rows = list(CommissionRate.objects.order_by("product_type"))
    data = {"form-TOTAL_FORMS": str(len(rows)), "form-INITIAL_FORMS": str(len(rows)), "_save": "1"}
    for n, row in enumerate(rows):
        data[f"form-{n}-id"] = str(row.pk)
        data[f"form-{n}-rate"] = "0.1500" if row.pk == guide.pk else str(row.rate)

    answer = bo.post("/admin/billing/commissionrate/", data)

    assert answer.status_code == 302
    guide.refresh_from_db()
    assert guide.rate == Decimal("0.1500")


def test_billing_ops_mark_payouts_paid(bo: Client) -> None:
    casa = services.create_account(
        kind="business", name="Casa", country="BR", currency="BRL", now=JULY
    )
    product = services.create_product(
        seller_id=casa.pk, type="guide", title="G", price=Decimal("10")
    )
    services.purchase(
        purchase_id="p", product_id=product.pk, buyer="u", payment_method="x", now=JULY
    )
    from billing import invoicing

    invoicing.close_account_period(
        account_id=casa.pk, period_start=datetime(2025, 8, 1, tzinfo=UTC), now=NOW
    )
    payout = Payout.objects.get(account=casa)

    answer = bo.post(
        "/admin/billing/payout/", {"action": "mark_paid", "_selected_action": [str(payout.pk)]}
    )

    assert answer.status_code == 302
    payout.refresh_from_db()
    assert (payout.status, payout.amount) == ("paid", Decimal("9.00"))


# --- the rate-card command and format --------------------------------------------------------


def test_the_shipped_cards_are_imported_by_migrate() -> None:
    july, january = RateCard.objects.order_by("effective_from")
    assert (july.effective_from, january.effective_from) == (date(2025, 7, 1), date(2026, 1, 1))
    assert july.markets.count() == january.markets.count() == 10  # nine rows and rest of world
    assert MarketRate.objects.get(rate_card=january, name="India").marketing == Decimal("0.0118")
    assert MarketRate.objects.get(rate_card=july, name="India").authentication_international == (
        Decimal("0.0280")
    )


def test_importing_a_card_again_changes_nothing(tmp_path: Path) -> None:
    out = StringIO()
    call_command(
        "import_rate_card", str(DATA / "rate_card_2025-07.csv"), "--effective", "2025-07-01",
        stdout=out,
    )  # fmt: skip

    assert "unchanged" in out.getvalue()
    assert RateCard.objects.count() == 2


def test_a_new_card_is_imported_with_its_rest_of_world_row(tmp_path: Path) -> None:
    path = tmp_path / "card.csv"
    path.write_text(
        ",".join(ratecards.COLUMNS) + "\nIndia,IN,USD,0.0120,0.0015,0.0015,0.0300,\n",
        encoding="utf-8",
    )
    out = StringIO()

    call_command("import_rate_card", str(path), "--effective", "2026-04-01", stdout=out)
    call_command("import_rate_card", str(path), "--effective", "2026-04-01", stdout=out)

    card = RateCard.objects.get(effective_from=date(2026, 4, 1))
    assert card.name == "April 2026"
    assert sorted(card.markets.values_list("name", "is_rest_of_world")) == [
        ("India", False),
        ("Rest of world", True),
    ]
    assert "Imported" in out.getvalue()
    assert "unchanged" in out.getvalue()


def test_a_different_card_for_a_date_that_has_one_is_refused() -> None:
    with pytest.raises(CommandError, match="different rate card"):
        call_command(
            "import_rate_card", str(DATA / "rate_card_2026-01.csv"), "--effective", "2025-07-01"
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("market,countries\nIndia,IN\n", "header"),
        ("{h}\nIndia,IN,USD,abc,0.1,0.1,,\n", "not a decimal"),
        ("{h}\nIndia,IN,USD,-1,0.1,0.1,,\n", "zero or more"),
        ("{h}\nIndia,IN,USD,0.1,0.1,0.1,,\nAsia,IN TH,USD,0.1,0.1,0.1,,\n", "IN is in both"),
        ("{h}\nIndia,IX,USD,0.1,0.1,0.1,,\n", "not an ISO"),
        ("{h}\nIndia,IN,USD,0.1,0.1,0.1,,\nThai,TH,EUR,0.1,0.1,0.1,,\n", "one currency"),
        ("{h}\nIndia,IN,USD,0.1,0.1\n", "columns"),
        ("{h}\n", "no markets"),
    ],
)
def test_bad_rate_card_files_are_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ratecards.RateCardError, match=message):
        ratecards.parse(text.format(h=",".join(ratecards.COLUMNS)))


def test_the_command_refuses_a_bad_date_or_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not a date"):
        call_command("import_rate_card", str(DATA / "rate_card_2025-07.csv"), "--effective", "x")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_rate_card", str(tmp_path / "none.csv"), "--effective", "2026-04-01")


# --- the demo seed ---------------------------------------------------------------------------


def test_the_demo_seed_adds_accounts_and_products_once(settings: Any) -> None:
    settings.DEBUG = True
    call_command("seed_demo_billing", stdout=StringIO())
    call_command("seed_demo_billing", stdout=StringIO())

    casa = BillingAccount.objects.get(name="Casa Verde Café")
    assert (casa.currency, casa.verified_badge) == ("BRL", True)
    assert BillingAccount.objects.count() == 3
    assert Product.objects.count() == 4


def test_the_demo_seed_refuses_production(settings: Any) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo_billing", stdout=StringIO())


# --- the ads app -----------------------------------------------------------------------------


def test_a_click_on_a_click_to_chat_ad_makes_the_businesss_messages_free_for_72_hours(
    acme: BillingAccount,
) -> None:
    now = timezone.now()
    publish("2025-06", "US")
    SubjectFactory.create(external_id="ada", country="US", language="en-US")
    campaign = Campaign.objects.create(
        advertiser=Advertiser.objects.create(name="Acme ads", country="US"),
        name="Chat with Acme",
        placement=Placement.STATUS,
        status=CampaignStatus.ACTIVE,
        starts_at=now - timedelta(days=5),
        pricing=Pricing.CPC,
        bid=Decimal("0.40"),
        daily_budget=Decimal("10"),
        total_budget=Decimal("100"),
        click_to_chat=str(acme.pk),  # the billing account's id as text
    )
    Ad.objects.create(campaign=campaign, headline="Chat", body="Ask us", call_to_action="Chat")
    clicked_at = now - timedelta(hours=80)
    decision = decisions.decide(
        external_id="ada",
        placement=Placement.STATUS,
        context={"country": "US", "language": "en"},
        now=clicked_at,
    )
    decisions.record_event(decision_id=decision.pk, type="click", occurred_at=clicked_at, now=now)

    inside = charge(acme, recipient="ada", delivered_at=clicked_at + timedelta(hours=1), now=now)
    last = charge(acme, recipient="ada", delivered_at=clicked_at + timedelta(hours=71), now=now)
    other = charge(acme, recipient="bob", delivered_at=clicked_at + timedelta(hours=1), now=now)
    after = charge(acme, recipient="ada", delivered_at=clicked_at + timedelta(hours=72), now=now)

    assert (inside.amount, inside.free_reason) == (Decimal(0), "entry_point_window")
    assert inside.entry_point_window_open is True
    assert last.free_reason == "entry_point_window"
    assert (other.free_reason, after.free_reason) == ("", "")
    assert other.amount == after.amount == Decimal("0.0118")  # the January 2026 card


def test_an_advertisers_billing_account_must_share_its_currency(acme: BillingAccount) -> None:
    form = AdvertiserForm(
        data={"name": "Acme ads", "country": "US", "currency": "EUR", "billing_account": acme.pk}
    )
    assert not form.is_valid()
    assert "billing_account" in form.errors

    same = AdvertiserForm(
        data={"name": "Acme ads", "country": "US", "currency": "USD", "billing_account": acme.pk}
    )
    assert same.is_valid(), same.errors
