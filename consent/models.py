"""The consent domain: who allowed what, where, and under which policy version."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from consent.choices import (
    FORBIDDEN_CATEGORY_KEYS,
    ActorType,
    BatchStatus,
    DeliveryStatus,
    JurisdictionKind,
    Mechanism,
    Region,
    RolloutStatus,
    Source,
    WebhookEvent,
)


class MetadataCategory(models.Model):
    """A kind of metadata a purpose may use. Never message content."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "metadata categories"
        constraints = [
            models.CheckConstraint(
                condition=~Q(key__in=sorted(FORBIDDEN_CATEGORY_KEYS)),
                name="metadata_category_never_content",
                violation_error_message="Message content is never a metadata category.",
            ),
        ]

    def __str__(self) -> str:
        return self.key


class PolicyVersion(models.Model):
    """A published privacy policy; rolled out to subjects region by region."""

    # Labels sort chronologically; consent checks compare them as strings.
    label = models.CharField(
        max_length=16,
        unique=True,
        validators=[RegexValidator(r"^\d{4}-(0[1-9]|1[0-2])$", "Use YYYY-MM, e.g. 2025-06.")],
        help_text="YYYY-MM, e.g. 2025-06",
    )
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    summary_of_changes = models.TextField(blank=True)
    material = models.BooleanField(
        default=False, help_text="A material change may require a fresh decision."
    )
    changed_purposes: models.ManyToManyField[Purpose, Any] = models.ManyToManyField(
        "Purpose",
        blank=True,
        related_name="changed_in_versions",
        help_text="Existing purposes whose terms this version changes.",
    )
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["label"]

    def __str__(self) -> str:
        return self.label


class Purpose(models.Model):
    """A use of data that needs a decision."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(help_text="Plain language, shown to the person.")
    categories = models.ManyToManyField(MetadataCategory, related_name="purposes")
    introduced_in = models.ForeignKey(
        PolicyVersion, on_delete=models.PROTECT, related_name="introduced_purposes"
    )
    essential = models.BooleanField(
        default=False, help_text="Always on; shown for transparency only."
    )
    gpc_applies = models.BooleanField(
        default=False,
        help_text="Sale/sharing purpose: Global Privacy Control opts the person out.",
    )
    profiling = models.BooleanField(
        default=False,
        help_text="Profiling-based ads: blocked for minors where the law bans them.",
    )
    display_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["display_order", "key"]

    def __str__(self) -> str:
        return self.key


class Jurisdiction(models.Model):
    """A rule set: a subdivision, a country, or the protective default."""

    DEFAULT_CODE = "DEFAULT"

    code = models.CharField(
        max_length=8, unique=True, help_text="ISO 3166-1 alpha-2, ISO 3166-2, or DEFAULT"
    )
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=JurisdictionKind.choices)
    region = models.CharField(max_length=16, choices=Region.choices)
    law = models.CharField(max_length=200, blank=True)
    consent_age = models.PositiveSmallIntegerField(
        help_text="Below this age the person cannot consent themselves: "
        "every non-essential purpose is blocked."
    )
    opt_in_below_age = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Below this age opt-out purposes become opt-in (e.g. California under 16).",
    )
    minor_age = models.PositiveSmallIntegerField(default=18, help_text="Age of majority.")
    profiling_ads_to_minors_banned = models.BooleanField(default=False)
    gpc_required = models.BooleanField(
        default=False, help_text="The law requires honouring universal opt-out signals."
    )
    material_change_requires_decision = models.BooleanField(default=True)
    request_deadline_days = models.PositiveSmallIntegerField(
        help_text="Deadline for access/erasure requests."
    )
    request_deadline_extension_days = models.PositiveSmallIntegerField(default=0)
    notes = models.TextField(blank=True, help_text="Sources, uncertain points, choices made.")
    current_policy_version = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="live_jurisdictions",
        help_text="The version new subjects here start on.",
    )

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(minor_age__gte=models.F("consent_age")),
                name="jurisdiction_consent_age_not_above_majority",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"


class JurisdictionRule(models.Model):
    """How one purpose is decided in one jurisdiction."""

    jurisdiction = models.ForeignKey(Jurisdiction, on_delete=models.CASCADE, related_name="rules")
    purpose = models.ForeignKey(Purpose, on_delete=models.CASCADE, related_name="rules")
    mechanism = models.CharField(max_length=16, choices=Mechanism.choices)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["jurisdiction__code", "purpose__display_order"]
        constraints = [
            models.UniqueConstraint(
                fields=["jurisdiction", "purpose"], name="one_rule_per_jurisdiction_purpose"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.jurisdiction.code}/{self.purpose.key}: {self.mechanism}"


class Subject(models.Model):
    """A platform user as Parley knows them.

    Never deleted: erasure keeps a tombstone, and on PostgreSQL a trigger refuses
    DELETE (migration 0007). The table is stored with fillfactor 50 so that a
    rollout's update of every subject's version stays on the same page (a HOT update
    touches none of the indexes).
    """

    external_id = models.CharField(max_length=64, unique=True)
    country = models.CharField(max_length=2)
    subdivision = models.CharField(max_length=6, blank=True)
    language = models.CharField(max_length=35, default="en")
    birth_year = models.PositiveSmallIntegerField(null=True, blank=True)
    jurisdiction = models.ForeignKey(
        Jurisdiction, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    policy_version = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="subject",
    )
    gpc_signalled_at = models.DateTimeField(null=True, blank=True)
    erased_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["jurisdiction", "id"], name="subject_jurisdiction_id")]
        permissions = [("record_staff_change", "Can record a staff consent change")]

    def __str__(self) -> str:
        return self.external_id


class PolicyNotice(models.Model):
    """A policy version shown to a subject until they decide or acknowledge.

    Written for every subject a rollout reaches, so its references carry no
    database-level foreign key: subjects and published versions cannot be deleted
    (triggers, migration 0007), and the ORM's PROTECT/CASCADE still apply.
    """

    # The unique (subject, version) constraint is the index for the subject's notices.
    subject = models.ForeignKey(
        Subject,
        on_delete=models.CASCADE,
        related_name="notices",
        db_index=False,
        db_constraint=False,
    )
    version = models.ForeignKey(
        PolicyVersion, on_delete=models.PROTECT, related_name="notices", db_constraint=False
    )
    requires_decision = models.BooleanField(default=False)
    previous_version = models.ForeignKey(
        PolicyVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
        help_text="The version the subject was on before; a rollback returns them to it.",
    )
    decision_purposes: models.ManyToManyField[Purpose, Any] = models.ManyToManyField(
        Purpose, blank=True, related_name="+", through="NoticeDecisionPurpose"
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "version"], name="one_notice_per_version"),
        ]

    def __str__(self) -> str:
        return f"{self.subject_id}@{self.version_id}"


class NoticeDecisionPurpose(models.Model):
    """A purpose a notice asks the subject to decide on (the notice's
    `decision_purposes`).

    A rollout writes one row per subject and purpose to decide, so, like the notice,
    the rows carry no database-level foreign keys (their per-row checks at commit were
    a quarter of such a batch's time): notices and purposes are deleted through the
    ORM, which deletes their rows first (CASCADE; a purpose that any event or state
    names is protected). The unique pair is the only index: it leads with the notice,
    and a purpose's rows are looked up only when it is deleted.
    """

    policynotice = models.ForeignKey(
        PolicyNotice, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    purpose = models.ForeignKey(
        Purpose, on_delete=models.CASCADE, db_index=False, db_constraint=False, related_name="+"
    )

    class Meta:
        db_table = "consent_policynotice_decision_purposes"
        unique_together = [("policynotice", "purpose")]

    def __str__(self) -> str:
        return f"{self.policynotice_id}:{self.purpose_id}"


class ConsentEvent(models.Model):
    """One decision. Append-only: on PostgreSQL a trigger refuses UPDATE and DELETE.

    The busiest table: it is only appended to and read by subject, newest first, so it
    carries that one index (`event_subject_newest`) and none per foreign key — every
    extra index is paid on each of the millions of rows a rollout writes. For the same
    reason no reference is a database-level foreign key (a per-row check at commit
    cost a rollout half its time): what it references is never deleted — subjects and
    published versions are protected by triggers (migration 0007), reference data by
    PROTECT in the ORM — and every writer takes the ids from rows it has just read.
    """

    subject = models.ForeignKey(
        Subject,
        on_delete=models.PROTECT,
        related_name="events",
        db_index=False,
        db_constraint=False,
    )
    purpose = models.ForeignKey(
        Purpose, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    granted = models.BooleanField()
    source = models.CharField(max_length=24, choices=Source.choices)
    policy_version = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    jurisdiction = models.ForeignKey(
        Jurisdiction,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=150, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    # Proof context: what the person saw and where the decision came from.
    notice_version = models.ForeignKey(
        PolicyVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    language = models.CharField(max_length=35, blank=True)
    ip_truncated = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    reason = models.TextField(blank=True, help_text="Why staff made the change.")
    # The rollout phase that wrote a default, so that a rollback can find it.
    rollout_phase = models.ForeignKey(
        "RolloutPhase",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    class Meta:
        indexes = [models.Index(fields=["subject", "-id"], name="event_subject_newest")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject_id}/{self.purpose_id}={self.granted} ({self.source})"


class ConsentState(models.Model):
    """The current decision per (subject, purpose); written with its event.

    Read and upserted by (subject, purpose) only: the unique constraint is its index.
    Like ConsentEvent it has no database-level foreign keys: its subject is never
    deleted, its event is append-only, and it is written in the same statement or
    transaction as that event.
    """

    subject = models.ForeignKey(
        Subject,
        on_delete=models.CASCADE,
        related_name="states",
        db_index=False,
        db_constraint=False,
    )
    purpose = models.ForeignKey(
        Purpose, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    granted = models.BooleanField()
    source = models.CharField(max_length=24, choices=Source.choices)
    policy_version = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    event = models.ForeignKey(
        ConsentEvent,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "purpose"], name="one_state_per_purpose"),
        ]
        permissions = [("view_consent_statistics", "Can view consent statistics")]

    def __str__(self) -> str:
        return f"{self.subject_id}/{self.purpose_id}={self.granted}"


class Rollout(models.Model):
    """The plan that carries a policy version to subjects, phase by phase."""

    version = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="rollouts")
    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=RolloutStatus.choices, default=RolloutStatus.DRAFT
    )
    created_at = models.DateTimeField(default=timezone.now)
    dry_run = models.JSONField(null=True, blank=True, editable=False)
    dry_run_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        permissions = [
            ("control_rollout", "Can start, pause, resume, cancel and roll back rollouts"),
        ]

    def __str__(self) -> str:
        return self.name


class RolloutPhase(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="phases")
    position = models.PositiveSmallIntegerField()
    starts_at = models.DateTimeField()
    jurisdictions = models.ManyToManyField(Jurisdiction, related_name="rollout_phases")
    status = models.CharField(
        max_length=16, choices=RolloutStatus.choices, default=RolloutStatus.SCHEDULED
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0, help_text="Subjects to reach.")
    processed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["rollout", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "position"], name="unique_phase_position"),
        ]

    def __str__(self) -> str:
        return f"{self.rollout} phase {self.position}"


class RolloutBatch(models.Model):
    """A keyset range of subject ids [lo_id, hi_id) of one phase, processed in one
    transaction. Progress lives here, so a crashed worker loses nothing."""

    phase = models.ForeignKey(RolloutPhase, on_delete=models.CASCADE, related_name="batches")
    lo_id = models.BigIntegerField()
    hi_id = models.BigIntegerField()
    size = models.PositiveIntegerField(help_text="Subjects in the range when the phase started.")
    status = models.CharField(
        max_length=16, choices=BatchStatus.choices, default=BatchStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["phase", "lo_id"]
        constraints = [
            models.UniqueConstraint(fields=["phase", "lo_id"], name="unique_batch_range"),
        ]
        indexes = [models.Index(fields=["status", "dispatched_at"], name="batch_status_dispatched")]

    def __str__(self) -> str:
        return f"{self.phase} [{self.lo_id}, {self.hi_id})"


class RolloutAction(models.Model):
    """Who did what to a rollout, and when (and what the engine did by itself)."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="actions")
    phase = models.ForeignKey(
        RolloutPhase, null=True, blank=True, on_delete=models.CASCADE, related_name="actions"
    )
    action = models.CharField(max_length=32)
    actor = models.CharField(max_length=150)
    at = models.DateTimeField(default=timezone.now)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor}"


class WebhookSubscription(models.Model):
    """A service's endpoint for consent.changed / subject.erased notifications."""

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=200, help_text="Standard Webhooks secret (whsec_…, base64)."
    )
    events = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    account = models.ForeignKey(
        "ServiceAccount", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} → {self.url}"


class OutboxMessage(models.Model):
    """A change to announce, written in the transaction that made it."""

    event_type = models.CharField(max_length=32, choices=WebhookEvent.choices)
    subject_id = models.BigIntegerField(help_text="Orders deliveries per subject.")
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    fanned_out = models.BooleanField(default=False, db_index=True)

    def __str__(self) -> str:
        return f"#{self.pk} {self.event_type}"


class WebhookDelivery(models.Model):
    """One message to one subscription; attempts and outcome for staff to see."""

    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="deliveries")
    subject_id = models.BigIntegerField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "message"], name="one_delivery_per_subscription"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            models.Index(fields=["subscription", "subject_id", "message"], name="delivery_order"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} → {self.subscription_id} ({self.status})"


class ServiceAccount(models.Model):
    """A platform service that calls the API."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class ServiceToken(models.Model):
    """A bearer token; only its SHA-256 is stored."""

    account = models.ForeignKey(ServiceAccount, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests this token may make per minute; empty: the default "
        "(API_RATE_LIMIT_PER_MINUTE).",
    )

    def __str__(self) -> str:
        return f"{self.account.name}:{self.prefix}…"


class IdempotencyRecord(models.Model):
    """The response to a request sent with an Idempotency-Key, kept for replays."""

    account = models.ForeignKey(ServiceAccount, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "key"], name="unique_idempotency_key"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}:{self.key}"


class DashboardLink(models.Model):
    """A single-use, short-lived sign-in link to the privacy dashboard."""

    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    issued_by = models.ForeignKey(
        ServiceAccount, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"link for {self.subject_id} until {self.expires_at:%Y-%m-%d %H:%M}"
