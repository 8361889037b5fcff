"""Reads of the billing app worth naming."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from billing.choices import SubscriptionStatus
from billing.models import BillingAccount, Invoice, InvoiceLine, Purchase, Refund, Subscription
from billing.money import shown
from consent.errors import NotFound
from consent.models import Subject


def accounts() -> QuerySet[BillingAccount]:
    """Accounts with their active subscription and its plans (two queries in all)."""
    active = Subscription.objects.filter(status=SubscriptionStatus.ACTIVE).select_related(
        "plan", "next_plan"
    )
    return BillingAccount.objects.prefetch_related(
        Prefetch("subscriptions", queryset=active, to_attr="active_subscriptions")
    )


def get_account(*, account_id: int) -> BillingAccount:
    account = accounts().filter(pk=account_id).first()
    if account is None:
        raise NotFound(f"No billing account {account_id}.")
    return account


def account_named(*, name: str) -> BillingAccount | None:
    """The oldest account with this name (names are not unique: demo data finds its
    accounts by name)."""
    return BillingAccount.objects.filter(name=name).order_by("pk").first()


def active_subscription(account: BillingAccount) -> Subscription | None:
    """From `accounts()`'s prefetch when present."""
    prefetched = getattr(account, "active_subscriptions", None)
    if prefetched is not None:
        return prefetched[0] if prefetched else None
    return (
        Subscription.objects.select_related("plan", "next_plan")
        .filter(account=account, status=SubscriptionStatus.ACTIVE)
        .first()
    )


def account_invoices(*, account_id: int) -> QuerySet[Invoice]:
    """The account's invoices and credit notes, newest first, with their lines."""
    if not BillingAccount.objects.filter(pk=account_id).exists():
        raise NotFound(f"No billing account {account_id}.")
    return (
        Invoice.objects.filter(account_id=account_id)
        .select_related("credits")
        .prefetch_related(Prefetch("lines", queryset=InvoiceLine.objects.order_by("position")))
        .order_by("-issued_at", "-id")
    )


def export_subject_purchases(subject: Subject) -> dict[str, Any]:
    """The subject's purchases of digital goods, with their refunds, for their data
    export (registered with `consent.selectors.register_export_contributor`). A buyer
    is the platform account id, which is the subject's external id."""
    purchases = (
        Purchase.objects.filter(buyer=subject.external_id)
        .select_related("product", "seller")
        .prefetch_related(Prefetch("refunds", queryset=Refund.objects.order_by("created_at")))
        .order_by("created_at", "id")
    )
    return {
        "purchases": [
            {
                "purchase_id": purchase.purchase_id,
                "product": purchase.product.title,
                "product_type": purchase.product.type,
                "seller": purchase.seller.name,
                "amount": shown(purchase.amount, purchase.currency),
                "currency": purchase.currency,
                "status": purchase.status,
                "created_at": purchase.created_at,
                "refunds": [
                    {
                        "refund_id": refund.refund_id,
                        "amount": shown(refund.amount, refund.currency),
                        "created_at": refund.created_at,
                    }
                    for refund in purchase.refunds.all()
                ],
            }
            for purchase in purchases
        ]
    }
