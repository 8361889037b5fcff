"""Writes of the ads app. Signal ingestion lives in `ads.signals`, decisions and their
events in `ads.decisions`; this module holds what the other apps call."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from consent.errors import NotFound
from consent.models import Subject

if TYPE_CHECKING:
    from ads.models import Advertiser


def erase_subject_data(subject: Subject) -> None:
    """Erasure (registered with `consent.services.register_erasure_hook`): the
    subject's signals, features, hidden advertisers, decisions with their events and
    click-to-chat windows are deleted in the erasure's transaction."""
    from ads.models import (
        AdDecision,
        ChatEntryWindow,
        HiddenAdvertiser,
        Signal,
        SubjectFeatures,
    )

    Signal.objects.filter(subject=subject).delete()
    SubjectFeatures.objects.filter(subject=subject).delete()
    HiddenAdvertiser.objects.filter(subject=subject).delete()
    ChatEntryWindow.objects.filter(subject=subject).delete()
    AdDecision.objects.filter(subject=subject).delete()


# --- the privacy dashboard ---------------------------------------------------------------


def _lock(subject: Subject) -> None:
    # Ingestion and feature rebuilds lock the subject's row too: one at a time.
    Subject.objects.select_for_update().filter(pk=subject.pk).first()


@transaction.atomic
def hide_advertiser(*, subject: Subject, decision_id: uuid.UUID) -> Advertiser:
    """The subject hides the advertiser of an ad they were shown: its ads are not
    chosen for them again (whatever their consent). Hiding twice changes nothing.

    Raises `NotFound` unless the decision is the subject's own and showed an ad."""
    from ads.models import AdDecision, HiddenAdvertiser

    _lock(subject)
    decision = (
        AdDecision.objects.select_related("campaign__advertiser")
        .filter(pk=decision_id, subject=subject, campaign__isnull=False)
        .first()
    )
    if decision is None or decision.campaign is None:
        raise NotFound("No such ad for this subject.", field="decision")
    advertiser = decision.campaign.advertiser
    HiddenAdvertiser.objects.get_or_create(
        subject=subject, advertiser=advertiser, defaults={"created_at": timezone.now()}
    )
    return advertiser


@transaction.atomic
def show_advertiser_again(*, subject: Subject, advertiser_id: int) -> None:
    """Undoes a hide. Raises `NotFound` if the subject has not hidden that advertiser."""
    from ads.models import HiddenAdvertiser

    _lock(subject)
    deleted, _ = HiddenAdvertiser.objects.filter(
        subject=subject, advertiser_id=advertiser_id
    ).delete()
    if not deleted:
        raise NotFound("This advertiser is not hidden.", field="advertiser")


@transaction.atomic
def erase_ad_data(*, subject: Subject) -> dict[str, int]:
    """The subject erases their ad data: signals, features and ad history (decisions
    with their impressions, clicks and click-to-chat windows). Consent records stay,
    and so do the advertisers they hid (a wish not to see them, not data about them).
    Returns how many signals, feature rows and decisions were deleted."""
    from ads.models import AdDecision, Signal, SubjectFeatures

    _lock(subject)
    signals, _ = Signal.objects.filter(subject=subject).delete()
    features, _ = SubjectFeatures.objects.filter(subject=subject).delete()
    decisions = AdDecision.objects.filter(subject=subject).count()
    AdDecision.objects.filter(subject=subject).delete()
    return {"signals": signals, "features": features, "decisions": decisions}


def entry_window_open(*, recipient: str, business: str, at: datetime) -> bool:
    """Registered with `billing.services.register_entry_window_check`: is a click-to-chat
    window open between the subject and the business at `at`? `business` is the
    billing account's id as text, which is what a campaign's `click_to_chat` holds."""
    from ads.decisions import open_chat_window

    return open_chat_window(external_id=recipient, business=business, at=at) is not None
