"""python manage.py seed_demo_ads: demo advertisers with campaigns, ads and rules.

One Status campaign priced per 1,000 impressions, one click-to-chat campaign priced
per click, one campaign in the Channels directory. Safe to run again: advertisers and
campaigns are found by name, and only what is missing is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from ads.choices import FEATURE_TIES, CampaignStatus, Feature, Placement, Pricing
from ads.forms import clean_rule_values
from ads.models import Ad, Advertiser, Campaign, TargetingRule
from consent.models import MetadataCategory


@dataclass(frozen=True)
class DemoCampaign:
    advertiser: str
    country: str
    currency: str
    name: str
    placement: str
    pricing: str
    bid: str
    daily_budget: str
    total_budget: str
    click_to_chat: str
    rules: dict[str, str]
    ad: dict[str, str]


DEMO_CAMPAIGNS = [
    DemoCampaign(
        advertiser="Lumen Coffee",
        country="US",
        currency="USD",
        name="Autumn blend in Status",
        placement=Placement.STATUS,
        pricing=Pricing.CPM,
        bid="4.00",
        daily_budget="50.00",
        total_budget="1500.00",
        click_to_chat="",
        rules={Feature.COUNTRY: "US, GB", Feature.AGE_BAND: "25-34, 35-44"},
        ad={
            "headline": "The autumn blend is back",
            "body": "Roasted this week, delivered next week. 15% off your first bag.",
            "call_to_action": "Shop now",
        },
    ),
    DemoCampaign(
        advertiser="Casa Verde Plantas",
        country="BR",
        currency="BRL",
        name="Ask a plant doctor",
        placement=Placement.STATUS,
        pricing=Pricing.CPC,
        bid="0.80",
        daily_budget="40.00",
        total_budget="800.00",
        click_to_chat="biz-casa-verde",
        rules={Feature.LANGUAGE: "pt"},
        ad={
            "headline": "Sua planta está triste?",
            "body": "Mande uma foto e fale com nossa especialista, de graça.",
            "call_to_action": "Conversar",
        },
    ),
    DemoCampaign(
        advertiser="Trailhead Outdoor",
        country="GB",
        currency="GBP",
        name="Trail notes channel",
        placement=Placement.CHANNELS,
        pricing=Pricing.CPM,
        bid="3.00",
        daily_budget="30.00",
        total_budget="600.00",
        click_to_chat="",
        rules={Feature.CHANNEL_TOPIC: "outdoors, hiking"},
        ad={
            "headline": "Weekend routes, every Friday",
            "body": "Follow Trail notes for walks near you and gear that lasts.",
            "call_to_action": "Follow",
        },
    ),
]


class Command(BaseCommand):
    help = "Adds demo advertisers and campaigns (CPM in Status, click-to-chat CPC, Channels)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off (never on a production database).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError("Demo campaigns are not real: run with DEBUG on, or --force.")
        created = 0
        with transaction.atomic():
            for demo in DEMO_CAMPAIGNS:
                created += self._campaign(demo)
        self.stdout.write(f"Demo campaigns: {len(DEMO_CAMPAIGNS)} ({created} new).")

    def _campaign(self, demo: DemoCampaign) -> int:
        advertiser, _ = Advertiser.objects.get_or_create(
            name=demo.advertiser, defaults={"country": demo.country, "currency": demo.currency}
        )
        campaign, created = Campaign.objects.get_or_create(
            advertiser=advertiser,
            name=demo.name,
            defaults={
                "placement": demo.placement,
                "status": CampaignStatus.ACTIVE,
                "starts_at": timezone.now(),
                "pricing": demo.pricing,
                "bid": Decimal(demo.bid),
                "daily_budget": Decimal(demo.daily_budget),
                "total_budget": Decimal(demo.total_budget),
                "frequency_cap": 3,
                "click_to_chat": demo.click_to_chat,
            },
        )
        if not campaign.ads.exists():
            Ad.objects.create(campaign=campaign, **demo.ad)
        for feature, raw in demo.rules.items():
            category_key, _ = FEATURE_TIES[feature]
            category = MetadataCategory.objects.filter(key=category_key).first()
            if category is None:
                raise CommandError(
                    f"The metadata category '{category_key}' is missing: run migrate first."
                )
            TargetingRule.objects.get_or_create(
                campaign=campaign,
                feature=feature,
                defaults={"category": category, "values": clean_rule_values(feature, raw)},
            )
        return int(created)
