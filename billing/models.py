"""What businesses and advertisers pay: accounts, plans and subscriptions, rate cards,
message charges, digital goods, ad spend, invoices and payouts.

Every amount is a `Decimal` next to the currency it is in; amounts before invoicing
keep six decimal places (sub-cent message rates, prorations) and are rounded only on
an invoice line (`billing.invoicing`). Every time is timezone-aware UTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.choices import (
    CURRENCY_CHOICES,
    MINOR_UNITS,
    AccountKind,
    FreeReason,
    InvoiceKind,
    LineKind,
    PayoutStatus,
    PricedCategory,
    ProductType,
    PurchaseStatus,
    SubscriptionStatus,
    TemplateCategory,
    TierCategory,
)

MONEY: dict[str, Any] = {"max_digits": 20, "decimal_places": 6}
RATE: dict[str, Any] = {"max_digits": 12, "decimal_places": 6}


def _in(field: str, values: Any) -> Q:
    return Q(**{f"{field}__in": [v if isinstance(v, str) else v[0] for v in values]})


def _currency_known(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=_in("currency", list(MINOR_UNITS)), name=name)


class BillingAccount(models.Model):
    """A business or an advertiser that Parley bills, in one currency."""

    kind = models.CharField(max_length=16, choices=AccountKind.choices)
    name = models.CharField(max_length=120)
    country = models.CharField(max_length=2, help_text="Where the account is based (ISO 3166-1).")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    verified_badge = models.BooleanField(
        default=False, help_text="Shown while the account is on a paid plan with the badge."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=_in("kind", AccountKind.values), name="account_kind"),
            _currency_known("account_currency_known"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"


class Plan(models.Model):
    """Free or Premium: what a business plan unlocks. Prices are `PlanPrice` rows."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=60)
    is_default = models.BooleanField(
        default=False, help_text="The plan new accounts start on and cancelled plans end on."
    )
    advanced_analytics = models.BooleanField(default=False)
    automation_workflows = models.BooleanField(default=False)
    crm_integration = models.BooleanField(default=False)
    dedicated_support = models.BooleanField(default=False)
    verified_badge = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_plan"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class PlanPrice(models.Model):
    """The monthly price of a plan in one currency (configuration, set by billing ops)."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="prices")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    monthly_price = models.DecimalField(**MONEY)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "currency"], name="one_price_per_currency"),
            models.CheckConstraint(
                condition=Q(monthly_price__gte=0), name="plan_price_not_negative"
            ),
            _currency_known("plan_price_currency_known"),
        ]

    def __str__(self) -> str:
        return f"{self.plan} {self.monthly_price} {self.currency}"


class Subscription(models.Model):
    """An account's plan over calendar-month periods (UTC). One is active at a time;
    `next_plan` is what the account moves to at the end of the period (a downgrade or
    a cancellation, which returns to the default plan)."""

    account = models.ForeignKey(
        BillingAccount, on_delete=models.PROTECT, related_name="subscriptions"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=8, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    monthly_price = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    next_plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(status=SubscriptionStatus.ACTIVE),
                name="one_active_subscription",
            ),
            models.CheckConstraint(
                condition=_in("status", SubscriptionStatus.values), name="subscription_status"
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__gt=models.F("current_period_start")),
                name="subscription_period_order",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.plan} ({self.status})"


class SubscriptionCharge(models.Model):
    """What a subscription costs for (part of) a period: the month's price when a
    period starts, or the prorated difference of an upgrade."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="+")
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="charges")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    description = models.CharField(max_length=200)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    charged_at = models.DateTimeField()
    invoice = models.ForeignKey(
        "Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["charged_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="subscription_charge_amount"),
        ]
        indexes = [models.Index(fields=["account", "invoice"], name="subcharge_unbilled")]

    def __str__(self) -> str:
        return self.description


# --- rate cards --------------------------------------------------------------------------


class RateCard(models.Model):
    """Per-message rates from a date on (the card in force at a moment is the one with
    the latest `effective_from` on or before its UTC date)."""

    effective_from = models.DateField(unique=True)
    name = models.CharField(max_length=80)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default="USD")
    auth_international_threshold = models.PositiveIntegerField(
        default=750_000,
        help_text="Authentication templates a foreign business sends to a market in 30 days "
        "before that market's authentication-international rate applies.",
    )
    source = models.CharField(max_length=200, blank=True, help_text="The imported file.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-effective_from"]
        constraints = [_currency_known("rate_card_currency_known")]

    def __str__(self) -> str:
        return f"{self.name} (from {self.effective_from})"


class MarketRate(models.Model):
    """One market of a rate card: its countries and a rate per category (empty: not
    priced, and charges needing it are refused). The card's rest-of-world row holds
    every country no other market lists."""

    rate_card = models.ForeignKey(RateCard, on_delete=models.CASCADE, related_name="markets")
    name = models.CharField(max_length=80)
    countries = models.CharField(
        max_length=400, blank=True, help_text="ISO 3166-1 alpha-2 codes separated by spaces."
    )
    is_rest_of_world = models.BooleanField(default=False)
    marketing = models.DecimalField(**RATE, null=True, blank=True)
    utility = models.DecimalField(**RATE, null=True, blank=True)
    authentication = models.DecimalField(**RATE, null=True, blank=True)
    authentication_international = models.DecimalField(**RATE, null=True, blank=True)
    notes = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["is_rest_of_world", "name"]
        constraints = [
            models.UniqueConstraint(fields=["rate_card", "name"], name="market_name_per_card"),
            models.UniqueConstraint(
                fields=["rate_card"],
                condition=Q(is_rest_of_world=True),
                name="one_rest_of_world_per_card",
            ),
            models.CheckConstraint(
                condition=Q(is_rest_of_world=False) | Q(countries=""),
                name="rest_of_world_lists_no_country",
            ),
            models.CheckConstraint(
                condition=(Q(marketing__isnull=True) | Q(marketing__gte=0))
                & (Q(utility__isnull=True) | Q(utility__gte=0))
                & (Q(authentication__isnull=True) | Q(authentication__gte=0))
                & (
                    Q(authentication_international__isnull=True)
                    | Q(authentication_international__gte=0)
                ),
                name="market_rates_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def country_codes(self) -> frozenset[str]:
        return frozenset(self.countries.split())


class VolumeTier(models.Model):
    """A monthly volume discount: the account's charged messages of `category` to the
    market in a calendar month (UTC) beyond `above` cost `rate`. None by default."""

    market = models.ForeignKey(MarketRate, on_delete=models.CASCADE, related_name="tiers")
    category = models.CharField(max_length=16, choices=TierCategory.choices)
    above = models.PositiveIntegerField(help_text="Messages in the month before the tier.")
    rate = models.DecimalField(**RATE)

    class Meta:
        ordering = ["category", "above"]
        constraints = [
            models.UniqueConstraint(fields=["market", "category", "above"], name="one_tier_start"),
            models.CheckConstraint(condition=_in("category", TierCategory.values), name="tier_cat"),
            models.CheckConstraint(condition=Q(rate__gte=0), name="tier_rate_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.category} above {self.above}: {self.rate}"


# --- message charges ---------------------------------------------------------------------


class MessageCharge(models.Model):
    """The price of one delivered message; exactly one per message id."""

    message_id = models.CharField(max_length=128, unique=True)
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="+")
    template_category = models.CharField(max_length=16, choices=TemplateCategory.choices)
    template = models.CharField(max_length=128, blank=True)
    recipient_country = models.CharField(max_length=2)
    recipient = models.CharField(max_length=64, blank=True)
    delivered_at = models.DateTimeField()
    service_window_open = models.BooleanField()
    entry_point_window_open = models.BooleanField()
    rate_card = models.ForeignKey(RateCard, on_delete=models.PROTECT, related_name="+")
    market = models.CharField(max_length=80)
    category = models.CharField(max_length=32, choices=PricedCategory.choices)
    free_reason = models.CharField(max_length=24, choices=FreeReason.choices, blank=True)
    rate = models.DecimalField(**RATE)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    invoice = models.ForeignKey(
        "Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="message_amount_not_negative"),
            models.CheckConstraint(
                condition=Q(free_reason="") | Q(amount=0), name="free_message_costs_nothing"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "invoice", "delivered_at"], name="charge_unbilled"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id}: {self.amount} {self.currency}"


class MessageVolume(models.Model):
    """Charged messages per account, market, template category and UTC day: the counts
    behind the 30-day authentication-international threshold and monthly tiers."""

    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="+")
    market = models.CharField(max_length=80)
    category = models.CharField(max_length=16, choices=TemplateCategory.choices)
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "market", "category", "day"], name="one_volume_row"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.market} {self.category} {self.day}: {self.count}"


# --- digital goods -----------------------------------------------------------------------


class CommissionRate(models.Model):
    """The platform's share of a sale, per product type (10% unless billing ops say)."""

    product_type = models.CharField(max_length=16, choices=ProductType.choices, unique=True)
    rate = models.DecimalField(max_digits=5, decimal_places=4, default=Decimal("0.1000"))

    class Meta:
        ordering = ["product_type"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rate__gte=0) & Q(rate__lte=1), name="commission_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_product_type_display()}: {self.rate:%}"


class Product(models.Model):
    """Something a business sells in chat, priced in the seller's currency."""

    seller = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="products")
    type = models.CharField(max_length=16, choices=ProductType.choices)
    title = models.CharField(max_length=120)
    price = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["seller", "title"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gt=0), name="product_price_positive"),
            models.CheckConstraint(condition=_in("type", ProductType.values), name="product_type"),
        ]

    def __str__(self) -> str:
        return self.title


class Purchase(models.Model):
    """A buyer's purchase of a product through a payment gateway, with the commission
    taken on it and what refunds have given back."""

    purchase_id = models.CharField(max_length=128, unique=True)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="purchases")
    seller = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="+")
    buyer = models.CharField(max_length=64, help_text="The buyer's opaque account id.")
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    commission_rate = models.DecimalField(max_digits=5, decimal_places=4)
    commission = models.DecimalField(**MONEY)
    refunded = models.DecimalField(**MONEY, default=Decimal(0))
    commission_reversed = models.DecimalField(**MONEY, default=Decimal(0))
    status = models.CharField(max_length=20, choices=PurchaseStatus.choices)
    gateway = models.CharField(max_length=32)
    gateway_reference = models.CharField(max_length=128, blank=True)
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    captured_at = models.DateTimeField(null=True, blank=True)
    invoice = models.ForeignKey(
        "Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="purchase_amount_positive"),
            models.CheckConstraint(
                condition=Q(refunded__gte=0) & Q(refunded__lte=models.F("amount")),
                name="refunds_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(commission_reversed__gte=0)
                & Q(commission_reversed__lte=models.F("commission")),
                name="reversal_within_commission",
            ),
            models.CheckConstraint(
                condition=_in("status", PurchaseStatus.values), name="purchase_status"
            ),
            models.UniqueConstraint(
                fields=["gateway", "gateway_reference"],
                condition=~Q(gateway_reference=""),
                name="one_purchase_per_gateway_reference",
            ),
        ]

    def __str__(self) -> str:
        return self.purchase_id


class Refund(models.Model):
    """Money given back to a buyer; the commission on it is reversed in proportion."""

    refund_id = models.CharField(max_length=128, unique=True)
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="refunds")
    seller = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(**MONEY)
    commission_reversed = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    gateway_reference = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)
    credit_note = models.ForeignKey(
        "Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
        ]

    def __str__(self) -> str:
        return self.refund_id


# --- ad spend ----------------------------------------------------------------------------


class AdSpend(models.Model):
    """Impressions and clicks of one campaign on one UTC day, as reported by the ads
    app (`billing.services.record_ad_spend`); a new row starts once a day is invoiced."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="+")
    campaign_ref = models.CharField(max_length=64)
    campaign_name = models.CharField(max_length=120)
    pricing = models.CharField(max_length=8)
    day = models.DateField()
    impressions = models.PositiveIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)
    amount = models.DecimalField(**MONEY, default=Decimal(0))
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    invoice = models.ForeignKey(
        "Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "campaign_ref", "day"],
                condition=Q(invoice__isnull=True),
                name="one_open_ad_spend_day",
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="ad_spend_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_name} {self.day}: {self.amount} {self.currency}"


# --- invoices ----------------------------------------------------------------------------


class Invoice(models.Model):
    """An issued invoice or credit note for one account, calendar month and currency.
    Immutable: on PostgreSQL a trigger refuses UPDATE and DELETE (migration 0003)."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="invoices")
    kind = models.CharField(max_length=16, choices=InvoiceKind.choices)
    number = models.CharField(max_length=24, unique=True)
    year = models.PositiveSmallIntegerField()
    sequence = models.PositiveIntegerField()
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    total = models.DecimalField(**MONEY)
    credits = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="For a credit note: the account's invoice issued with it.",
    )
    issued_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_start", "kind", "currency", "id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "year", "sequence"], name="gapless_number"),
            models.UniqueConstraint(
                fields=["account", "kind", "period_start", "currency"],
                name="one_invoice_per_period_and_currency",
            ),
            models.CheckConstraint(condition=_in("kind", InvoiceKind.values), name="invoice_kind"),
        ]

    def __str__(self) -> str:
        return self.number


class InvoiceLine(models.Model):
    """One line: the exact sum of what it aggregates and that sum rounded once."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=24, choices=LineKind.choices)
    description = models.CharField(max_length=200)
    market = models.CharField(max_length=80, blank=True)
    category = models.CharField(max_length=32, blank=True)
    quantity = models.PositiveIntegerField()
    exact_amount = models.DecimalField(**MONEY)
    amount = models.DecimalField(**MONEY)

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="line_position"),
            models.CheckConstraint(condition=_in("kind", LineKind.values), name="line_kind"),
        ]

    def __str__(self) -> str:
        return self.description


class InvoiceCounter(models.Model):
    """The last number issued per document kind and year, locked while numbering."""

    kind = models.CharField(max_length=16, choices=InvoiceKind.choices)
    year = models.PositiveSmallIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "year"], name="one_counter_per_year"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.year}: {self.last}"


class PeriodClose(models.Model):
    """An account's month has been closed: closing it again changes nothing."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="+")
    period_start = models.DateTimeField()
    closed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "period_start"], name="close_once"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.period_start:%Y-%m}"


class Payout(models.Model):
    """What the platform owes a seller for a month's digital-goods sales: captured sales
    less refunds, less the commission kept (net of commission reversed)."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="payouts")
    period_start = models.DateTimeField()
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    sales = models.DecimalField(**MONEY)
    refunds = models.DecimalField(**MONEY)
    commission = models.DecimalField(**MONEY)
    amount = models.DecimalField(**MONEY)
    status = models.CharField(max_length=8, choices=PayoutStatus.choices, default=PayoutStatus.OWED)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-period_start", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "period_start", "currency"], name="one_payout_per_period"
            ),
            models.CheckConstraint(condition=_in("status", PayoutStatus.values), name="payout_st"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.period_start:%Y-%m}: {self.amount} {self.currency}"
