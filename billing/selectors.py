"""Reads of the billing app worth naming."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from billing.choices import SubscriptionStatus
from billing.models import BillingAccount, Invoice, InvoiceLine, Subscription
from consent.errors import NotFound


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
