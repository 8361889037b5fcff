"""Closing an account's month: invoices, credit notes and payouts.

A close takes everything of the account not yet invoiced that happened before the
month's end (so a late report lands on the next invoice, never on an issued one):
message charges, subscription charges, commission on captured digital-goods sales,
ad spend, and refunds. Per currency it issues one invoice (lines by market and category
for messages, by plan for subscriptions, by product type for commission, by campaign
for ad spend) and, for refunds, one credit note reversing their commission. Each line
is the exact sum of what it aggregates, rounded once to the currency's minor unit
(`billing.money.round_line`); the total is the sum of the lines. Numbers are gapless
per document kind and year of issue: `INV-2026-000001`, `CN-2026-000001`, taken from
a counter row locked FOR UPDATE in the close's transaction. A payout records what the
platform owes the seller for the month's sales.

Closing a closed month changes nothing (`PeriodClose`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from billing.choices import InvoiceKind, LineKind, PricedCategory, ProductType
from billing.errors import PeriodOpen
from billing.models import (
    AdSpend,
    BillingAccount,
    Invoice,
    InvoiceCounter,
    InvoiceLine,
    MessageCharge,
    Payout,
    PeriodClose,
    Purchase,
    Refund,
    SubscriptionCharge,
)
from billing.money import ZERO, round_line
from billing.services import month_bounds
from consent.errors import NotFound

PREFIX = {InvoiceKind.INVOICE: "INV", InvoiceKind.CREDIT_NOTE: "CN"}


@dataclass
class Total:
    amount: Decimal = ZERO
    quantity: int = 0


@dataclass
class Draft:
    """The lines of one document before it is numbered: (kind, description, market,
    category) → the exact amount and quantity they aggregate."""

    lines: dict[tuple[str, str, str, str], Total] = field(
        default_factory=lambda: defaultdict(Total)
    )

    def add(
        self,
        *,
        kind: str,
        description: str,
        amount: Decimal,
        quantity: int,
        market: str = "",
        category: str = "",
    ) -> None:
        entry = self.lines[(kind, description, market, category)]
        entry.amount += amount
        entry.quantity += quantity


def next_number(*, kind: str, year: int) -> tuple[int, str]:
    """The next number of its kind and year; gapless, because the counter row stays
    locked until the close's transaction commits (or rolls back, returning it)."""
    InvoiceCounter.objects.get_or_create(kind=kind, year=year)
    counter = InvoiceCounter.objects.select_for_update().get(kind=kind, year=year)
    counter.last += 1
    counter.save(update_fields=["last"])
    return counter.last, f"{PREFIX[InvoiceKind(kind)]}-{year}-{counter.last:06d}"


def _issue(
    *,
    account: BillingAccount,
    kind: str,
    currency: str,
    draft: Draft,
    start: datetime,
    end: datetime,
    now: datetime,
    credits: Invoice | None = None,
) -> Invoice:
    sequence, number = next_number(kind=kind, year=now.year)
    rows = []
    for position, ((line_kind, description, market, category), total) in enumerate(
        sorted(draft.lines.items()), start=1
    ):
        rows.append(
            InvoiceLine(
                position=position,
                kind=line_kind,
                description=description,
                market=market,
                category=category,
                quantity=total.quantity,
                exact_amount=total.amount,
                amount=round_line(total.amount, currency),
            )
        )
    invoice = Invoice.objects.create(
        account=account,
        kind=kind,
        number=number,
        year=now.year,
        sequence=sequence,
        period_start=start,
        period_end=end,
        currency=currency,
        total=sum((row.amount for row in rows), ZERO),
        credits=credits,
        issued_at=now,
    )
    for row in rows:
        row.invoice = invoice
    InvoiceLine.objects.bulk_create(rows)
    return invoice


def _category_label(category: str) -> str:
    return str(PricedCategory(category).label)


@transaction.atomic
def close_account_period(
    *, account_id: int, period_start: datetime, now: datetime | None = None
) -> list[Invoice]:
    """Closes one account's calendar month (UTC): issues its invoices and credit notes
    and records its payouts. Returns what was issued; closing again returns []."""
    now = now or timezone.now()
    start, end = month_bounds(period_start)
    if end > now:
        raise PeriodOpen(f"The month starting {start:%Y-%m-%d} has not ended.")
    account = BillingAccount.objects.select_for_update().filter(pk=account_id).first()
    if account is None:
        raise NotFound(f"No billing account {account_id}.", field="account")
    try:
        with transaction.atomic():
            PeriodClose.objects.create(account=account, period_start=start, closed_at=now)
    except IntegrityError:
        return []

    invoices: dict[str, Draft] = defaultdict(Draft)
    credit_notes: dict[str, Draft] = defaultdict(Draft)

    charges = list(
        MessageCharge.objects.filter(account=account, invoice=None, delivered_at__lt=end)
        .values("currency", "market", "category", "free_reason")
        .annotate(amount=Sum("amount"), n=Count("id"))
        .order_by()
    )
    for row in charges:
        free = " (free)" if row["free_reason"] else ""
        invoices[row["currency"]].add(
            kind=LineKind.MESSAGES,
            description=f"{_category_label(row['category'])} messages, {row['market']}{free}",
            market=row["market"],
            category=row["category"],
            amount=row["amount"],
            quantity=row["n"],
        )

    for sub in SubscriptionCharge.objects.filter(
        account=account, invoice=None, charged_at__lt=end
    ).order_by("charged_at", "id"):
        invoices[sub.currency].add(
            kind=LineKind.SUBSCRIPTION, description=sub.description, amount=sub.amount, quantity=1
        )

    sales: dict[str, Decimal] = defaultdict(lambda: ZERO)
    kept: dict[str, Decimal] = defaultdict(lambda: ZERO)
    refunded: dict[str, Decimal] = defaultdict(lambda: ZERO)
    purchases = list(
        Purchase.objects.filter(
            seller=account, invoice=None, captured_at__isnull=False, captured_at__lt=end
        ).select_related("product")
    )
    for bought in purchases:
        label = ProductType(bought.product.type).label
        invoices[bought.currency].add(
            kind=LineKind.COMMISSION,
            description=f"Commission on sales: {label}",
            category=bought.product.type,
            amount=bought.commission,
            quantity=1,
        )
        sales[bought.currency] += bought.amount
        kept[bought.currency] += bought.commission

    refunds = list(
        Refund.objects.filter(seller=account, credit_note=None, created_at__lt=end).select_related(
            "purchase__product"
        )
    )
    for made in refunds:
        label = ProductType(made.purchase.product.type).label
        credit_notes[made.currency].add(
            kind=LineKind.COMMISSION_REVERSAL,
            description=f"Commission reversed on refunds: {label}",
            category=made.purchase.product.type,
            amount=-made.commission_reversed,
            quantity=1,
        )
        refunded[made.currency] += made.amount
        kept[made.currency] -= made.commission_reversed

    spend: list[AdSpend] = list(
        AdSpend.objects.filter(account=account, invoice=None, day__lt=end.date())
    )
    for day_spend in spend:
        invoices[day_spend.currency].add(
            kind=LineKind.AD_SPEND,
            description=f"Ad spend: {day_spend.campaign_name} ({day_spend.pricing.upper()})",
            category=day_spend.pricing,
            amount=day_spend.amount,
            quantity=day_spend.clicks if day_spend.pricing == "cpc" else day_spend.impressions,
        )

    issued: list[Invoice] = []
    by_currency: dict[str, Invoice] = {}
    for currency, draft in sorted(invoices.items()):
        invoice = _issue(
            account=account,
            kind=InvoiceKind.INVOICE,
            currency=currency,
            draft=draft,
            start=start,
            end=end,
            now=now,
        )
        by_currency[currency] = invoice
        issued.append(invoice)
    for currency, draft in sorted(credit_notes.items()):
        issued.append(
            _issue(
                account=account,
                kind=InvoiceKind.CREDIT_NOTE,
                currency=currency,
                draft=draft,
                start=start,
                end=end,
                now=now,
                credits=by_currency.get(currency),
            )
        )

    # The account's row lock (taken above; every write that the close aggregates holds
    # it in share mode, `services.hold_account`) keeps these the rows summed above.
    for currency, invoice in by_currency.items():
        MessageCharge.objects.filter(
            account=account, invoice=None, delivered_at__lt=end, currency=currency
        ).update(invoice=invoice)
        SubscriptionCharge.objects.filter(
            account=account, invoice=None, charged_at__lt=end, currency=currency
        ).update(invoice=invoice)
        Purchase.objects.filter(pk__in=[p.pk for p in purchases if p.currency == currency]).update(
            invoice=invoice
        )
        AdSpend.objects.filter(pk__in=[s.pk for s in spend if s.currency == currency]).update(
            invoice=invoice
        )
    for note in issued:
        if note.kind == InvoiceKind.CREDIT_NOTE:
            Refund.objects.filter(
                pk__in=[r.pk for r in refunds if r.currency == note.currency]
            ).update(credit_note=note)

    for currency in sorted(set(sales) | set(refunded)):
        net_commission = kept[currency]
        Payout.objects.create(
            account=account,
            period_start=start,
            currency=currency,
            sales=sales[currency],
            refunds=refunded[currency],
            commission=net_commission,
            amount=round_line(sales[currency] - refunded[currency] - net_commission, currency),
            created_at=now,
        )
    return issued


def close_period(*, year: int, month: int, now: datetime | None = None) -> int:
    """Closes the month for every account, each in its own transaction; returns how
    many documents were issued. Safe to run again."""
    now = now or timezone.now()
    start = datetime(year, month, 1, tzinfo=UTC)
    issued = 0
    for account_id in BillingAccount.objects.filter(
        created_at__lt=month_bounds(start)[1]
    ).values_list("pk", flat=True):
        issued += len(close_account_period(account_id=account_id, period_start=start, now=now))
    return issued
