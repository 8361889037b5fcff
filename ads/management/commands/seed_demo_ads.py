"""python manage.py seed_demo_ads: demo advertisers with campaigns, ads and rules.

One Status campaign priced per 1,000 impressions, one click-to-chat campaign priced
per click, one campaign in the Channels directory. Each advertiser is invoiced through
a billing account of its own, and the click-to-chat ad opens a chat with the demo
business "Casa Verde Café" (its billing account's id is what `click_to_chat` holds,
so billing honours the free window a click opens). Accounts the billing seed also
makes are found by name. Safe to run again: advertisers and campaigns are found by
name, and only what is missing is added.
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
from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.choices import AccountKind
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
    chat_with: str  # the business a click-to-chat ad opens a chat with, or ""
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
        chat_with="",
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
        chat_with="Casa Verde Café",
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
        chat_with="",
        rules={Feature.CHANNEL_TOPIC: "outdoors, hiking"},
        ad={
            "headline": "Weekend routes, every Friday",
            "body": "Follow Trail notes for walks near you and gear that lasts.",
            "call_to_action": "Follow",
        },
    ),
]


# Businesses the demo ads open chats with, as the billing seed describes them.
DEMO_BUSINESSES: dict[str, dict[str, str]] = {
    "Casa Verde Café": {
        "kind": AccountKind.BUSINESS,
        "country": "BR",
        "currency": "BRL",
        "plan": "premium",
    },
}


def _billing_account(*, name: str, kind: str, country: str, currency: str, plan: str) -> Any:
    """The demo billing account of this name, opened if it does not exist yet."""
    found = billing_selectors.account_named(name=name)
    if found is not None:
        return found
    return billing_services.create_account(
        kind=kind, name=name, country=country, currency=currency, plan=plan
    )


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
        if advertiser.billing_account_id is None:
            advertiser.billing_account = _billing_account(
                name=f"{demo.advertiser} (ads)",
                kind=AccountKind.ADVERTISER,
                country=demo.country,
                currency=demo.currency,
                plan="free",
            )
            advertiser.save(update_fields=["billing_account"])
        chat = ""
        if demo.chat_with:
            business = DEMO_BUSINESSES[demo.chat_with]
            chat = str(_billing_account(name=demo.chat_with, **business).pk)
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
                "click_to_chat": chat,
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
