"""Closing a month: invoices with lines by market and category, one rounding per line,
totals equal to the sum of lines, gapless numbers, credit notes for refunds, payouts,
ad spend reported by the ads app, immutability, and a close that can run again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, InternalError, connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from ads import decisions
from ads.choices import CampaignStatus, Placement, Pricing
from ads.models import Ad, Advertiser, Campaign
from billing import invoicing, services, tasks
from billing.errors import PeriodOpen
from billing.models import (
    AdSpend,
    BillingAccount,
    Invoice,
    InvoiceLine,
    MessageCharge,
    Payout,
    PeriodClose,
)
from billing.money import round_line
from tests.billing.conftest import JULY, NOW, charge
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

AUGUST = datetime(2025, 8, 1, tzinfo=UTC)
SEPTEMBER = datetime(2025, 9, 1, tzinfo=UTC)


def close(account: BillingAccount, month: datetime = AUGUST, now: datetime = NOW) -> list[Invoice]:
    return invoicing.close_account_period(account_id=account.pk, period_start=month, now=now)


def lines(invoice: Invoice) -> list[tuple[str, int, Decimal]]:
    return [(line.description, line.quantity, line.amount) for line in invoice.lines.all()]


# --- lines and totals -------------------------------------------------------------------------


def test_message_lines_are_aggregated_by_market_and_category(acme: BillingAccount) -> None:
    for _ in range(1000):
        charge(acme)
    for _ in range(3):
        charge(acme, recipient_country="DE", category="utility")
    charge(acme, recipient_country="FR", category="marketing")
    charge(acme, recipient_country="FR", category="utility", service_window_open=True)

    (invoice,) = close(acme)

    assert invoice.kind == "invoice"
    assert (invoice.currency, invoice.period_start, invoice.period_end) == (
        "USD",
        AUGUST,
        SEPTEMBER,
    )
    assert lines(invoice) == [
        ("Marketing messages, India", 1000, Decimal("10.70")),
        ("Marketing messages, Rest of Western Europe", 1, Decimal("0.06")),
        ("Utility messages, Germany", 3, Decimal("0.16")),  # 0.1650, half to even
        ("Utility messages, Rest of Western Europe (free)", 1, Decimal("0.00")),
    ]
    assert invoice.total == Decimal("10.92")
    assert MessageCharge.objects.filter(invoice=invoice).count() == 1005


def test_each_line_is_rounded_once_half_to_even(acme: BillingAccount) -> None:
    # 3 x 0.0550 = 0.1650 → 0.16 (half to even), where rounding each charge first would
    # give 3 x 0.06 = 0.18.
    for _ in range(3):
        charge(acme, recipient_country="DE", category="utility")
    # 5 x 0.0014 = 0.0070 → 0.01
    for _ in range(5):
        charge(acme, category="utility")

    (invoice,) = close(acme)

    line_amounts = {
        line.description: (line.exact_amount, line.amount) for line in invoice.lines.all()
    }
    assert line_amounts["Utility messages, Germany"] == (Decimal("0.165000"), Decimal("0.16"))
    assert line_amounts["Utility messages, India"] == (Decimal("0.007000"), Decimal("0.01"))
    assert invoice.total == Decimal("0.17")


def test_rounding_follows_the_currencys_minor_unit() -> None:
    assert round_line(Decimal("19.645161"), "USD") == Decimal("19.65")
    assert round_line(Decimal("0.125"), "EUR") == Decimal("0.12")
    assert round_line(Decimal("0.135"), "EUR") == Decimal("0.14")
    assert round_line(Decimal("4400.5"), "JPY") == Decimal("4400")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rates=st.lists(
        st.tuples(
            st.sampled_from(["IN", "DE", "BR", "GB", "ID", "FR"]),
            st.sampled_from(["marketing", "utility", "authentication"]),
            st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.009999"), places=6),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_an_invoice_total_is_exactly_the_sum_of_its_lines(
    acme: BillingAccount, rates: list[tuple[str, str, Decimal]]
) -> None:
    """Many sub-cent charges: whatever they are, the total is the sum of the rounded
    lines, and each line is its exact sum rounded once."""
    with transaction.atomic():
        for country, category, rate in rates:
            made = charge(acme, recipient_country=country, category=category)
            # Sub-cent amounts of any kind (as volume tiers or a future card could give).
            MessageCharge.objects.filter(pk=made.pk).update(amount=rate, rate=rate)
        (invoice,) = close(acme)
        all_lines = list(invoice.lines.all())

        assert invoice.total == sum((line.amount for line in all_lines), Decimal(0))
        for line in all_lines:
            assert line.amount == round_line(line.exact_amount, "USD")
            assert line.amount == line.amount.quantize(Decimal("0.01"))
        assert sum((line.exact_amount for line in all_lines), Decimal(0)) == sum(
            (r for _, _, r in rates), Decimal(0)
        )
        transaction.set_rollback(True)


# --- the close --------------------------------------------------------------------------------


def test_closing_a_closed_month_changes_nothing(acme: BillingAccount) -> None:
    charge(acme)
    first = close(acme)

    again = close(acme)
    through_the_job = invoicing.close_period(year=2025, month=8, now=NOW)

    assert len(first) == 1
    assert again == []
    assert through_the_job == 0
    assert Invoice.objects.count() == 1
    assert PeriodClose.objects.filter(account=acme).count() == 1


def test_a_late_report_for_a_closed_month_goes_on_the_next_invoice(acme: BillingAccount) -> None:
    charge(acme)
    (august,) = close(acme)

    late = charge(acme, delivered_at=JULY + timedelta(days=1))
    (september,) = close(acme, month=SEPTEMBER)

    assert lines(august) == [("Marketing messages, India", 1, Decimal("0.01"))]
    late.refresh_from_db()
    assert late.invoice == september
    assert [inv.pk for inv in Invoice.objects.filter(account=acme)] == [september.pk, august.pk]


def test_a_month_that_has_not_ended_cannot_be_closed(acme: BillingAccount) -> None:
    with pytest.raises(PeriodOpen):
        close(acme, month=AUGUST, now=datetime(2025, 8, 31, 23, 59, tzinfo=UTC))


def test_an_account_with_nothing_to_bill_gets_no_invoice(acme: BillingAccount) -> None:
    assert close(acme) == []


def test_numbers_are_gapless_per_kind_and_year(db: None) -> None:
    accounts = [
        services.create_account(
            kind="business", name=f"Shop {n}", country="US", currency="USD", now=JULY
        )
        for n in range(3)
    ]
    for account in accounts:
        charge(account)

    assert invoicing.close_period(year=2025, month=8, now=NOW) == 3
    charge(accounts[0], delivered_at=SEPTEMBER + timedelta(days=2))
    invoicing.close_period(year=2025, month=9, now=datetime(2027, 1, 2, tzinfo=UTC))

    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003", "INV-2027-000001"]


def test_the_beat_job_renews_subscriptions_then_closes_last_month(
    acme: BillingAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.change_plan(account_id=acme.pk, plan="premium", now=JULY)
    charge(acme)
    monkeypatch.setattr(timezone, "now", lambda: datetime(2025, 9, 1, 0, 30, tzinfo=UTC))

    result = tasks.close_last_month()

    assert result == {"renewed": 1, "issued": 1}
    (invoice,) = Invoice.objects.filter(account=acme)
    assert [d for d, _, _ in lines(invoice)] == [
        "Marketing messages, India",
        "Upgrade from Free to Premium, prorated from 12 Aug 2025 10:00 UTC",
    ]
    # 29.00 for the 19 days and 14 hours left of August's 31 days: 18.324596… → 18.32
    assert lines(invoice)[1][2] == Decimal("18.32")
    assert tasks.close_last_month() == {"renewed": 0, "issued": 0}


def test_the_beat_schedule_runs_the_close_monthly() -> None:
    from django.conf import settings as django_settings

    entry: dict[str, Any] = django_settings.CELERY_BEAT_SCHEDULE["billing-close-month"]
    assert entry["task"] == "billing.tasks.close_last_month"
    assert (entry["schedule"].day_of_month, entry["schedule"].hour) == ({1}, {0})


@pytest.mark.postgres
def test_issued_invoices_and_lines_cannot_be_changed_or_deleted(acme: BillingAccount) -> None:
    charge(acme)
    (invoice,) = close(acme)

    for statement in [
        lambda: Invoice.objects.filter(pk=invoice.pk).update(total=Decimal(0)),
        lambda: InvoiceLine.objects.filter(invoice=invoice).update(amount=Decimal(0)),
        lambda: InvoiceLine.objects.filter(invoice=invoice).delete(),
    ]:
        with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
            statement()
    assert Invoice.objects.get(pk=invoice.pk).total == Decimal("0.01")


@pytest.mark.postgres
def test_the_counter_is_locked_for_update_while_numbering(acme: BillingAccount) -> None:
    from django.test.utils import CaptureQueriesContext

    charge(acme)
    with CaptureQueriesContext(connection) as queries:
        close(acme)
    counter = [q["sql"] for q in queries if "billing_invoicecounter" in q["sql"]]
    assert any("FOR UPDATE" in sql for sql in counter)


# --- digital goods, refunds and payouts --------------------------------------------------------


def test_commission_is_invoiced_refunds_get_a_credit_note_and_the_seller_a_payout(
    db: None,
) -> None:
    casa = services.create_account(
        kind="business", name="Casa Verde", country="BR", currency="BRL", now=JULY
    )
    letter = services.create_product(
        seller_id=casa.pk, type="newsletter", title="Letter", price=Decimal("19.90")
    )
    guide = services.create_product(
        seller_id=casa.pk, type="guide", title="Guide", price=Decimal("29.00")
    )
    for n in range(3):
        services.purchase(
            purchase_id=f"l-{n}", product_id=letter.pk, buyer="u", payment_method="x", now=JULY
        )
    services.purchase(
        purchase_id="g-1", product_id=guide.pk, buyer="u", payment_method="x", now=JULY
    )
    services.refund(refund_id="r-1", purchase_id="g-1", amount=Decimal("14.50"), now=JULY)

    invoice, credit_note = close(casa)

    assert (invoice.kind, invoice.currency, invoice.number) == ("invoice", "BRL", "INV-2026-000001")
    assert lines(invoice) == [
        ("Commission on sales: Downloadable guide", 1, Decimal("2.90")),
        ("Commission on sales: Paid newsletter", 3, Decimal("5.97")),
    ]
    assert invoice.total == Decimal("8.87")
    assert (credit_note.kind, credit_note.number, credit_note.credits) == (
        "credit_note",
        "CN-2026-000001",
        invoice,
    )
    assert lines(credit_note) == [
        ("Commission reversed on refunds: Downloadable guide", 1, Decimal("-1.45"))
    ]
    assert credit_note.total == Decimal("-1.45")
    payout = Payout.objects.get(account=casa)
    # sales 88.70 - refunds 14.50 - commission (8.87 - 1.45 = 7.42) = 66.78
    assert (payout.sales, payout.refunds, payout.commission, payout.amount, payout.status) == (
        Decimal("88.70"),
        Decimal("14.50"),
        Decimal("7.420000"),
        Decimal("66.78"),
        "owed",
    )


def test_a_refund_in_a_later_month_is_credited_then(db: None) -> None:
    casa = services.create_account(
        kind="business", name="Casa Verde", country="BR", currency="BRL", now=JULY
    )
    guide = services.create_product(
        seller_id=casa.pk, type="guide", title="Guide", price=Decimal("29.00")
    )
    services.purchase(
        purchase_id="g-1", product_id=guide.pk, buyer="u", payment_method="x", now=JULY
    )
    (august,) = close(casa)
    services.refund(refund_id="r-1", purchase_id="g-1", now=SEPTEMBER + timedelta(days=3))

    (credit_note,) = close(casa, month=SEPTEMBER)

    assert august.total == Decimal("2.90")
    assert (credit_note.kind, credit_note.total, credit_note.credits) == (
        "credit_note",
        Decimal("-2.90"),
        None,
    )
    assert Payout.objects.get(account=casa, period_start=SEPTEMBER).amount == Decimal("-26.10")


def test_an_account_is_invoiced_per_currency(db: None) -> None:
    casa = services.create_account(
        kind="business", name="Casa Verde", country="BR", currency="BRL", plan="premium", now=JULY
    )
    charge(casa, recipient_country="BR")

    usd, brl = sorted(close(casa), key=lambda invoice: invoice.currency, reverse=True)

    assert (usd.currency, lines(usd)) == (
        "USD",
        [("Marketing messages, Brazil", 1, Decimal("0.06"))],
    )
    assert brl.currency == "BRL"
    assert brl.total == round_line(
        Decimal(149) * Decimal(19 * 86400 + 14 * 3600) / (31 * 86400), "BRL"
    )


# --- ad spend ----------------------------------------------------------------------------------


@pytest.fixture
def lumen_account(db: None) -> BillingAccount:
    return services.create_account(
        kind="advertiser", name="Lumen Coffee", country="US", currency="USD", now=JULY
    )


def _campaign(account: BillingAccount | None, pricing: str = Pricing.CPM) -> Campaign:
    advertiser = Advertiser.objects.create(
        name="Lumen Coffee", country="US", currency="USD", billing_account=account
    )
    campaign = Campaign.objects.create(
        advertiser=advertiser,
        name="Autumn blend",
        placement=Placement.STATUS,
        status=CampaignStatus.ACTIVE,
        starts_at=timezone.now() - timedelta(days=1),
        pricing=pricing,
        bid=Decimal("4.00"),
        daily_budget=Decimal("50"),
        total_budget=Decimal("500"),
    )
    Ad.objects.create(campaign=campaign, headline="Autumn", body="Blend", call_to_action="Shop")
    return campaign


def _impressions(count: int) -> None:
    for n in range(count):
        subject = SubjectFactory.create(external_id=f"viewer-{n}", country="US")
        if n == 0:
            publish("2025-06", "US")
        decision = decisions.decide(
            external_id=subject.external_id,
            placement=Placement.STATUS,
            context={"country": "US", "language": "en"},
        )
        assert decision.ad is not None
        decisions.record_event(decision_id=decision.pk, type="impression")


def test_ads_report_spend_to_the_advertisers_billing_account(lumen_account: BillingAccount) -> None:
    campaign = _campaign(lumen_account)

    _impressions(3)

    spend = AdSpend.objects.get(account=lumen_account)
    assert (spend.campaign_ref, spend.impressions, spend.amount, spend.currency) == (
        f"ads-campaign-{campaign.pk}",
        3,
        Decimal("0.012000"),
        "USD",
    )
    today = timezone.now()
    month = datetime(today.year, today.month, 1, tzinfo=UTC)
    (invoice,) = invoicing.close_account_period(
        account_id=lumen_account.pk, period_start=month, now=month + timedelta(days=40)
    )
    assert lines(invoice) == [("Ad spend: Autumn blend (CPM)", 3, Decimal("0.01"))]


def test_an_advertiser_without_a_billing_account_reports_nothing(db: None) -> None:
    _campaign(None)

    _impressions(1)

    assert not AdSpend.objects.exists()


def test_ad_spend_of_an_invoiced_day_starts_a_new_row(lumen_account: BillingAccount) -> None:
    day = JULY.date()
    first = services.record_ad_spend(
        account_id=lumen_account.pk, campaign_ref="ads-campaign-1", campaign_name="A",
        pricing="cpc", day=day, impressions=0, clicks=1, amount=Decimal("0.5"), currency="USD",
    )  # fmt: skip
    (invoice,) = close(lumen_account)
    second = services.record_ad_spend(
        account_id=lumen_account.pk, campaign_ref="ads-campaign-1", campaign_name="A",
        pricing="cpc", day=day, impressions=0, clicks=2, amount=Decimal("1"), currency="USD",
    )  # fmt: skip

    first.refresh_from_db()
    assert first.invoice == invoice
    assert (second.pk != first.pk, second.clicks, second.invoice) == (True, 2, None)
    assert lines(invoice) == [("Ad spend: A (CPC)", 1, Decimal("0.50"))]


# --- the API and the printable page -----------------------------------------------------------


def test_the_api_lists_an_accounts_invoices_with_lines(
    ledger: APIClient, acme: BillingAccount
) -> None:
    charge(acme)
    close(acme)

    answer = ledger.get(f"/api/v1/billing/accounts/{acme.pk}/invoices")

    assert answer.status_code == 200
    (invoice,) = answer.json()["results"]
    assert (invoice["number"], invoice["kind"], invoice["total"], invoice["currency"]) == (
        "INV-2026-000001",
        "invoice",
        "0.010000",
        "USD",
    )
    assert invoice["lines"][0] | {"exact_amount": None} == {
        "position": 1,
        "kind": "messages",
        "description": "Marketing messages, India",
        "market": "India",
        "category": "marketing",
        "quantity": 1,
        "exact_amount": None,
        "amount": "0.010000",
    }
    assert ledger.get("/api/v1/billing/accounts/999999/invoices").status_code == 404


def test_the_invoice_list_takes_a_fixed_number_of_queries(
    ledger: APIClient, acme: BillingAccount, django_assert_num_queries: Callable[..., Any]
) -> None:
    month = AUGUST
    for _ in range(6):
        charge(acme, delivered_at=month + timedelta(days=3))
        charge(acme, delivered_at=month + timedelta(days=3), recipient_country="DE")
        close(acme, month=month)
        month = services.month_bounds(month)[1]
    ledger.get(f"/api/v1/billing/accounts/{acme.pk}/invoices")

    # the account exists, the invoices with their credited invoice, their lines
    with django_assert_num_queries(3):
        answer = ledger.get(f"/api/v1/billing/accounts/{acme.pk}/invoices")
    assert len(answer.json()["results"]) == 6


def test_billing_ops_print_an_invoice_on_a_page_without_inline_style_or_script(
    bo: Any, acme: BillingAccount
) -> None:
    charge(acme)
    (invoice,) = close(acme)

    page = bo.get(f"/admin/billing/invoice/{invoice.pk}/print/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "INV-2026-000001" in html
    assert "Marketing messages, India" in html
    assert "billing/invoice.css" in html
    assert "<style" not in html
    assert "style=" not in html
    assert "<script" not in html
    assert "default-src 'self'" in page["Content-Security-Policy"]


def test_the_printable_page_is_for_staff_with_the_permission(
    sam: Any, acme: BillingAccount, client: Any
) -> None:
    charge(acme)
    (invoice,) = close(acme)
    url = f"/admin/billing/invoice/{invoice.pk}/print/"

    assert sam.get(url).status_code == 403
    assert client.get(url).status_code == 302  # to the admin login


def test_the_print_css_has_print_rules() -> None:
    from django.contrib.staticfiles import finders

    path = finders.find("billing/invoice.css")
    assert path is not None
    with open(path, encoding="utf-8") as css:
        assert "@media print" in css.read()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_close_running_beside_new_charges_bills_each_charge_exactly_once() -> None:
    import threading

    account = services.create_account(
        kind="business", name="Busy Co", country="US", currency="USD", now=JULY
    )
    for _ in range(20):
        charge(account)
    start = threading.Barrier(9)
    failures: list[BaseException] = []

    def charge_more(worker: int) -> None:
        try:
            start.wait()
            for n in range(15):
                charge(account, message_id=f"busy-{worker}-{n}")
        except BaseException as error:  # reported below
            failures.append(error)
        finally:
            connection.close()

    def close_august() -> None:
        try:
            start.wait()
            close(account)
        except BaseException as error:  # reported below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=charge_more, args=(w,)) for w in range(8)]
    threads.append(threading.Thread(target=close_august))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    (invoice,) = Invoice.objects.filter(account=account)
    (line,) = invoice.lines.all()
    billed = MessageCharge.objects.filter(invoice=invoice)
    assert line.quantity == billed.count() >= 20
    assert line.exact_amount == sum(c.amount for c in billed)
    assert MessageCharge.objects.filter(account=account).count() == 20 + 8 * 15
