"""The Django admin for billing ops: accounts, plans and prices, rate cards with their
markets and volume tiers, commission rates, products, purchases, invoices (read-only,
with a printable page) and payouts.

Permissions come from the "Billing ops" group (migration `billing.0004`). Money that
has been charged is never edited here: subscriptions, purchases, refunds, invoices and
payouts are read-only (a payout can be marked paid), nothing is deleted, and message
charges are not registered at all (each names a message's recipient).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from billing import services, views
from billing.forms import BillingAccountForm, MarketRateForm, MarketRateFormSet
from billing.models import (
    BillingAccount,
    CommissionRate,
    Invoice,
    InvoiceLine,
    MarketRate,
    Payout,
    Plan,
    PlanPrice,
    Product,
    Purchase,
    RateCard,
    Refund,
    Subscription,
    VolumeTier,
)

SUBSCRIPTION_FIELDS = (
    "plan",
    "status",
    "monthly_price",
    "currency",
    "current_period_start",
    "current_period_end",
    "next_plan",
    "started_at",
    "ended_at",
)
MARKET_FIELDS = ("rate_card", "name", "countries", "is_rest_of_world")
REFUND_FIELDS = ("refund_id", "amount", "commission_reversed", "currency", "created_at")
LINE_FIELDS = ("position", "kind", "description", "quantity", "exact_amount", "amount")
INVOICE_FIELDS = (
    "number",
    "kind",
    "account",
    "period_start",
    "period_end",
    "currency",
    "total",
    "credits",
    "issued_at",
    "printable",
)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NoDelete:
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SubscriptionInline(ReadOnlyInline):
    model = Subscription
    fields = readonly_fields = SUBSCRIPTION_FIELDS


@admin.register(BillingAccount)
class BillingAccountAdmin(NoDelete, admin.ModelAdmin):
    form = BillingAccountForm
    list_display = ["name", "kind", "country", "currency", "verified_badge", "created_at"]
    list_filter = ["kind", "currency", "verified_badge"]
    search_fields = ["name"]
    inlines = [SubscriptionInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # An account's currency is what its charges and invoices are in.
        return ["verified_badge"] + (["kind", "currency"] if obj is not None else [])

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = services.create_account(
            kind=obj.kind, name=obj.name, country=obj.country, currency=obj.currency
        )
        obj.pk, obj.created_at = created.pk, created.created_at


class PlanPriceInline(admin.TabularInline):
    model = PlanPrice
    extra = 0
    fields = ["currency", "monthly_price"]


@admin.register(Plan)
class PlanAdmin(NoDelete, admin.ModelAdmin):
    list_display = [
        "name",
        "code",
        "is_default",
        "advanced_analytics",
        "automation_workflows",
        "crm_integration",
        "dedicated_support",
        "verified_badge",
    ]
    inlines = [PlanPriceInline]


class MarketRateInline(admin.TabularInline):
    model = MarketRate
    form = MarketRateForm
    formset = MarketRateFormSet
    extra = 0
    show_change_link = True


@admin.register(RateCard)
class RateCardAdmin(NoDelete, admin.ModelAdmin):
    list_display = ["name", "effective_from", "currency", "auth_international_threshold"]
    readonly_fields = ["source", "created_at"]
    inlines = [MarketRateInline]


class VolumeTierInline(admin.TabularInline):
    model = VolumeTier
    extra = 0
    fields = ["category", "above", "rate"]


@admin.register(MarketRate)
class MarketRateAdmin(NoDelete, admin.ModelAdmin):
    """A market's volume tiers (its rates are edited on the rate card)."""

    list_display = ["name", "rate_card", "countries", "is_rest_of_world"]
    list_filter = ["rate_card"]
    list_select_related = ["rate_card"]
    fields = readonly_fields = MARKET_FIELDS
    inlines = [VolumeTierInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(CommissionRate)
class CommissionRateAdmin(NoDelete, admin.ModelAdmin):
    list_display = ["product_type", "rate"]
    list_editable = ["rate"]


@admin.register(Product)
class ProductAdmin(NoDelete, admin.ModelAdmin):
    list_display = ["title", "seller", "type", "price", "currency", "is_active"]
    list_filter = ["type", "is_active"]
    list_select_related = ["seller"]
    search_fields = ["title", "seller__name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The currency is the seller's; a product's seller does not change.
        return ["currency"] + (["seller"] if obj is not None else [])

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = services.create_product(
            seller_id=obj.seller_id, type=obj.type, title=obj.title, price=obj.price
        )
        obj.pk, obj.currency = created.pk, created.currency


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = readonly_fields = REFUND_FIELDS


class ReadOnlyAdmin(NoDelete, admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
    list_display = [
        "purchase_id",
        "product",
        "seller",
        "amount",
        "currency",
        "commission",
        "refunded",
        "status",
        "created_at",
    ]
    list_filter = ["status", "currency"]
    list_select_related = ["product", "seller"]
    search_fields = ["purchase_id", "gateway_reference"]
    inlines = [RefundInline]


class InvoiceLineInline(ReadOnlyInline):
    model = InvoiceLine
    fields = readonly_fields = LINE_FIELDS


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["number", "kind", "account", "period_start", "currency", "total", "printable"]
    list_filter = ["kind", "currency", "year"]
    list_select_related = ["account"]
    search_fields = ["number", "account__name"]
    fields = readonly_fields = INVOICE_FIELDS
    inlines = [InvoiceLineInline]

    @admin.display(description="print")
    def printable(self, invoice: Invoice) -> str:
        url = reverse("admin:billing_invoice_print", args=[invoice.pk])
        return format_html('<a href="{}">Printable page</a>', url)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<int:invoice_id>/print/",
                view(partial(views.printable_invoice, model_admin=self)),
                name="billing_invoice_print",
            ),
            *super().get_urls(),
        ]


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    list_display = [
        "account",
        "period_start",
        "currency",
        "sales",
        "refunds",
        "commission",
        "amount",
        "status",
    ]
    list_filter = ["status", "currency"]
    list_select_related = ["account"]
    actions = ["mark_paid"]

    @admin.action(description="Mark the selected payouts paid", permissions=["mark_paid"])
    def mark_paid(self, request: HttpRequest, queryset: QuerySet[Payout]) -> None:
        changed = services.mark_payouts_paid(payout_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{changed} payout(s) marked paid.", messages.SUCCESS)

    def has_mark_paid_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_payout")
