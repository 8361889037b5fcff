"""Reads of the ads app for the privacy dashboard and the subject's data export."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from ads.choices import DecisionReason
from ads.models import (
    AdDecision,
    AdEvent,
    ChatEntryWindow,
    HiddenAdvertiser,
    Signal,
    SubjectFeatures,
)
from consent.models import Subject

RECENT_DECISIONS = 20


def recent_ads(*, subject: Subject, limit: int = RECENT_DECISIONS) -> list[AdDecision]:
    """The latest decisions that showed the subject an ad, newest first, with the ad,
    its campaign and advertiser loaded (one query)."""
    return list(
        AdDecision.objects.filter(subject=subject, reason=DecisionReason.SERVED)
        .select_related("ad", "campaign__advertiser")
        .order_by("-created_at")[:limit]
    )


def hidden_advertisers(*, subject: Subject) -> QuerySet[HiddenAdvertiser]:
    """The advertisers the subject hid, most recently hidden first."""
    return (
        HiddenAdvertiser.objects.filter(subject=subject)
        .select_related("advertiser")
        .order_by("-created_at", "-id")
    )


def export_subject_data(subject: Subject) -> dict[str, Any]:
    """What the ads app holds about a subject, for their data export (registered with
    `consent.selectors.register_export_contributor`)."""
    features = SubjectFeatures.objects.filter(subject=subject).first()
    decisions = (
        AdDecision.objects.filter(subject=subject)
        .select_related("ad", "campaign__advertiser")
        .prefetch_related(Prefetch("events", AdEvent.objects.order_by("occurred_at")))
        .order_by("created_at")
    )
    return {
        "signals": [
            {
                "type": signal.type,
                "occurred_at": signal.occurred_at,
                "received_at": signal.received_at,
                "data": signal.data,
            }
            for signal in Signal.objects.filter(subject=subject).order_by("occurred_at", "id")
        ],
        "features": None
        if features is None
        else {
            "channel_topics": features.channel_topics,
            "ad_interactions": features.ad_interactions,
            "city": features.city,
            "activity_level": features.activity_level,
            "updated_at": features.updated_at,
        },
        "ad_decisions": [
            {
                "id": decision.pk,
                "created_at": decision.created_at,
                "placement": decision.placement,
                "reason": decision.reason,
                "personalized": decision.personalized,
                "advertiser": decision.campaign.advertiser.name if decision.campaign else None,
                "ad": decision.ad.headline if decision.ad else None,
                "context": decision.context,
                "features_used": decision.features_used,
                "purposes_used": decision.purposes_used,
                "events": [
                    {"type": event.type, "occurred_at": event.occurred_at}
                    for event in decision.events.all()
                ],
            }
            for decision in decisions
        ],
        "chat_windows": [
            {
                "business": window.business,
                "opened_at": window.opened_at,
                "expires_at": window.expires_at,
            }
            for window in ChatEntryWindow.objects.filter(subject=subject).order_by("opened_at")
        ],
        "hidden_advertisers": [
            {
                "advertiser_id": hidden.advertiser_id,
                "advertiser": hidden.advertiser.name,
                "hidden_at": hidden.created_at,
            }
            for hidden in hidden_advertisers(subject=subject)
        ],
    }
