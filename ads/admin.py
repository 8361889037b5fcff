"""The Django admin for advertisers and campaigns (billing ops).

Advertiser-facing numbers are aggregates only: a campaign's report is its spend,
impressions and clicks per day (`CampaignDay`). Decisions, events, signals, features,
hidden advertisers and chat windows are about individual people and are deliberately
not registered here: staff never see them.

Permissions come from the "Billing ops" group (migration `ads.0002`): view, add and
change advertisers, campaigns, ads and targeting rules.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from ads.forms import AdForm, AdvertiserForm, CampaignForm, TargetingRuleForm
from ads.models import Ad, Advertiser, Campaign, CampaignDay, TargetingRule

REPORT_DAYS = 90


@admin.register(Advertiser)
class AdvertiserAdmin(admin.ModelAdmin):
    form = AdvertiserForm
    list_display = ["name", "country", "currency", "campaign_count", "created_at"]
    search_fields = ["name"]
    list_filter = ["country"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Advertiser]:
        return super().get_queryset(request).annotate(campaign_count=Count("campaigns"))

    @admin.display(description="campaigns", ordering="campaign_count")
    def campaign_count(self, advertiser: Advertiser) -> int:
        return advertiser.campaign_count  # type: ignore[attr-defined]


class AdInline(admin.StackedInline):
    model = Ad
    form = AdForm
    extra = 0
    fields = ["headline", "body", "image_url", "call_to_action", "is_active"]


class TargetingRuleInline(admin.TabularInline):
    model = TargetingRule
    form = TargetingRuleForm
    extra = 0
    fields = ["feature", "values", "category"]
    readonly_fields = ["category"]
    verbose_name_plural = "Targeting rules (every rule must match; none: everyone)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[TargetingRule]:
        return super().get_queryset(request).select_related("category")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = [
        "name",
        "advertiser",
        "placement",
        "pricing",
        "status",
        "spend",
        "starts_at",
        "ends_at",
    ]
    list_select_related = ["advertiser"]
    list_filter = ["status", "placement", "pricing"]
    search_fields = ["name", "advertiser__name"]
    readonly_fields = ["spent", "created_at", "report"]
    inlines = [AdInline, TargetingRuleInline]
    fieldsets = [
        (None, {"fields": ["advertiser", "name", "placement", "status"]}),
        ("Schedule", {"fields": ["starts_at", "ends_at"]}),
        (
            "Pricing and budget",
            {
                "fields": [
                    "pricing",
                    "bid",
                    "daily_budget",
                    "total_budget",
                    "spent",
                    "frequency_cap",
                    "click_to_chat",
                ]
            },
        ),
        ("Report (aggregates per UTC day)", {"fields": ["report", "created_at"]}),
    ]

    @admin.display(description="spent / total budget")
    def spend(self, campaign: Campaign) -> str:
        return f"{campaign.spent:.2f} / {campaign.total_budget:.2f} {campaign.advertiser.currency}"

    @admin.display(description="daily report")
    def report(self, campaign: Campaign) -> str:
        """Impressions, clicks and spend per day: never anything about a person."""
        if campaign.pk is None:
            return "—"
        days = CampaignDay.objects.filter(campaign=campaign).order_by("-day")
        totals = days.aggregate(
            impressions=Sum("impressions"), clicks=Sum("clicks"), spent=Sum("spent")
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (day.day.isoformat(), day.impressions, day.clicks, f"{day.spent:.4f}")
                for day in days[:REPORT_DAYS]
            ),
        )
        return format_html(
            "<table><thead><tr><th>Day</th><th>Impressions</th><th>Clicks</th>"
            "<th>Spend</th></tr></thead><tbody>{}</tbody><tfoot><tr><th>Total</th>"
            "<th>{}</th><th>{}</th><th>{}</th></tr></tfoot></table>",
            rows,
            totals["impressions"] or 0,
            totals["clicks"] or 0,
            f"{totals['spent'] or 0:.4f}",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.spent > 0:
            # Charged events name this campaign's pricing: changing it would misstate them.
            fields.append("pricing")
        return fields
