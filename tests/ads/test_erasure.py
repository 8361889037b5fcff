"""Erasure in the consent app removes everything the ads app holds about the person,
in the same transaction, and nothing of anyone else."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from ads.choices import AdEventType, Placement, Pricing, SignalType
from ads.models import (
    Ad,
    AdDecision,
    AdEvent,
    Advertiser,
    Campaign,
    ChatEntryWindow,
    HiddenAdvertiser,
    Signal,
    SubjectFeatures,
)
from consent import services
from consent.models import Subject
from tests.factories import TEST_ACTOR, SubjectFactory

pytestmark = pytest.mark.django_db


def _ad_data(subject: Subject, advertiser: Advertiser, ad: Ad) -> None:
    now = timezone.now()
    Signal.objects.create(
        subject=subject, type=SignalType.APP_SESSION, occurred_at=now, data={"platform": "ios"}
    )
    SubjectFeatures.objects.create(subject=subject, channel_topics={"football": 2})
    HiddenAdvertiser.objects.create(subject=subject, advertiser=advertiser)
    decision = AdDecision.objects.create(
        subject=subject,
        placement=Placement.STATUS,
        ad=ad,
        campaign=ad.campaign,
        reason="served",
    )
    AdEvent.objects.create(decision=decision, type=AdEventType.CLICK, occurred_at=now)
    ChatEntryWindow.objects.create(
        subject=subject,
        business="shop-1",
        decision=decision,
        opened_at=now,
        expires_at=now + timedelta(hours=72),
    )


def _counts(subject: Subject) -> dict[str, int]:
    return {
        "signals": Signal.objects.filter(subject=subject).count(),
        "features": SubjectFeatures.objects.filter(subject=subject).count(),
        "hidden": HiddenAdvertiser.objects.filter(subject=subject).count(),
        "decisions": AdDecision.objects.filter(subject=subject).count(),
        "events": AdEvent.objects.filter(decision__subject=subject).count(),
        "windows": ChatEntryWindow.objects.filter(subject=subject).count(),
    }


def test_erasure_deletes_the_subjects_ad_data_and_keeps_everyone_elses() -> None:
    advertiser = Advertiser.objects.create(name="Shop", country="US")
    campaign = Campaign.objects.create(
        advertiser=advertiser,
        name="Chat with us",
        placement=Placement.STATUS,
        starts_at=timezone.now() - timedelta(days=1),
        pricing=Pricing.CPC,
        bid=Decimal("0.50"),
        daily_budget=Decimal("10"),
        total_budget=Decimal("100"),
        click_to_chat="shop-1",
    )
    ad = Ad.objects.create(campaign=campaign, headline="Hi", body="Chat", call_to_action="Chat")
    erased = SubjectFactory.create(country="US")
    kept = SubjectFactory.create(country="US")
    _ad_data(erased, advertiser, ad)
    _ad_data(kept, advertiser, ad)
    everything = dict.fromkeys(
        ["signals", "features", "hidden", "decisions", "events", "windows"], 1
    )
    assert _counts(erased) == everything

    services.erase_subject(external_id=erased.external_id, actor=TEST_ACTOR)

    assert _counts(erased) == dict.fromkeys(everything, 0)
    assert _counts(kept) == everything
    # The campaign's aggregate numbers are the advertiser's, not the person's: kept.
    assert Campaign.objects.filter(pk=campaign.pk).exists()
