"""Enumerations of the billing domain, and the currencies billing can invoice in."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

# ISO 4217 currencies an account may hold, with their minor-unit exponent: the one
# rounding of an invoice line is to this many decimal places.
MINOR_UNITS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "BRL": 2,
    "INR": 2,
    "IDR": 2,
    "NGN": 2,
    "ZAR": 2,
    "JPY": 0,
}
CURRENCY_CHOICES = [(code, code) for code in MINOR_UNITS]


class AccountKind(models.TextChoices):
    BUSINESS = "business", _("Business (messaging API, plans, digital goods)")
    ADVERTISER = "advertiser", _("Advertiser (ad spend)")


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    ENDED = "ended", _("Ended")


class TemplateCategory(models.TextChoices):
    """What the message router says a delivered message was."""

    MARKETING = "marketing", _("Marketing template")
    UTILITY = "utility", _("Utility template")
    AUTHENTICATION = "authentication", _("Authentication template")
    SERVICE = "service", _("Free-form reply (not a template)")


TEMPLATE_CATEGORIES = frozenset(
    {TemplateCategory.MARKETING, TemplateCategory.UTILITY, TemplateCategory.AUTHENTICATION}
)


class PricedCategory(models.TextChoices):
    """The rate-card column a charge was priced from."""

    MARKETING = "marketing", _("Marketing")
    UTILITY = "utility", _("Utility")
    AUTHENTICATION = "authentication", _("Authentication")
    AUTHENTICATION_INTERNATIONAL = "authentication_international", _("Authentication-international")
    SERVICE = "service", _("Service (free)")


class FreeReason(models.TextChoices):
    SERVICE_REPLY = "service_reply", _("Free-form reply in the customer service window")
    SERVICE_WINDOW = "service_window", _("Utility template in the customer service window")
    ENTRY_POINT_WINDOW = "entry_point_window", _("Inside a 72-hour free entry point window")


class TierCategory(models.TextChoices):
    """The categories that have monthly volume tiers."""

    UTILITY = "utility", _("Utility")
    AUTHENTICATION = "authentication", _("Authentication")


class ProductType(models.TextChoices):
    NEWSLETTER = "newsletter", _("Paid newsletter")
    COMMUNITY = "community", _("Community access")
    CONSULTATION = "consultation", _("One-to-one consultation")
    GUIDE = "guide", _("Downloadable guide")


class PurchaseStatus(models.TextChoices):
    AUTHORISED = "authorised", _("Authorised (awaiting capture)")
    CAPTURED = "captured", _("Captured")
    FAILED = "failed", _("Failed")
    REFUNDED = "refunded", _("Refunded in full")
    PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")


class InvoiceKind(models.TextChoices):
    INVOICE = "invoice", _("Invoice")
    CREDIT_NOTE = "credit_note", _("Credit note")


class LineKind(models.TextChoices):
    MESSAGES = "messages", _("Messages")
    SUBSCRIPTION = "subscription", _("Subscription")
    COMMISSION = "commission", _("Digital-goods commission")
    COMMISSION_REVERSAL = "commission_reversal", _("Commission reversed on refunds")
    AD_SPEND = "ad_spend", _("Ad spend")


class PayoutStatus(models.TextChoices):
    OWED = "owed", _("Owed to the seller")
    PAID = "paid", _("Paid")


class GatewayStatus(models.TextChoices):
    """A payment gateway's status update for an authorised purchase."""

    CAPTURED = "captured", _("Captured")
    FAILED = "failed", _("Failed")
