"""Writes of the ads app. Signal ingestion lives in `ads.signals`, decisions and their
events in `ads.decisions`; this module holds what the other apps call."""

from __future__ import annotations

from datetime import datetime

from consent.models import Subject


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


def entry_window_open(*, recipient: str, business: str, at: datetime) -> bool:
    """Registered with `billing.services.register_entry_window_check`: is a click-to-chat
    window open between the subject and the business at `at`? `business` is the
    billing account's id as text, which is what a campaign's `click_to_chat` holds."""
    from ads.decisions import open_chat_window

    return open_chat_window(external_id=recipient, business=business, at=at) is not None
