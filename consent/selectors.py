"""Reads worth naming: consent checks, a subject's consents, receipts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from config import sql
from consent import rules
from consent.auth import hash_token
from consent.choices import EXPLICIT_SOURCES, DenialReason, Mechanism
from consent.errors import LinkExpired, LinkUsed, NotFound
from consent.models import (
    ConsentEvent,
    ConsentState,
    DashboardLink,
    Jurisdiction,
    JurisdictionRule,
    MetadataCategory,
    PolicyNotice,
    PolicyVersion,
    Purpose,
    Subject,
)

MAX_BULK_CHECK = 1000


class CheckResult(NamedTuple):
    """One subject's answer. A named tuple: a bulk check makes a thousand of them, and
    a frozen dataclass costs twice as much to build."""

    subject: str
    allowed: bool
    reason: DenialReason | None


def age_rules(jurisdiction: Jurisdiction) -> rules.AgeRules:
    return rules.AgeRules(
        consent_age=jurisdiction.consent_age,
        opt_in_below_age=jurisdiction.opt_in_below_age,
        minor_age=jurisdiction.minor_age,
        profiling_ads_to_minors_banned=jurisdiction.profiling_ads_to_minors_banned,
    )


def purpose_flags(purpose: Purpose) -> rules.PurposeFlags:
    return rules.PurposeFlags(
        essential=purpose.essential, gpc_applies=purpose.gpc_applies, profiling=purpose.profiling
    )


def today() -> date:
    return timezone.now().date()


def get_purpose(*, key: str) -> Purpose:
    purpose = Purpose.objects.select_related("introduced_in").filter(key=key).first()
    if purpose is None:
        raise NotFound(f"No purpose '{key}'.", field="purpose")
    return purpose


def get_subject(*, external_id: str) -> Subject:
    subject = (
        Subject.objects.select_related("jurisdiction", "policy_version")
        .filter(external_id=external_id, erased_at__isnull=True)
        .first()
    )
    if subject is None:
        raise NotFound(f"No subject '{external_id}'.")
    return subject


# The consent check is on the path of every ad and every data use: one hand-written
# query per call, for one or several purposes, that also reads the purposes themselves
# (no separate lookup). Left joins keep a purpose that matches no subject, so an
# unknown purpose (no row at all) can be told from unknown subjects.
_CHECK_SQL = """
SELECT p.key, p.essential, p.gpc_applies, p.profiling, v.label,
       s.external_id, s.birth_year, sv.label, j.consent_age, j.opt_in_below_age,
       j.minor_age, j.profiling_ads_to_minors_banned, r.mechanism, st.granted, st.source,
       s.id, s.country, s.language
FROM {purpose} p
JOIN {version} v ON v.id = p.introduced_in_id
LEFT JOIN {subject} s ON {subjects} AND s.erased_at IS NULL
LEFT JOIN {version} sv ON sv.id = s.policy_version_id
LEFT JOIN {jurisdiction} j ON j.id = s.jurisdiction_id
LEFT JOIN {rule} r ON r.jurisdiction_id = s.jurisdiction_id AND r.purpose_id = p.id
LEFT JOIN {state} st ON st.subject_id = s.id AND st.purpose_id = p.id
WHERE {purposes}
"""


@dataclass(frozen=True)
class PurposeCheck:
    """The answers for one purpose, with the label of the version that introduced it."""

    introduced_in: str
    results: list[CheckResult]


@dataclass(frozen=True)
class CheckedSubject:
    """A subject as the check's query read it: enough to act on the answer (the ad
    decision does) without loading the subject again."""

    pk: int
    external_id: str
    country: str
    language: str
    birth_year: int | None
    policy_version: str


def _check(
    *,
    match: str,
    purposes: Sequence[int | str],
    external_ids: Sequence[str],
    keys: Sequence[int] | None = None,
) -> dict[str, PurposeCheck]:
    """Purpose key -> one result per id asked (in order), for the purposes found. With
    `keys`, the subjects' primary keys, they are found by those instead."""
    statement = _check_statement(match, purposes, external_ids, keys=keys)
    [rows] = sql.fetch_together([statement])
    return _check_answers(rows, external_ids, with_subjects=False)[0]


def _check_statement(
    match: str,
    purposes: Sequence[int | str],
    external_ids: Sequence[str],
    *,
    keys: Sequence[int] | None = None,
) -> sql.Statement:
    if len(external_ids) > MAX_BULK_CHECK:
        raise ValueError(f"at most {MAX_BULK_CHECK} subjects per check")
    if keys is None:
        subjects_sql, subjects_params = sql.any_of(
            "s.external_id", list(dict.fromkeys(external_ids))
        )
    else:
        subjects_sql, subjects_params = sql.any_of("s.id", sorted(set(keys)))
    purposes_sql, purposes_params = sql.any_of(f"p.{match}", purposes)
    query = _CHECK_SQL.format(
        purpose=Purpose._meta.db_table,
        version=PolicyVersion._meta.db_table,
        subject=Subject._meta.db_table,
        jurisdiction=Jurisdiction._meta.db_table,
        rule=JurisdictionRule._meta.db_table,
        state=ConsentState._meta.db_table,
        subjects=subjects_sql,
        purposes=purposes_sql,
    )
    return query, [*subjects_params, *purposes_params]


@lru_cache(maxsize=65536)
def _reason(
    introduced: str,
    version_label: str,
    mechanism: str | None,
    age: int | None,
    consent_age: int,
    opt_in_below_age: int | None,
    minor_age: int,
    banned: object,
    essential: object,
    gpc_applies: object,
    profiling: object,
    granted: object,
    source: str | None,
) -> DenialReason | None:
    """`rules.check` of one row of the check's query. Remembered: the answer depends
    only on these values, of which a population has few combinations (a thousand
    subjects share a few dozen), never on who the subject is. The flags come as the
    database gives them (booleans, or 0 and 1 on SQLite, which are the same keys) and
    are made booleans only when an answer is worked out."""
    return rules.check(
        live=rules.is_live(
            introduced_label=introduced, subject_version_label=version_label, mechanism=mechanism
        ),
        mechanism=mechanism,
        blocked_by_age=rules.age_blocked(
            age=age,
            rules=rules.AgeRules(consent_age, opt_in_below_age, minor_age, bool(banned)),
            purpose=rules.PurposeFlags(
                essential=bool(essential), gpc_applies=bool(gpc_applies), profiling=bool(profiling)
            ),
        ),
        state_granted=None if granted is None else bool(granted),
        state_source=source,
    )


def _check_answers(
    rows: Sequence[tuple[Any, ...]], external_ids: Sequence[str], *, with_subjects: bool = True
) -> tuple[dict[str, PurposeCheck], dict[str, CheckedSubject]]:
    """The answers of the check's rows, per purpose, and the subjects they name (only
    when asked for: a bulk check has no use for them)."""
    on = today()
    ages: dict[int | None, int | None] = {}  # by birth year: a few dozen a thousand rows
    answers: dict[str, dict[str, CheckResult]] = {}
    introduced_in: dict[str, str] = {}
    subjects: dict[str, CheckedSubject] = {}
    for (
        key,
        essential,
        gpc_applies,
        profiling,
        introduced,
        external_id,
        birth_year,
        version_label,
        consent_age,
        opt_in_below_age,
        minor_age,
        banned,
        mechanism,
        granted,
        source,
        subject_pk,
        country,
        language,
    ) in rows:
        found = answers.get(key)
        if found is None:
            found = answers[key] = {}
            introduced_in[key] = introduced
        if external_id is None:
            continue
        if with_subjects and external_id not in subjects:
            subjects[external_id] = CheckedSubject(
                subject_pk, external_id, country, language, birth_year, version_label
            )
        try:
            age = ages[birth_year]
        except KeyError:
            age = ages[birth_year] = rules.lowest_age(birth_year, on)
        reason = _reason(
            introduced,
            version_label,
            mechanism,
            age,
            consent_age,
            opt_in_below_age,
            minor_age,
            banned,
            essential,
            gpc_applies,
            profiling,
            granted,
            source,
        )
        found[external_id] = CheckResult(external_id, reason is None, reason)
    unknown = DenialReason.UNKNOWN_SUBJECT
    checks = {
        key: PurposeCheck(
            introduced_in[key],
            [found.get(i) or CheckResult(i, False, unknown) for i in external_ids],
        )
        for key, found in answers.items()
    }
    return checks, subjects


def check_consent(*, purpose: Purpose, external_ids: Sequence[str]) -> list[CheckResult]:
    """allowed(subject, purpose) for up to 1,000 subjects in a single query.

    Results come back in the order asked, one per id (duplicates answered twice);
    an unknown or erased subject is never allowed.
    """
    return _purpose_results(purpose, external_ids, keys=None)


def check_consent_of_locked(*, purpose: Purpose, subjects: Mapping[str, int]) -> list[CheckResult]:
    """`check_consent` for subjects given as external id -> primary key, which the
    caller holds locked in its transaction (so each key still names that external id:
    erasure, the one change of an external id, waits for the lock). They are found by
    primary key, an index about half the size of the external ids' with integer
    comparisons: for a thousand subjects about a fifth less of the database's time.
    Results come back in the order of `subjects`."""
    return _purpose_results(purpose, list(subjects), keys=list(subjects.values()))


def _purpose_results(
    purpose: Purpose, external_ids: Sequence[str], *, keys: Sequence[int] | None
) -> list[CheckResult]:
    answers = _check(match="id", purposes=[purpose.pk], external_ids=external_ids, keys=keys)
    if purpose.key not in answers:  # deleted since it was read
        return [CheckResult(i, False, DenialReason.UNKNOWN_SUBJECT) for i in external_ids]
    return answers[purpose.key].results


def check_consent_by_key(*, purpose_key: str, external_ids: Sequence[str]) -> list[CheckResult]:
    """`check_consent` for a purpose named by its key, in the same single query (the
    API's hot path: no separate purpose lookup). Raises `NotFound` for an unknown key."""
    answers = _check(match="key", purposes=[purpose_key], external_ids=external_ids)
    if purpose_key not in answers:
        raise NotFound(f"No purpose '{purpose_key}'.", field="purpose")
    return answers[purpose_key].results


def check_purposes(*, external_id: str, purpose_keys: Sequence[str]) -> dict[str, PurposeCheck]:
    """The check of several purposes (by key) for one subject, in one query; a key that
    names no purpose is missing from the answer (and so allows nothing)."""
    return subject_checks(external_id=external_id, purpose_keys=purpose_keys)[1]


def subject_checks(
    *, external_id: str, purpose_keys: Sequence[str]
) -> tuple[CheckedSubject | None, dict[str, PurposeCheck]]:
    """`check_purposes`, with the subject as the same query read it (None when it is
    unknown or erased, or when no purpose was found to join it to)."""
    checked, checks, _ = subject_checks_with(
        external_id=external_id, purpose_keys=purpose_keys, alongside=None
    )
    return checked, checks


def subject_checks_with(
    *, external_id: str, purpose_keys: Sequence[str], alongside: sql.Statement | None
) -> tuple[CheckedSubject | None, dict[str, PurposeCheck], list[tuple[Any, ...]]]:
    """`subject_checks`, and the rows of another read sent in the same round trip (the
    ad decision's eligible campaigns); it must not depend on the check's answer."""
    statements = (
        [_check_statement("key", list(purpose_keys), [external_id])] if purpose_keys else []
    )
    if alongside is not None:
        statements.append(alongside)
    results = sql.fetch_together(statements)
    other = results.pop() if alongside is not None else []
    if not purpose_keys:
        return None, {}, other
    checks, subjects = _check_answers(results[0], [external_id])
    return subjects.get(external_id), checks, other


@dataclass(frozen=True)
class ConsentView:
    """A subject's current decision on one purpose, with what the check says of it."""

    purpose: Purpose
    granted: bool
    allowed: bool
    reason: DenialReason | None
    source: str
    explicit: bool
    policy_version: str
    updated_at: datetime
    locked: str | None


def subject_consents(*, subject: Subject) -> list[ConsentView]:
    """Every purpose with a decision for the subject, in display order."""
    states = (
        ConsentState.objects.filter(subject=subject)
        .select_related("purpose__introduced_in", "policy_version")
        .order_by("purpose__display_order", "purpose__key")
    )
    mechanisms = dict(
        JurisdictionRule.objects.filter(jurisdiction_id=subject.jurisdiction_id).values_list(
            "purpose_id", "mechanism"
        )
    )
    age = rules.lowest_age(subject.birth_year, today())
    age_rule_set = age_rules(subject.jurisdiction)
    views = []
    for state in states:
        mechanism = mechanisms.get(state.purpose_id)
        flags = purpose_flags(state.purpose)
        live = rules.is_live(
            introduced_label=state.purpose.introduced_in.label,
            subject_version_label=subject.policy_version.label,
            mechanism=mechanism,
        )
        blocked = rules.age_blocked(age=age, rules=age_rule_set, purpose=flags)
        reason = rules.check(
            live=live,
            mechanism=mechanism,
            blocked_by_age=blocked,
            state_granted=state.granted,
            state_source=state.source,
        )
        locked = None
        if mechanism == Mechanism.ALWAYS_ON:
            locked = "essential"
        elif not live:
            locked = "not_live"
        elif blocked:
            locked = "age_restricted"
        views.append(
            ConsentView(
                purpose=state.purpose,
                granted=state.granted,
                allowed=reason is None,
                reason=reason,
                source=state.source,
                explicit=state.source in EXPLICIT_SOURCES,
                policy_version=state.policy_version.label,
                updated_at=state.updated_at,
                locked=locked,
            )
        )
    return views


def pending_notice(*, subject: Subject) -> PolicyNotice | None:
    return (
        PolicyNotice.objects.filter(subject=subject, resolved_at__isnull=True)
        .select_related("version")
        .prefetch_related("decision_purposes")
        .order_by("-version__label")
        .first()
    )


def subject_events(*, subject: Subject) -> QuerySet[ConsentEvent]:
    """The subject's history, newest first."""
    return (
        ConsentEvent.objects.filter(subject=subject)
        .select_related("purpose", "policy_version", "jurisdiction", "notice_version")
        .order_by("-id")
    )


def get_event(*, subject: Subject, event_id: int) -> ConsentEvent:
    event = subject_events(subject=subject).filter(pk=event_id).first()
    if event is None:
        raise NotFound(f"No event {event_id} for this subject.")
    return event


RECEIPT_NAMESPACE = uuid.UUID("6f1e9a52-3c1d-4d0f-9b1e-7a4f0c2d8e11")


def consent_receipt(*, event: ConsentEvent) -> dict[str, object]:
    """A consent receipt for one event, with the fields of the Kantara Initiative
    Consent Receipt Specification v1.1, plus Parley's own decision details."""
    purpose = event.purpose
    categories = list(purpose.categories.values_list("key", flat=True))
    explicit = event.source in EXPLICIT_SOURCES
    controller = settings.CONSENT_RECEIPT_CONTROLLER
    return {
        "version": "KI-CR-v1.1.0",
        "jurisdiction": event.jurisdiction.code,
        "consentTimestamp": int(event.occurred_at.timestamp()),
        "collectionMethod": event.get_source_display(),
        "consentReceiptID": str(uuid.uuid5(RECEIPT_NAMESPACE, f"event:{event.pk}")),
        "publicKey": None,
        "language": event.language or event.subject.language,
        "piiPrincipalId": event.subject.external_id,
        "piiControllers": [controller],
        "policyUrl": settings.POLICY_URL_TEMPLATE.format(label=event.policy_version.label),
        "services": [
            {
                "service": purpose.name,
                "purposes": [
                    {
                        "purpose": purpose.description,
                        "purposeCategory": [purpose.key],
                        "consentType": "EXPLICIT" if explicit else "IMPLICIT",
                        "piiCategory": categories,
                        "primaryPurpose": purpose.essential,
                        "termination": "Until withdrawn on the privacy dashboard or in the app",
                        "thirdPartyDisclosure": purpose.gpc_applies,
                    }
                ],
            }
        ],
        "sensitive": False,
        "spiCat": [],
        "parley": {
            "eventId": event.pk,
            "purpose": purpose.key,
            "granted": event.granted,
            "source": event.source,
            "policyVersion": event.policy_version.label,
            "noticeVersion": event.notice_version.label if event.notice_version else None,
            "actor": {"type": event.actor_type, "id": event.actor_id},
            "ipTruncated": event.ip_truncated,
            "userAgent": event.user_agent,
            "occurredAt": event.occurred_at.isoformat(),
        },
    }


# --- the privacy dashboard ---------------------------------------------------------------


def dashboard_link(*, raw_token: str, now: datetime, for_update: bool = False) -> DashboardLink:
    """The sign-in link a raw token names, if it can still sign in.

    Raises `NotFound` (never issued, tampered with, purged, or of an erased subject),
    `LinkUsed` or `LinkExpired`."""
    if not raw_token or len(raw_token) > 128:
        raise NotFound("No such sign-in link.")
    links = DashboardLink.objects.select_related("subject").filter(
        token_hash=hash_token(raw_token), subject__erased_at__isnull=True
    )
    if for_update:
        links = links.select_for_update(of=("self",))
    link = links.first()
    if link is None:
        raise NotFound("No such sign-in link.")
    if link.used_at is not None:
        raise LinkUsed("This sign-in link has already been used.")
    if link.expires_at <= now:
        raise LinkExpired("This sign-in link has expired.")
    return link


def dashboard_subject(*, subject_id: int) -> Subject | None:
    """The subject a dashboard session belongs to, unless they have been erased since."""
    return (
        Subject.objects.select_related("jurisdiction", "policy_version")
        .filter(pk=subject_id, erased_at__isnull=True)
        .first()
    )


@dataclass(frozen=True)
class PurposeCard:
    """One purpose as the dashboard shows it: the decision and the metadata it uses."""

    consent: ConsentView
    categories: list[MetadataCategory]


def dashboard_purposes(*, subject: Subject) -> list[PurposeCard]:
    """Every purpose with a decision for the subject, with its metadata categories."""
    consents = subject_consents(subject=subject)
    links = Purpose.categories.through.objects.filter(
        purpose_id__in=[c.purpose.pk for c in consents]
    ).select_related("metadatacategory")
    by_purpose: dict[int, list[MetadataCategory]] = {}
    for link in links.order_by("metadatacategory__key"):
        by_purpose.setdefault(link.purpose_id, []).append(link.metadatacategory)
    return [PurposeCard(c, by_purpose.get(c.purpose.pk, [])) for c in consents]


def decidable_notice_purposes(*, subject: Subject, notice: PolicyNotice) -> list[Purpose]:
    """The purposes a notice asks about that the subject can decide now."""
    open_keys = {
        view.purpose.key for view in subject_consents(subject=subject) if view.locked is None
    }
    return [p for p in notice.decision_purposes.all() if p.key in open_keys]


# Other apps' data about a subject, added to the subject's data export. `consent`
# imports no other app: they register here when Django starts (their AppConfig.ready).
ExportContributor = Callable[[Subject], dict[str, Any]]
_export_contributors: dict[str, ExportContributor] = {}


def register_export_contributor(name: str, contributor: ExportContributor) -> None:
    """`contributor(subject)` returns what app `name` holds about the subject; it
    appears under `name` in the subject's export."""
    _export_contributors[name] = contributor


def subject_export(*, subject: Subject) -> dict[str, Any]:
    """Everything Parley holds about a subject, for the subject to download."""
    events = list(subject_events(subject=subject).order_by("id"))
    notices = (
        PolicyNotice.objects.filter(subject=subject)
        .select_related("version", "previous_version")
        .prefetch_related("decision_purposes")
        .order_by("created_at", "id")
    )
    data: dict[str, Any] = {
        "format": "parley-subject-export/1",
        "subject": {
            "external_id": subject.external_id,
            "country": subject.country,
            "subdivision": subject.subdivision,
            "language": subject.language,
            "birth_year": subject.birth_year,
            "jurisdiction": subject.jurisdiction.code,
            "policy_version": subject.policy_version.label,
            "gpc_signalled_at": subject.gpc_signalled_at,
            "created_at": subject.created_at,
            "updated_at": subject.updated_at,
        },
        "consents": [
            {
                "purpose": view.purpose.key,
                "granted": view.granted,
                "allowed": view.allowed,
                "reason": view.reason,
                "source": view.source,
                "policy_version": view.policy_version,
                "updated_at": view.updated_at,
            }
            for view in subject_consents(subject=subject)
        ],
        "consent_events": [
            {
                "id": event.pk,
                "purpose": event.purpose.key,
                "granted": event.granted,
                "source": event.source,
                "policy_version": event.policy_version.label,
                "jurisdiction": event.jurisdiction.code,
                "actor": {"type": event.actor_type, "id": event.actor_id},
                "occurred_at": event.occurred_at,
                "notice_version": event.notice_version.label if event.notice_version else None,
                "language": event.language,
                "ip_truncated": event.ip_truncated,
                "user_agent": event.user_agent,
                "reason": event.reason,
            }
            for event in events
        ],
        "policy_notices": [
            {
                "version": notice.version.label,
                "title": notice.version.title,
                "requires_decision": notice.requires_decision,
                "decision_purposes": [p.key for p in notice.decision_purposes.all()],
                "created_at": notice.created_at,
                "resolved_at": notice.resolved_at,
            }
            for notice in notices
        ],
    }
    for name, contributor in sorted(_export_contributors.items()):
        data[name] = contributor(subject)
    return data
