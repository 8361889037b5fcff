"""Enumerations of the consent domain."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Mechanism(models.TextChoices):
    OPT_IN = "opt_in", _("Opt-in: off until the person says yes")
    OPT_OUT = "opt_out", _("Opt-out: on by default, the person may turn it off")
    ALWAYS_ON = "always_on", _("Always on (essential)")
    UNAVAILABLE = "unavailable", _("Unavailable in this jurisdiction")


class Source(models.TextChoices):
    USER_WEB = "user_web", _("Your choice on the privacy dashboard")
    USER_APP = "user_app", _("Your choice in the app")
    GPC = "gpc", _("Global Privacy Control")
    ROLLOUT_DEFAULT = "rollout_default", _("Default in your region")
    JURISDICTION_CHANGE = "jurisdiction_change", _("Changed when your region changed")
    AGE_RULE = "age_rule", _("Age rule")
    STAFF = "staff", _("Changed by support staff")
    ERASURE = "erasure", _("Erasure")


# A choice the person (or staff on their documented request) made; rollouts and
# moves keep these, while defaults are recomputed.
EXPLICIT_SOURCES = frozenset({Source.USER_WEB, Source.USER_APP, Source.STAFF})


class ActorType(models.TextChoices):
    SUBJECT = "subject", _("The person")
    SERVICE = "service", _("A platform service")
    STAFF = "staff", _("A staff member")
    SYSTEM = "system", _("Parley itself")


class DenialReason(models.TextChoices):
    UNKNOWN_SUBJECT = "unknown_subject", _("No such subject")
    NOT_LIVE = "not_live", _("Not live for this subject")
    DENIED = "denied", _("Not granted")
    AGE_RESTRICTED = "age_restricted", _("Blocked by an age rule")
    GPC = "gpc", _("Opted out by Global Privacy Control")


class JurisdictionKind(models.TextChoices):
    COUNTRY = "country", _("Country")
    SUBDIVISION = "subdivision", _("Subdivision (state or province)")
    DEFAULT = "default", _("Default rule set")


class Region(models.TextChoices):
    EU_EEA = "eu_eea", _("EU/EEA and Switzerland")
    UK = "uk", _("United Kingdom")
    US = "us", _("United States")
    LATAM = "latam", _("Latin America")
    SOUTH_ASIA = "south_asia", _("South Asia")
    SOUTH_EAST_ASIA = "sea", _("South-East Asia")
    AFRICA = "africa", _("Africa")
    OTHER = "other", _("Rest of the world")


class PurposeChange(models.TextChoices):
    INTRODUCES = "introduces", _("Introduces the purpose")
    CHANGES = "changes", _("Changes the purpose")


class Scope(models.TextChoices):
    CONSENT_READ = "consent:read", "consent:read"
    CONSENT_WRITE = "consent:write", "consent:write"
    SIGNALS_WRITE = "signals:write", "signals:write"
    ADS_DECIDE = "ads:decide", "ads:decide"
    POLICY_READ = "policy:read", "policy:read"
    POLICY_WRITE = "policy:write", "policy:write"
    BILLING_READ = "billing:read", "billing:read"
    BILLING_WRITE = "billing:write", "billing:write"


class RolloutStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SCHEDULED = "scheduled", _("Scheduled")
    RUNNING = "running", _("Running")
    PAUSED = "paused", _("Paused")
    COMPLETED = "completed", _("Completed")
    CANCELLED = "cancelled", _("Cancelled")
    FAILED = "failed", _("Failed")
    ROLLED_BACK = "rolled_back", _("Rolled back")


class BatchStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class WebhookEvent(models.TextChoices):
    CONSENT_CHANGED = "consent.changed", "consent.changed"
    SUBJECT_ERASED = "subject.erased", "subject.erased"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    DELIVERED = "delivered", _("Delivered")
    DEAD = "dead", _("Gave up")


# Data that may never become a metadata category, whatever staff type in the admin:
# message content and everything the platform promised never to use for ads.
FORBIDDEN_CATEGORY_KEYS = frozenset(
    {
        "message_content",
        "message_text",
        "messages",
        "media",
        "call_content",
        "calls",
        "status_content",
        "statuses",
        "chat_location",
        "shared_location",
        "contacts",
        "device_contacts",
        "group_membership",
        "groups",
    }
)
