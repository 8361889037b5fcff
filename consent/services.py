"""Every change to consent goes through these functions.

Each one runs in a single transaction and writes the append-only event together
with the current state. Changes to one subject are serialised by locking the
subject's row first (SELECT … FOR UPDATE), so concurrent requests for the same
subject give one event each and a current state equal to the last event.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from consent import reach, rules, selectors, validators, webhooks
from consent.auth import forget_token, hash_token, new_raw_token
from consent.choices import EXPLICIT_SOURCES, ActorType, Mechanism, Scope, Source
from consent.errors import (
    AlreadyExists,
    Conflict,
    IdempotencyKeyReused,
    InvalidValue,
    Locked,
    NotFound,
)
from consent.models import (
    ConsentEvent,
    ConsentState,
    DashboardLink,
    IdempotencyRecord,
    Jurisdiction,
    JurisdictionRule,
    PolicyNotice,
    PolicyVersion,
    Purpose,
    ServiceAccount,
    ServiceToken,
    Subject,
)


@dataclass(frozen=True)
class Actor:
    """Who made a change: the subject, a service, a staff member or Parley itself."""

    type: ActorType
    id: str = ""


SYSTEM = Actor(ActorType.SYSTEM, "parley")


@dataclass(frozen=True)
class Proof:
    """The context that proves a decision: what was shown, to whom, from where."""

    notice_version: PolicyVersion | None = None
    language: str = ""
    ip_truncated: str = ""
    user_agent: str = ""


NO_PROOF = Proof()


def truncate_ip(raw: str | None) -> str:
    """Keeps the network, never the host: IPv4 to /24, IPv6 to /48."""
    if not raw:
        return ""
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return ""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


# --- internals ----------------------------------------------------------------------


@dataclass
class _Change:
    purpose: Purpose
    granted: bool
    source: Source
    reason: str = ""


@dataclass
class _Context:
    """What deciding for one subject needs, loaded once per operation."""

    subject: Subject
    mechanisms: dict[int, str]
    states: dict[int, ConsentState]
    age: int | None
    age_rules: rules.AgeRules
    purposes: list[Purpose] = field(default_factory=list)

    def mechanism(self, purpose: Purpose) -> str | None:
        return self.mechanisms.get(purpose.pk)

    def live(self, purpose: Purpose) -> bool:
        return rules.is_live(
            introduced_label=purpose.introduced_in.label,
            subject_version_label=self.subject.policy_version.label,
            mechanism=self.mechanism(purpose),
        )

    def blocked(self, purpose: Purpose) -> bool:
        return rules.age_blocked(
            age=self.age, rules=self.age_rules, purpose=selectors.purpose_flags(purpose)
        )

    def default(self, purpose: Purpose) -> tuple[bool, Source]:
        return rules.default_decision(
            mechanism=self.mechanism(purpose) or Mechanism.UNAVAILABLE,
            age=self.age,
            rules=self.age_rules,
            purpose=selectors.purpose_flags(purpose),
            gpc_signalled=self.subject.gpc_signalled_at is not None,
        )


def _context(subject: Subject) -> _Context:
    subject.jurisdiction = Jurisdiction.objects.get(pk=subject.jurisdiction_id)
    subject.policy_version = PolicyVersion.objects.get(pk=subject.policy_version_id)
    return _Context(
        subject=subject,
        mechanisms=dict(
            JurisdictionRule.objects.filter(jurisdiction_id=subject.jurisdiction_id).values_list(
                "purpose_id", "mechanism"
            )
        ),
        states={s.purpose_id: s for s in ConsentState.objects.filter(subject=subject)},
        age=rules.lowest_age(subject.birth_year, selectors.today()),
        age_rules=selectors.age_rules(subject.jurisdiction),
        purposes=list(Purpose.objects.select_related("introduced_in")),
    )


def _lock_subject(external_id: str) -> Subject:
    subject = (
        Subject.objects.select_for_update()
        .filter(external_id=external_id, erased_at__isnull=True)
        .first()
    )
    if subject is None:
        raise NotFound(f"No subject '{external_id}'.")
    return subject


def _write(
    ctx: _Context,
    changes: Iterable[_Change],
    *,
    actor: Actor,
    proof: Proof,
    now: datetime | None = None,
) -> list[ConsentEvent]:
    """Appends one event per change and moves the current state to it."""
    now = now or timezone.now()
    subject = ctx.subject
    events = ConsentEvent.objects.bulk_create(
        [
            ConsentEvent(
                subject=subject,
                purpose=change.purpose,
                granted=change.granted,
                source=change.source,
                policy_version_id=subject.policy_version_id,
                jurisdiction_id=subject.jurisdiction_id,
                actor_type=actor.type,
                actor_id=actor.id,
                occurred_at=now,
                notice_version=proof.notice_version,
                language=proof.language or subject.language,
                ip_truncated=proof.ip_truncated,
                user_agent=proof.user_agent[:512],
                reason=change.reason,
            )
            for change in changes
        ]
    )
    if not events:
        return events
    states = [
        ConsentState(
            subject=subject,
            purpose=event.purpose,
            granted=event.granted,
            source=event.source,
            policy_version_id=event.policy_version_id,
            event=event,
            updated_at=now,
        )
        for event in events
    ]
    ConsentState.objects.bulk_create(
        states,
        update_conflicts=True,
        unique_fields=["subject", "purpose"],
        update_fields=["granted", "source", "policy_version", "event", "updated_at"],
    )
    for state in states:
        ctx.states[state.purpose_id] = state
    webhooks.enqueue_consent_changes(events=events)
    return events


def _touch(subject: Subject, now: datetime, *fields: str) -> None:
    subject.updated_at = now
    subject.save(update_fields=[*fields, "updated_at"])


# --- subjects -------------------------------------------------------------------------


def resolve_jurisdiction(*, country: str, subdivision: str = "") -> Jurisdiction:
    """Subdivision first (US state law differs), then country, then the default rules."""
    codes = [c for c in (subdivision, country, Jurisdiction.DEFAULT_CODE) if c]
    found = {j.code: j for j in Jurisdiction.objects.filter(code__in=codes)}
    for code in codes:
        if code in found:
            return found[code]
    raise NotFound("No default jurisdiction is configured.")


@transaction.atomic
def register_subject(
    *,
    external_id: str,
    country: str,
    subdivision: str = "",
    language: str = "en",
    birth_year: int | None = None,
    actor: Actor,
) -> Subject:
    """Registers a subject on their jurisdiction's current policy version and records
    the jurisdiction's default for every purpose live there."""
    external_id = validators.external_id(external_id)
    country = validators.country(country)
    subdivision = validators.subdivision(subdivision, country_code=country)
    language = validators.language(language)
    birth_year = validators.birth_year(birth_year)
    if Subject.objects.filter(external_id=external_id).exists():
        raise AlreadyExists(f"Subject '{external_id}' already exists.", field="external_id")
    jurisdiction = resolve_jurisdiction(country=country, subdivision=subdivision)
    now = timezone.now()
    try:
        with transaction.atomic():
            subject = Subject.objects.create(
                external_id=external_id,
                country=country,
                subdivision=subdivision,
                language=language,
                birth_year=birth_year,
                jurisdiction=jurisdiction,
                policy_version_id=jurisdiction.current_policy_version_id,
                created_at=now,
                updated_at=now,
            )
    except IntegrityError:
        raise AlreadyExists(
            f"Subject '{external_id}' already exists.", field="external_id"
        ) from None
    ctx = _context(subject)
    changes = []
    for purpose in ctx.purposes:
        if ctx.live(purpose):
            granted, source = ctx.default(purpose)
            changes.append(_Change(purpose, granted, source))
    _write(ctx, changes, actor=actor, proof=NO_PROOF, now=now)
    return subject


def _reevaluate(ctx: _Context, *, moved: bool) -> list[_Change]:
    """After a move or a new birth year: defaults are recomputed, explicit choices kept
    unless the rules now forbid them, GPC opt-outs kept."""
    changes = []
    for purpose in ctx.purposes:
        if not ctx.live(purpose):
            continue
        state = ctx.states.get(purpose.pk)
        why = Source.JURISDICTION_CHANGE if moved else Source.AGE_RULE
        if state is not None and state.source in EXPLICIT_SOURCES:
            if state.granted and ctx.blocked(purpose):
                changes.append(_Change(purpose, False, why))
            continue
        if state is not None and state.source == Source.GPC:
            continue
        granted, source = ctx.default(purpose)
        # After a move the default comes from the new jurisdiction: say so even if the
        # value is unchanged. A refusal owed to GPC keeps saying GPC.
        if moved or state is None or state.granted != granted:
            changes.append(_Change(purpose, granted, source if source == Source.GPC else why))
    return changes


@transaction.atomic
def update_subject(
    *,
    external_id: str,
    actor: Actor,
    country: str | None = None,
    subdivision: str | None = None,
    language: str | None = None,
    birth_year: int | None = None,
    clear_birth_year: bool = False,
) -> Subject:
    """Changes a subject's attributes; a new jurisdiction or birth year re-evaluates
    their consents (PRODUCT.md: moving keeps explicit choices the new rules allow)."""
    subject = _lock_subject(external_id)
    now = timezone.now()
    new_country = validators.country(country) if country is not None else subject.country
    if subdivision is not None:
        new_subdivision = subdivision
    elif country is not None and country.upper() != subject.country:
        new_subdivision = ""  # a subdivision never outlives its country
    else:
        new_subdivision = subject.subdivision
    new_subdivision = validators.subdivision(new_subdivision, country_code=new_country)
    fields = ["country", "subdivision"]
    subject.country, subject.subdivision = new_country, new_subdivision
    if language is not None:
        subject.language = validators.language(language)
        fields.append("language")
    age_changed = False
    if clear_birth_year or birth_year is not None:
        new_birth_year = None if clear_birth_year else validators.birth_year(birth_year)
        age_changed = new_birth_year != subject.birth_year
        subject.birth_year = new_birth_year
        fields.append("birth_year")
    jurisdiction = resolve_jurisdiction(country=new_country, subdivision=new_subdivision)
    moved = jurisdiction.pk != subject.jurisdiction_id
    if moved:
        subject.jurisdiction = jurisdiction
        subject.policy_version_id = jurisdiction.current_policy_version_id
        fields += ["jurisdiction", "policy_version"]
    _touch(subject, now, *fields)
    if moved or age_changed:
        ctx = _context(subject)
        _write(ctx, _reevaluate(ctx, moved=moved), actor=actor, proof=NO_PROOF, now=now)
    return subject


# Other apps' data about a subject, erased in the erasure's transaction. `consent`
# imports no other app: they register here when Django starts (their AppConfig.ready).
ErasureHook = Callable[[Subject], None]
_erasure_hooks: list[ErasureHook] = []


def register_erasure_hook(hook: ErasureHook) -> None:
    """`hook(subject)` runs inside every erasure, before the subject is anonymised."""
    if hook not in _erasure_hooks:
        _erasure_hooks.append(hook)


@transaction.atomic
def erase_subject(*, external_id: str, actor: Actor) -> None:
    """Erasure: every purpose is withdrawn with an `erasure` event and the subject
    becomes an anonymous tombstone.

    The events stay (they prove what was decided and are append-only), but nothing
    ties them to the person any more: the external id is replaced by a random one,
    the birth year, subdivision and web login are removed, and pending notices and
    sign-in links are deleted, with what other apps hold (their erasure hooks: the
    ads app's signals, features and ad history).
    """
    subject = _lock_subject(external_id)
    ctx = _context(subject)
    now = timezone.now()
    _write(
        ctx,
        [_Change(state.purpose, False, Source.ERASURE) for state in ctx.states.values()],
        actor=actor,
        proof=NO_PROOF,
        now=now,
    )
    webhooks.enqueue_subject_erased(subject_pk=subject.pk, external_id=external_id, erased_at=now)
    for hook in _erasure_hooks:
        hook(subject)
    PolicyNotice.objects.filter(subject=subject).delete()
    DashboardLink.objects.filter(subject=subject).delete()
    user = subject.user
    subject.external_id = f"erased-{uuid.uuid4().hex}"
    subject.birth_year = None
    subject.subdivision = ""
    subject.user = None
    subject.erased_at = now
    _touch(subject, now, "external_id", "birth_year", "subdivision", "user", "erased_at")
    if user is not None:
        user.delete()


# --- choices ---------------------------------------------------------------------------


def _apply_gpc(ctx: _Context, *, actor: Actor, proof: Proof, now: datetime) -> None:
    if ctx.subject.gpc_signalled_at is not None:
        return  # honoured once: a later explicit choice must not be undone on every visit
    ctx.subject.gpc_signalled_at = now
    _touch(ctx.subject, now, "gpc_signalled_at")
    changes = []
    for purpose in ctx.purposes:
        if not purpose.gpc_applies or not ctx.live(purpose):
            continue
        state = ctx.states.get(purpose.pk)
        if state is not None and not state.granted and state.source in EXPLICIT_SOURCES:
            continue  # already refused by the person themselves
        if state is not None and state.source == Source.GPC:
            continue
        changes.append(_Change(purpose, False, Source.GPC))
    _write(ctx, changes, actor=actor, proof=proof, now=now)


@transaction.atomic
def apply_gpc(*, external_id: str, actor: Actor, proof: Proof = NO_PROOF) -> Subject:
    """Global Privacy Control: opts the subject out of every sale/sharing purpose, once.

    Purposes that go live later start refused for this subject (source `gpc`)."""
    subject = _lock_subject(external_id)
    _apply_gpc(_context(subject), actor=actor, proof=proof, now=timezone.now())
    return subject


@transaction.atomic
def record_choice(
    *,
    external_id: str,
    purpose_key: str,
    granted: bool,
    source: Source,
    actor: Actor,
    proof: Proof = NO_PROOF,
    gpc: bool = False,
    reason: str = "",
) -> ConsentState:
    """Records an explicit decision by the subject (or by staff on their behalf).

    With `gpc`, the request carried Global Privacy Control: it is applied first, so
    the explicit choice made in the same request is the later one and wins.
    """
    if source not in EXPLICIT_SOURCES:
        raise ValueError(f"{source} is not the source of an explicit choice")
    if source == Source.STAFF and not reason.strip():
        raise InvalidValue("A staff change needs a reason.", field="reason")
    subject = _lock_subject(external_id)
    purpose = selectors.get_purpose(key=purpose_key)
    ctx = _context(subject)
    now = timezone.now()
    if gpc:
        _apply_gpc(ctx, actor=actor, proof=proof, now=now)
    if not ctx.live(purpose):
        raise Conflict(f"'{purpose.key}' is not live for this subject yet.", field="purpose")
    if ctx.mechanism(purpose) == Mechanism.ALWAYS_ON:
        raise Locked(f"'{purpose.key}' is essential and always on.", field="purpose")
    if granted and ctx.blocked(purpose):
        raise Locked(
            f"An age rule of {subject.jurisdiction.code} forbids '{purpose.key}' for this subject.",
            field="granted",
        )
    _write(ctx, [_Change(purpose, granted, source, reason)], actor=actor, proof=proof, now=now)
    return ctx.states[purpose.pk]


# --- policy versions ----------------------------------------------------------------------


@transaction.atomic
def publish_version_to_jurisdiction(
    *, version: PolicyVersion, jurisdiction: Jurisdiction, actor: Actor = SYSTEM
) -> int:
    """Makes `version` live in one jurisdiction: new subjects start on it, and every
    existing subject there is carried to it. Returns how many subjects were reached.

    The whole jurisdiction in one transaction, for tests and staff; region-wide
    launches go through rollouts, which run the same step in batches.
    """
    if version.label > jurisdiction.current_policy_version.label:
        jurisdiction.current_policy_version = version
        jurisdiction.save(update_fields=["current_policy_version"])
    mark_published(version, timezone.now())
    result = reach.reach(
        version=version,
        jurisdiction_ids=[jurisdiction.pk],
        lo=0,
        hi=reach.MAX_ID,
        now=timezone.now(),
        actor_type=actor.type,
        actor_id=actor.id,
    )
    return result.subjects


def mark_published(version: PolicyVersion, now: datetime) -> None:
    """A version live anywhere is part of the record: from then on it cannot be
    deleted (the ORM's PROTECT, and a trigger on PostgreSQL) nor relabelled."""
    if version.published_at is None:
        version.published_at = now
        PolicyVersion.objects.filter(pk=version.pk, published_at__isnull=True).update(
            published_at=now
        )


@transaction.atomic
def resolve_notice(*, external_id: str, actor: Actor) -> PolicyNotice:
    """The subject has read the pending notice; a notice that asks for decisions is
    resolved only once every purpose it names that the subject can decide now has an
    explicit choice after it. A purpose that has become locked since (an age rule, a
    move to where it is unavailable) cannot be decided, so it is not waited for."""
    subject = _lock_subject(external_id)
    notice = selectors.pending_notice(subject=subject)
    if notice is None:
        raise NotFound("No pending policy notice.")
    decidable = selectors.decidable_notice_purposes(
        subject=selectors.get_subject(external_id=external_id), notice=notice
    )
    undecided = [
        p.key
        for p in decidable
        if not ConsentEvent.objects.filter(
            subject=subject,
            purpose=p,
            source__in=EXPLICIT_SOURCES,
            occurred_at__gte=notice.created_at,
        ).exists()
    ]
    if undecided:
        raise Conflict(f"Decisions still needed for: {', '.join(undecided)}.")
    notice.resolved_at = timezone.now()
    notice.save(update_fields=["resolved_at"])
    return notice


# --- service accounts and links -----------------------------------------------------------


@transaction.atomic
def create_service_token(
    *, name: str, scopes: Iterable[str], rate_limit_per_minute: int | None = None
) -> tuple[ServiceToken, str]:
    """Issues a token for the service account `name` (created if new). The raw token
    is returned once and never stored. Without `rate_limit_per_minute` the token has
    the default limit (`API_RATE_LIMIT_PER_MINUTE`)."""
    scope_list = sorted(set(scopes))
    unknown = [s for s in scope_list if s not in Scope.values]
    if unknown or not scope_list:
        raise InvalidValue(
            f"Unknown scopes {unknown}; choose from {', '.join(Scope.values)}."
            if unknown
            else "Give at least one scope.",
            field="scopes",
        )
    if rate_limit_per_minute is not None and not 0 < rate_limit_per_minute < 2**31:
        raise InvalidValue(
            "A rate limit is a number of requests per minute, at least 1.",
            field="rate_limit_per_minute",
        )
    account, _ = ServiceAccount.objects.get_or_create(name=name)
    raw = new_raw_token()
    token = ServiceToken.objects.create(
        account=account,
        prefix=raw[:12],
        token_hash=hash_token(raw),
        scopes=scope_list,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return token, raw


def revoke_service_token(*, token: ServiceToken) -> None:
    """Revokes a token: requests with it get 401 at once from this process, and from
    every other web process within `API_TOKEN_CACHE_SECONDS` (their cache of verified
    tokens)."""
    ServiceToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    forget_token(token.token_hash)


@transaction.atomic
def issue_dashboard_link(
    *, external_id: str, issued_by: ServiceAccount | None
) -> tuple[str, datetime]:
    """A single-use sign-in link to the privacy dashboard that expires in minutes."""
    subject = _lock_subject(external_id)
    raw = secrets.token_urlsafe(32)
    now = timezone.now()
    link = DashboardLink.objects.create(
        subject=subject,
        token_hash=hash_token(raw),
        created_at=now,
        expires_at=now + settings.DASHBOARD_LINK_TTL,
        issued_by=issued_by,
    )
    return f"{settings.PUBLIC_BASE_URL}/dashboard/login/{raw}", link.expires_at


# --- idempotency ---------------------------------------------------------------------------


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_idempotently(
    *,
    account: ServiceAccount,
    key: str,
    fingerprint: str,
    action: Callable[[], tuple[int, Any]],
) -> tuple[int, Any, bool]:
    """Runs `action` once per (account, key) within the retention window and stores
    its response in the same transaction. Returns (status, body, replayed).

    A replay with a different request is refused; two concurrent first attempts are
    settled by the unique constraint: the loser's work is rolled back and it replays.
    """
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidValue(
            "Idempotency-Key must be 1 to 255 printable characters.", field="Idempotency-Key"
        )
    cutoff = timezone.now() - settings.IDEMPOTENCY_KEY_TTL
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.filter(
                account=account, key=key, created_at__lt=cutoff
            ).delete()
            existing = (
                IdempotencyRecord.objects.select_for_update()
                .filter(account=account, key=key)
                .first()
            )
            if existing is not None:
                return _replay(existing, fingerprint)
            status, body = action()
            IdempotencyRecord.objects.create(
                account=account,
                key=key,
                fingerprint=fingerprint,
                response_status=status,
                response_body=body,
            )
            return status, body, False
    except IntegrityError:
        existing = IdempotencyRecord.objects.filter(account=account, key=key).first()
        if existing is None:
            raise
        return _replay(existing, fingerprint)


def _replay(record: IdempotencyRecord, fingerprint: str) -> tuple[int, Any, bool]:
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request.", field="Idempotency-Key"
        )
    return record.response_status, record.response_body, True


def purge_expired(*, now: datetime | None = None) -> dict[str, int]:
    """Deletes idempotency records past their window and sign-in links that expired
    or were used."""
    now = now or timezone.now()
    keys, _ = IdempotencyRecord.objects.filter(
        created_at__lt=now - settings.IDEMPOTENCY_KEY_TTL
    ).delete()
    links, _ = DashboardLink.objects.filter(expires_at__lt=now).delete()
    used, _ = DashboardLink.objects.filter(used_at__isnull=False).delete()
    return {"idempotency_records": keys, "dashboard_links": links + used}


# --- the privacy dashboard ---------------------------------------------------------------


@transaction.atomic
def redeem_dashboard_link(*, raw_token: str, now: datetime | None = None) -> Subject:
    """Uses up a sign-in link and returns its subject, whose session may then start.

    The row is locked, so two requests with the same link sign in once. Raises
    `NotFound` for a link that never existed (or was tampered with), `LinkUsed`,
    `LinkExpired`; a link of an erased subject is not found."""
    now = now or timezone.now()
    link = selectors.dashboard_link(raw_token=raw_token, now=now, for_update=True)
    link.used_at = now
    link.save(update_fields=["used_at"])
    return link.subject


@transaction.atomic
def decide_notice(
    *,
    external_id: str,
    decisions: dict[str, bool],
    actor: Actor,
    proof: Proof = NO_PROOF,
) -> PolicyNotice:
    """The subject's answer to their pending policy notice: one `user_web` choice per
    purpose the notice asks about, then the notice is resolved, all or nothing.

    Every purpose the subject can decide (not essential, live, not blocked by an age
    rule) needs a decision; purposes the subject cannot change are left as they are.
    A notice that asks for no decision is resolved by reading it (`decisions` empty)."""
    subject = _lock_subject(external_id)
    notice = selectors.pending_notice(subject=subject)
    if notice is None:
        raise NotFound("No pending policy notice.")
    subject = selectors.get_subject(external_id=external_id)
    decidable = selectors.decidable_notice_purposes(subject=subject, notice=notice)
    asked = {purpose.key for purpose in decidable}
    unknown = sorted(set(decisions) - asked)
    if unknown:
        raise InvalidValue(f"The notice does not ask about: {', '.join(unknown)}.")
    missing = sorted(asked - set(decisions))
    if missing:
        raise InvalidValue(f"Decisions still needed for: {', '.join(missing)}.")
    for purpose in decidable:
        record_choice(
            external_id=external_id,
            purpose_key=purpose.key,
            granted=decisions[purpose.key],
            source=Source.USER_WEB,
            actor=actor,
            proof=proof,
        )
    notice.resolved_at = timezone.now()
    notice.save(update_fields=["resolved_at"])
    return notice
