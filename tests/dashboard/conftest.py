"""Personas of the dashboard tests: Anna, signed in to her own dashboard, and Bob,
another person whose data Anna's session must never reach."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from ads.choices import CampaignStatus, Placement, Pricing
from ads.decisions import decide
from ads.models import Ad, AdDecision, Advertiser, Campaign
from ads.signals import ingest, validate_events
from consent import services
from consent.choices import Source
from consent.models import Subject
from tests.factories import TEST_ACTOR, SubjectFactory, publish

PASSWORD = "a-long-test-password"


def link_path(subject: Subject) -> str:
    """The path of a fresh single-use sign-in link, issued as the API issues it."""
    url, _ = services.issue_dashboard_link(external_id=subject.external_id, issued_by=None)
    return urlsplit(url).path


def signed_in_client(subject: Subject, **extra: Any) -> Client:
    """Signs in as a person does: opens the link, then presses Continue."""
    client = Client(**extra)
    path = link_path(subject)
    client.get(path)
    response = client.post(path, {"csrfmiddlewaretoken": csrf_token(client)})
    assert response.status_code == 302, response.content
    return client


def csrf_token(client: Client) -> str:
    return client.cookies["csrftoken"].value


def with_login(subject: Subject, password: str = PASSWORD) -> Subject:
    """Gives the subject a web login, as `seed_demo` does for demo subjects."""
    subject.user = User.objects.create_user(username=subject.external_id, password=password)
    subject.save(update_fields=["user"])
    return subject


@pytest.fixture
def ads_live(db: None) -> None:
    """The 2025-06 policy (ads purposes) live in Germany, California and India."""
    publish("2025-06", "DE", "US-CA", "IN")


@pytest.fixture
def anna(db: None) -> Subject:
    return SubjectFactory.create(external_id="anna", country="DE", language="en", birth_year=1990)


@pytest.fixture
def bob(db: None) -> Subject:
    return SubjectFactory.create(external_id="bob", country="DE", language="fr", birth_year=1985)


@pytest.fixture
def annas_browser(anna: Subject) -> Client:
    return signed_in_client(anna)


@pytest.fixture
def sign_in() -> Callable[..., Client]:
    return signed_in_client


# --- ads data, built through the real ingestion and decision code --------------------------


def advertiser_with_ad(name: str = "Lumen Coffee", headline: str = "The autumn blend") -> Ad:
    """An advertiser with one active Status campaign and one ad (staff create these in
    the admin; there is no service for it)."""
    advertiser = Advertiser.objects.create(name=name, country="DE", currency="EUR")
    campaign = Campaign.objects.create(
        advertiser=advertiser,
        name=f"{name} campaign",
        placement=Placement.STATUS,
        status=CampaignStatus.ACTIVE,
        starts_at=timezone.now() - timedelta(days=1),
        pricing=Pricing.CPM,
        bid=Decimal("4.00"),
        daily_budget=Decimal("50"),
        total_budget=Decimal("500"),
        frequency_cap=100,
    )
    return Ad.objects.create(
        campaign=campaign, headline=headline, body="Roasted this week.", call_to_action="Shop"
    )


def allow(subject: Subject, *purposes: str) -> None:
    for purpose in purposes:
        services.record_choice(
            external_id=subject.external_id,
            purpose_key=purpose,
            granted=True,
            source=Source.USER_APP,
            actor=TEST_ACTOR,
        )


def send_signals(subject: Subject, count: int = 1) -> None:
    """Metadata signals through the real validation and ingestion."""
    now = timezone.now()
    events = validate_events(
        [
            {
                "type": "channel_followed",
                "subject": subject.external_id,
                "occurred_at": (now - timedelta(minutes=i + 1)).isoformat(),
                "channel": f"channel-{i}",
                "topics": ["football", "coffee"],
            }
            for i in range(count)
        ]
        + [
            {
                "type": "app_session",
                "subject": subject.external_id,
                "occurred_at": (now - timedelta(minutes=1)).isoformat(),
                "city": "Berlin",
                "platform": "android",
            }
        ]
    )
    ingest(events=events)


def show_ads(subject: Subject, count: int = 1) -> list[AdDecision]:
    return [
        decide(
            external_id=subject.external_id,
            placement=Placement.STATUS,
            context={"country": "DE", "language": "en"},
        )
        for _ in range(count)
    ]
