"""Enumerations of the ads domain, and the fixed ties between what ads may use and the
consent model: which metadata category each feature and each signal type belongs to,
and which purpose has to be allowed for it.

These ties are code, not data, on purpose: loosening one (say, letting a signal feed a
purpose that does not cover its category) is a deliberate edit that
`tests/ads/test_ties.py` catches against the seeded purposes.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Placement(models.TextChoices):
    STATUS = "status", _("Status / Updates tab")
    CHANNELS = "channels", _("Channels directory")


# The placements' values, made once (`Placement.values` builds a new list on every read,
# and decisions ask on every request).
PLACEMENTS: frozenset[str] = frozenset(Placement.values)


class Pricing(models.TextChoices):
    CPM = "cpm", _("CPM: price per 1,000 impressions")
    CPC = "cpc", _("CPC: price per click")


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    ACTIVE = "active", _("Active")
    PAUSED = "paused", _("Paused")
    ENDED = "ended", _("Ended")


class Feature(models.TextChoices):
    """What a targeting rule may look at. Nothing else exists to target on."""

    COUNTRY = "country", _("Country")
    CITY = "city", _("City")
    LANGUAGE = "language", _("Language")
    AGE_BAND = "age_band", _("Age band")
    CHANNEL_TOPIC = "channel_topic", _("Followed-channel topics")
    AD_INTERACTION = "ad_interaction", _("Ad interactions")


class SignalType(models.TextChoices):
    CHANNEL_FOLLOWED = "channel_followed", _("Channel followed")
    CHANNEL_UNFOLLOWED = "channel_unfollowed", _("Channel unfollowed")
    CHANNEL_CONTENT_ENGAGED = "channel_content_engaged", _("Channel content engaged")
    STATUS_VIEWED = "status_viewed", _("Status viewed")
    AD_CLICKED = "ad_clicked", _("Ad clicked")
    AD_HIDDEN = "ad_hidden", _("Ad hidden")
    APP_SESSION = "app_session", _("App session")
    MESSAGE_SENT = "message_sent", _("Message sent (timing and peer count only)")


class AdEventType(models.TextChoices):
    IMPRESSION = "impression", _("Impression")
    CLICK = "click", _("Click")


class DecisionReason(models.TextChoices):
    SERVED = "served", _("An ad was chosen")
    NOT_LIVE = "not_live", _("Status ads have not reached this person yet")
    UNKNOWN_SUBJECT = "unknown_subject", _("No such subject")
    NO_ELIGIBLE_AD = "no_eligible_ad", _("No ad is eligible")


class ActivityLevel(models.TextChoices):
    NONE = "none", _("No recent activity")
    LOW = "low", _("Low")
    MEDIUM = "medium", _("Medium")
    HIGH = "high", _("High")


# The purpose whose permission turns personalised ads on at all.
PERSONALIZATION = "ads_personalization"

# Feature -> (metadata category, purpose that must be allowed to use it). Country and
# language also come from the request's context, which is not profiling and is always
# usable; the profile's values of them need the purpose.
FEATURE_TIES: dict[str, tuple[str, str]] = {
    Feature.COUNTRY: ("coarse_location", PERSONALIZATION),
    Feature.CITY: ("coarse_location", PERSONALIZATION),
    Feature.LANGUAGE: ("device_language", PERSONALIZATION),
    Feature.AGE_BAND: ("age_band", PERSONALIZATION),
    Feature.CHANNEL_TOPIC: ("updates_activity", PERSONALIZATION),
    Feature.AD_INTERACTION: ("ad_interactions", "ads_data_sharing"),
}

# Features the request context gives without any profile.
CONTEXT_FEATURES = frozenset({Feature.COUNTRY, Feature.LANGUAGE})

# Signal type -> (metadata category, purpose it feeds). A signal whose purpose the
# subject has not allowed is dropped at ingestion, never stored.
SIGNAL_TIES: dict[str, tuple[str, str]] = {
    SignalType.CHANNEL_FOLLOWED: ("updates_activity", PERSONALIZATION),
    SignalType.CHANNEL_UNFOLLOWED: ("updates_activity", PERSONALIZATION),
    SignalType.CHANNEL_CONTENT_ENGAGED: ("updates_activity", PERSONALIZATION),
    SignalType.STATUS_VIEWED: ("updates_activity", PERSONALIZATION),
    SignalType.AD_CLICKED: ("ad_interactions", "ads_data_sharing"),
    SignalType.AD_HIDDEN: ("ad_interactions", "ads_data_sharing"),
    SignalType.APP_SESSION: ("app_usage", "analytics"),
    SignalType.MESSAGE_SENT: ("message_timing", "analytics"),
}

# Age bands shown to advertisers (never an exact age).
AGE_BANDS = ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
