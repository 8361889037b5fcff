"""Ads from metadata only: signals, per-subject features, campaigns, decisions.

Nothing here can hold message content: signals keep only the fields their type's
schema allows (`ads.signals`), features are derived from them, and targeting rules
reference a `consent.MetadataCategory` (whose table refuses content keys).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from ads.choices import (
    ActivityLevel,
    AdEventType,
    CampaignStatus,
    DecisionReason,
    Feature,
    Placement,
    Pricing,
    SignalType,
)
from consent.models import MetadataCategory, Subject

MONEY: dict[str, Any] = {"max_digits": 14, "decimal_places": 4}


def _in(field: str, choices: type[models.TextChoices]) -> Q:
    return Q(**{f"{field}__in": [c.value for c in choices]})


class Advertiser(models.Model):
    """Who pays for campaigns: its spend is reported to its billing account, if linked."""

    name = models.CharField(max_length=120)
    country = models.CharField(max_length=2)
    currency = models.CharField(max_length=3, default="USD")
    billing_account = models.ForeignKey(
        "billing.BillingAccount",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Invoiced for the campaigns' impressions and clicks (billing).",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Campaign(models.Model):
    advertiser = models.ForeignKey(Advertiser, on_delete=models.PROTECT, related_name="campaigns")
    name = models.CharField(max_length=120)
    placement = models.CharField(max_length=16, choices=Placement.choices)
    status = models.CharField(
        max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    pricing = models.CharField(max_length=8, choices=Pricing.choices)
    bid = models.DecimalField(
        **MONEY,
        validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="CPM: price per 1,000 impressions; CPC: price per click.",
    )
    daily_budget = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal("0.01"))])
    total_budget = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal("0.01"))])
    spent = models.DecimalField(**MONEY, default=Decimal("0"))
    frequency_cap = models.PositiveSmallIntegerField(
        default=3, help_text="Impressions per subject per day (UTC)."
    )
    click_to_chat = models.CharField(
        max_length=64,
        blank=True,
        help_text="Business account a click-to-chat ad opens a chat with (CPC campaigns).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Counts the changes to what a decision shows and ranks of this campaign — its
    # name, advertiser, pricing, bid and click-to-chat business, its ads, its targeting
    # rules and its advertiser's name. Database triggers keep it (migration 0006),
    # whatever writes the change: each ad server's cache of campaigns
    # (`ads.decisions.catalog_entries`) is keyed by it, so every such write invalidates it.
    catalog_stamp = models.PositiveIntegerField(default=0, db_default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=_in("placement", Placement), name="campaign_placement_known"
            ),
            models.CheckConstraint(
                condition=_in("pricing", Pricing), name="campaign_pricing_known"
            ),
            models.CheckConstraint(
                condition=_in("status", CampaignStatus), name="campaign_status_known"
            ),
            models.CheckConstraint(
                condition=Q(bid__gt=0) & Q(daily_budget__gt=0) & Q(total_budget__gt=0),
                name="campaign_amounts_positive",
            ),
            models.CheckConstraint(
                condition=Q(daily_budget__lte=models.F("total_budget")),
                name="campaign_daily_within_total",
            ),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                name="campaign_ends_after_start",
            ),
            models.CheckConstraint(
                condition=Q(click_to_chat="") | Q(pricing=Pricing.CPC),
                name="campaign_click_to_chat_is_cpc",
            ),
        ]
        indexes = [models.Index(fields=["placement", "status"], name="campaign_placement_status")]

    def __str__(self) -> str:
        return self.name


class CampaignDay(models.Model):
    """Spend and counts of one campaign on one UTC day (for the daily budget)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    spent = models.DecimalField(**MONEY, default=Decimal("0"))
    impressions = models.PositiveIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "day"], name="one_campaign_day"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}@{self.day}"


class Ad(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="ads")
    headline = models.CharField(max_length=60)
    body = models.CharField(max_length=240)
    image_url = models.URLField(max_length=500, blank=True)
    call_to_action = models.CharField(max_length=30)
    is_active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.headline


class TargetingRule(models.Model):
    """Matches when the subject's value of `feature` is one of `values`.

    The category is the feature's metadata category (`ads.choices.FEATURE_TIES`),
    kept as a reference so that a rule can only name a real metadata category."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rules")
    feature = models.CharField(max_length=24, choices=Feature.choices)
    category = models.ForeignKey(MetadataCategory, on_delete=models.PROTECT, related_name="+")
    values: models.JSONField[list[str]] = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=_in("feature", Feature), name="rule_feature_known"),
            models.UniqueConstraint(fields=["campaign", "feature"], name="one_rule_per_feature"),
        ]

    def __str__(self) -> str:
        return f"{self.feature} in {self.values}"


class Signal(models.Model):
    """One metadata event, kept for the retention period (`SIGNAL_RETENTION_DAYS`)."""

    # No database-level foreign key: checking it cost every stored signal a lookup and a
    # lock of its subject's row (which ingestion holds already). Subjects are never
    # deleted (a trigger refuses it; erasure deletes their signals first).
    subject = models.ForeignKey(
        Subject, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    type = models.CharField(max_length=32, choices=SignalType.choices)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    data: models.JSONField[dict[str, Any]] = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=_in("type", SignalType), name="signal_type_known"),
        ]
        indexes = [
            models.Index(fields=["subject", "occurred_at"], name="signal_subject_time"),
            models.Index(fields=["occurred_at"], name="signal_time"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"


class SubjectFeatures(models.Model):
    """What the retained signals say about a subject, aggregated for targeting."""

    subject = models.OneToOneField(
        Subject, on_delete=models.CASCADE, related_name="+", primary_key=True
    )
    # topic -> weight (follows and engagements, minus unfollows)
    channel_topics: models.JSONField[dict[str, int]] = models.JSONField(default=dict)
    # advertiser id (as text) -> {"clicks": n, "hides": n}
    ad_interactions: models.JSONField[dict[str, dict[str, int]]] = models.JSONField(default=dict)
    city = models.CharField(max_length=80, blank=True)
    activity_level = models.CharField(
        max_length=8, choices=ActivityLevel.choices, default=ActivityLevel.NONE
    )
    # The running totals that let a batch of signals update the row without reading the
    # subject's history (`ads.features`): every topic's signed weight, when the city was
    # reported, and the newest activity signals' times (microseconds since the epoch,
    # newest first). Null weights: a row from before they were kept, rebuilt when next
    # touched.
    topic_weights: models.JSONField[dict[str, int] | None] = models.JSONField(null=True, blank=True)
    city_at = models.DateTimeField(null=True, blank=True)
    recent_activity: models.JSONField[list[int]] = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"features of {self.subject_id}"


class HiddenAdvertiser(models.Model):
    """The subject asked not to see this advertiser again (kept whatever the consent)."""

    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    advertiser = models.ForeignKey(Advertiser, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "advertiser"], name="hide_once"),
        ]

    def __str__(self) -> str:
        return f"{self.subject_id} hides {self.advertiser_id}"


class AdDecision(models.Model):
    """One answer to `POST /api/v1/ads/decisions`, with what it used and why."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No database-level foreign keys (migration 0005): a decision is written on every
    # request, and the checks of three keys at its commit took a shared lock on the
    # subject's row and on its campaign's and ad's, rows that every concurrent decision
    # shares (about a fifth of a decision's time under load, docs/benchmarks.md). What
    # they referenced stays protected: subjects are never deleted (a trigger refuses
    # it), and the ORM's PROTECT refuses to delete an ad or a campaign with decisions.
    subject = models.ForeignKey(
        Subject,
        null=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    placement = models.CharField(max_length=16, choices=Placement.choices)
    ad = models.ForeignKey(
        Ad, null=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    campaign = models.ForeignKey(
        Campaign, null=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    personalized = models.BooleanField(default=False)
    reason = models.CharField(max_length=24, choices=DecisionReason.choices)
    context: models.JSONField[dict[str, str]] = models.JSONField(default=dict)
    # feature -> the value(s) targeting saw; purposes that allowed them
    features_used: models.JSONField[dict[str, Any]] = models.JSONField(default=dict)
    purposes_used: models.JSONField[list[str]] = models.JSONField(default=list)
    price = models.DecimalField(**MONEY, default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["subject", "-created_at"], name="decision_subject_newest")]

    def __str__(self) -> str:
        return f"{self.id} ({self.reason})"


class AdEvent(models.Model):
    """An impression or a click reported for a decision; at most one of each."""

    decision = models.ForeignKey(AdDecision, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=16, choices=AdEventType.choices)
    occurred_at = models.DateTimeField()
    cost = models.DecimalField(**MONEY, default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["decision", "type"], name="one_event_per_type"),
            models.CheckConstraint(condition=_in("type", AdEventType), name="ad_event_type_known"),
        ]

    def __str__(self) -> str:
        return f"{self.type} of {self.decision_id}"


class ChatEntryWindow(models.Model):
    """A click on a click-to-chat ad: messages between the subject and the business are
    free for 72 hours (billing honours it)."""

    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    business = models.CharField(max_length=64)
    decision = models.OneToOneField(AdDecision, on_delete=models.CASCADE, related_name="+")
    opened_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["subject", "business", "-expires_at"], name="window_lookup"),
        ]

    def __str__(self) -> str:
        return f"{self.subject_id} → {self.business} until {self.expires_at}"
