"""The rollout engine: policy versions carried to subjects phase by phase.

A Celery beat tick (`consent.tasks.rollout_tick`, every minute) starts the phases
that are due, re-dispatches batches stuck past their timeout and closes finished
phases. Starting a phase makes the version current in its jurisdictions (new subjects
start on it from then on), cuts the subjects already there into keyset ranges of
`ROLLOUT_BATCH_SIZE` ids, stores one `RolloutBatch` per range and sends one task per
batch. A batch is one transaction running `consent.reach.reach` over its range;
its row in the database is the progress, so a worker killed mid-batch loses nothing:
the transaction rolls back, the message is redelivered (acks_late,
reject_on_worker_lost) or the watchdog re-dispatches it, and a batch that already
committed is skipped. Nothing relies on chords: completion is read from the batches.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from consent import reach, services, webhooks
from consent.choices import BatchStatus, RolloutStatus, Source
from consent.errors import Conflict
from consent.models import (
    ConsentEvent,
    ConsentState,
    Jurisdiction,
    PolicyNotice,
    PolicyVersion,
    Rollout,
    RolloutAction,
    RolloutBatch,
    RolloutPhase,
    Subject,
)

logger = logging.getLogger(__name__)

ENGINE = "engine"
OPEN_BATCH = [BatchStatus.PENDING, BatchStatus.RUNNING]
LIVE_ROLLOUT = [RolloutStatus.SCHEDULED, RolloutStatus.RUNNING]


def _log(
    rollout: Rollout, action: str, actor: str, phase: RolloutPhase | None = None, **detail: Any
) -> None:
    RolloutAction.objects.create(
        rollout=rollout, phase=phase, action=action, actor=actor, detail=detail
    )


def _dispatch(batch_ids: list[int]) -> None:
    """Sends the batch tasks once the transaction that created them has committed."""
    if not batch_ids:
        return

    def send() -> None:
        # The batches are committed: a broker that is down must not turn the change
        # into an error. The tick's watchdog sends what was not sent once they are
        # past ROLLOUT_BATCH_TIMEOUT; the first failure ends the loop, so a broker that
        # hangs costs one timeout, not one per batch.
        try:
            for batch_id in batch_ids:
                _send(batch_id)
        except Exception:
            logger.warning(
                "could not enqueue rollout batches; the watchdog will re-send them",
                exc_info=True,
            )

    transaction.on_commit(send)


def _send(batch_id: int) -> None:
    from consent import tasks  # imported here: consent.tasks imports this module

    tasks.run_rollout_batch.delay(batch_id)


def _phase_jurisdiction_ids(phase: RolloutPhase) -> list[int]:
    return list(phase.jurisdictions.order_by("pk").values_list("pk", flat=True))


# --- starting phases ----------------------------------------------------------------------


def _boundaries(jurisdiction_ids: list[int], size: int) -> list[tuple[int, int, int]]:
    """Keyset ranges [lo, hi) of at most `size` subjects, from one scan in id order (no
    OFFSET): every size-th subject starts a range, and the number of the last subject
    (the one without a next) tells how many there are, so the scan streams (a
    `COUNT(*) OVER ()` would hold every row until the last). Runs in the phase's
    transaction, without PostgreSQL's JIT, which compiled for longer than it saved
    (docs/benchmarks.md, ninth pass)."""
    if not jurisdiction_ids:
        return []
    ids = ", ".join(str(int(i)) for i in jurisdiction_ids)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(
            f"""
            SELECT id, rn FROM (
              SELECT id, ROW_NUMBER() OVER w AS rn, LEAD(id) OVER w IS NULL AS last
              FROM consent_subject
              WHERE jurisdiction_id IN ({ids}) AND erased_at IS NULL
              WINDOW w AS (ORDER BY id)
            ) numbered
            WHERE (rn - 1) %% %s = 0 OR last
            ORDER BY id
            """,  # noqa: S608 (integers from the database)  # nosec # B608
            [size],
        )
        rows = cursor.fetchall()
    if not rows:
        return []
    total = rows[-1][1]  # the last subject's number
    starts = [(lo, rn) for lo, rn in rows if (rn - 1) % size == 0]
    ranges = []
    for index, (lo, rn) in enumerate(starts):
        if index + 1 < len(starts):
            ranges.append((lo, starts[index + 1][0], size))
        else:
            ranges.append((lo, reach.MAX_ID, total - rn + 1))
    return ranges


@transaction.atomic
def start_phase(*, phase_id: int, actor: str) -> RolloutPhase:
    """Starts one phase now: version current in its jurisdictions, batches stored
    and dispatched. Only a scheduled phase of a live rollout can start."""
    phase = (
        RolloutPhase.objects.select_for_update(of=("self",))
        .select_related("rollout__version")
        .get(pk=phase_id)
    )
    rollout = Rollout.objects.select_for_update().get(pk=phase.rollout_id)
    if phase.status != RolloutStatus.SCHEDULED:
        raise Conflict(f"Phase {phase.position} is {phase.status}, not scheduled.")
    if rollout.status not in (*LIVE_ROLLOUT, RolloutStatus.DRAFT):
        raise Conflict(f"The rollout is {rollout.status}.")
    version = rollout.version
    jurisdiction_ids = _phase_jurisdiction_ids(phase)
    before = dict(
        Jurisdiction.objects.filter(pk__in=jurisdiction_ids).values_list(
            "pk", "current_policy_version_id"
        )
    )
    blocking = _earlier_version_phases(phase, jurisdiction_ids, timezone.now())
    if blocking:
        raise Conflict(
            f"Phase {blocking[0].position} of {blocking[0].rollout.version.label} still has to "
            "reach some of these jurisdictions; versions are carried in order."
        )
    Jurisdiction.objects.filter(
        pk__in=jurisdiction_ids, current_policy_version__label__lt=version.label
    ).update(current_policy_version=version)
    now = timezone.now()
    services.mark_published(version, now)
    ranges = _boundaries(jurisdiction_ids, settings.ROLLOUT_BATCH_SIZE)
    batches = RolloutBatch.objects.bulk_create(
        [
            RolloutBatch(phase=phase, lo_id=lo, hi_id=hi, size=count, dispatched_at=now)
            for lo, hi, count in ranges
        ]
    )
    phase.status = RolloutStatus.RUNNING
    phase.started_at = now
    phase.total = sum(b.size for b in batches)
    phase.processed = phase.failed = 0
    phase.save(update_fields=["status", "started_at", "total", "processed", "failed"])
    rollout.status = RolloutStatus.RUNNING
    rollout.save(update_fields=["status"])
    _log(
        rollout,
        "phase_started",
        actor,
        phase,
        batches=len(batches),
        subjects=phase.total,
        previous_versions={str(k): v for k, v in before.items()},
    )
    _dispatch([b.pk for b in batches])
    if not batches:
        transaction.on_commit(lambda: finish_phase(phase_id=phase.pk))
    return phase


def _earlier_version_phases(
    phase: RolloutPhase, jurisdiction_ids: list[int], now: datetime
) -> list[RolloutPhase]:
    """Phases of an earlier version over the same jurisdictions that are running,
    paused or due: a later version waits for them, so versions arrive in order."""
    return list(
        RolloutPhase.objects.filter(
            Q(status__in=[RolloutStatus.RUNNING, RolloutStatus.PAUSED])
            | Q(status=RolloutStatus.SCHEDULED, starts_at__lte=now),
            rollout__version__label__lt=phase.rollout.version.label,
            rollout__status__in=[*LIVE_ROLLOUT, RolloutStatus.PAUSED],
            jurisdictions__in=jurisdiction_ids,
        )
        .select_related("rollout__version")
        .distinct()[:1]
    )


def start_now(*, rollout: Rollout, actor: str) -> RolloutPhase:
    """Staff's "start now": the next phase that has not started, whatever its date."""
    phase = rollout.phases.filter(status=RolloutStatus.SCHEDULED).order_by("position").first()
    if phase is None:
        raise Conflict("Every phase of this rollout has already started.")
    return start_phase(phase_id=phase.pk, actor=actor)


# --- batches --------------------------------------------------------------------------------


def run_batch(*, batch_id: int) -> str:
    """Processes one batch in one transaction; a second run of a finished batch, or a
    run while the phase is paused or cancelled, changes nothing."""
    try:
        with transaction.atomic():
            batch = (
                RolloutBatch.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("phase__rollout__version")
                .filter(pk=batch_id)
                .first()
            )
            if batch is None:
                return "busy"  # another worker holds it, or it no longer exists
            if batch.status not in OPEN_BATCH:
                return batch.status
            phase = batch.phase
            if phase.status != RolloutStatus.RUNNING:
                return f"phase {phase.status}"
            now = timezone.now()
            result = reach.reach(
                version=phase.rollout.version,
                jurisdiction_ids=_phase_jurisdiction_ids(phase),
                lo=batch.lo_id,
                hi=batch.hi_id,
                now=now,
                actor_id=f"rollout:{phase.rollout_id}:{phase.position}",
                phase_id=phase.pk,
            )
            batch.status = BatchStatus.DONE
            batch.processed = batch.size
            batch.attempts += 1
            batch.started_at = batch.started_at or now
            batch.finished_at = timezone.now()
            batch.error = ""
            batch.save()
            logger.info(
                "rollout batch %s: %s subjects reached, %s events",
                batch.pk,
                result.subjects,
                result.events,
            )
    except Exception as exc:
        _record_failure(batch_id, exc)
        raise
    RolloutPhase.objects.filter(pk=batch.phase_id).update(processed=_done(batch.phase_id))
    finish_phase(phase_id=batch.phase_id)
    return BatchStatus.DONE


def _done(phase_id: int) -> int:
    return (
        RolloutBatch.objects.filter(phase_id=phase_id, status=BatchStatus.DONE).aggregate(
            n=Sum("processed")
        )["n"]
        or 0
    )


def _record_failure(batch_id: int, exc: Exception) -> None:
    with transaction.atomic():
        batch = RolloutBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status not in OPEN_BATCH:
            return
        batch.attempts += 1
        batch.error = f"{type(exc).__name__}: {exc}"[:2000]
        if batch.attempts >= settings.ROLLOUT_BATCH_MAX_ATTEMPTS:
            batch.status = BatchStatus.FAILED
            batch.finished_at = timezone.now()
        batch.save()
    if batch.status == BatchStatus.FAILED:
        failed = RolloutBatch.objects.filter(
            phase_id=batch.phase_id, status=BatchStatus.FAILED
        ).aggregate(n=Sum("size"))["n"]
        RolloutPhase.objects.filter(pk=batch.phase_id).update(failed=failed or 0)
        finish_phase(phase_id=batch.phase_id)


@transaction.atomic
def finish_phase(*, phase_id: int) -> bool:
    """Closes a running phase whose batches are all settled, then the rollout when
    every phase is. Safe to call any number of times."""
    phase = RolloutPhase.objects.select_for_update().get(pk=phase_id)
    if phase.status != RolloutStatus.RUNNING:
        return False
    counts = phase.batches.aggregate(
        open=Count("pk", filter=Q(status__in=OPEN_BATCH)),
        failed=Count("pk", filter=Q(status=BatchStatus.FAILED)),
        failed_subjects=Sum("size", filter=Q(status=BatchStatus.FAILED)),
    )
    if counts["open"]:
        return False
    phase.status = RolloutStatus.FAILED if counts["failed"] else RolloutStatus.COMPLETED
    phase.completed_at = timezone.now()
    phase.processed = _done(phase.pk)
    phase.failed = counts["failed_subjects"] or 0
    phase.save(update_fields=["status", "completed_at", "processed", "failed"])
    rollout = Rollout.objects.select_for_update().get(pk=phase.rollout_id)
    _log(rollout, f"phase_{phase.status}", ENGINE, phase, processed=phase.processed)
    statuses = set(rollout.phases.values_list("status", flat=True))
    if rollout.status == RolloutStatus.RUNNING and not statuses & {
        RolloutStatus.SCHEDULED,
        RolloutStatus.RUNNING,
        RolloutStatus.PAUSED,
    }:
        rollout.status = (
            RolloutStatus.FAILED if RolloutStatus.FAILED in statuses else RolloutStatus.COMPLETED
        )
        rollout.save(update_fields=["status"])
        _log(rollout, rollout.status, ENGINE)
    # A later version may have been waiting for this phase.
    transaction.on_commit(start_due)
    return True


# --- the tick ------------------------------------------------------------------------------


def due_phases(now: datetime) -> QuerySet[RolloutPhase]:
    return RolloutPhase.objects.filter(
        status=RolloutStatus.SCHEDULED,
        starts_at__lte=now,
        rollout__status__in=LIVE_ROLLOUT,
    ).order_by("starts_at", "rollout__version__label", "position")


def start_due(*, now: datetime | None = None) -> int:
    """Starts every due phase that is not waiting for an earlier version's phase."""
    now = now or timezone.now()
    started = 0
    for phase_id in list(due_phases(now).values_list("pk", flat=True)):
        try:
            start_phase(phase_id=phase_id, actor=ENGINE)
            started += 1
        except Conflict:
            continue  # waiting for an earlier version, or another tick got there first
    return started


def tick(*, now: datetime | None = None) -> dict[str, int]:
    """Starts due phases, re-dispatches stuck batches, closes finished phases."""
    now = now or timezone.now()
    started = start_due(now=now)
    stuck = list(
        RolloutBatch.objects.filter(
            status__in=OPEN_BATCH,
            phase__status=RolloutStatus.RUNNING,
            dispatched_at__lt=now - settings.ROLLOUT_BATCH_TIMEOUT,
        ).values_list("pk", flat=True)
    )
    if stuck:
        RolloutBatch.objects.filter(pk__in=stuck).update(dispatched_at=now)
        for batch_id in stuck:
            _send(batch_id)
    closed = 0
    for phase_id in RolloutPhase.objects.filter(status=RolloutStatus.RUNNING).values_list(
        "pk", flat=True
    ):
        closed += finish_phase(phase_id=phase_id)
    return {"started": started, "redispatched": len(stuck), "closed": closed}


# --- staff controls ------------------------------------------------------------------------


@transaction.atomic
def pause(*, rollout: Rollout, actor: str) -> None:
    """Stops handing out batches; a batch already in its transaction finishes."""
    rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
    if rollout.status not in LIVE_ROLLOUT:
        raise Conflict(f"A {rollout.status} rollout cannot be paused.")
    rollout.status = RolloutStatus.PAUSED
    rollout.save(update_fields=["status"])
    rollout.phases.filter(status=RolloutStatus.RUNNING).update(status=RolloutStatus.PAUSED)
    _log(rollout, "pause", actor)


@transaction.atomic
def resume(*, rollout: Rollout, actor: str) -> None:
    """Continues where the rollout stopped: the remaining batches are dispatched."""
    rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
    if rollout.status != RolloutStatus.PAUSED:
        raise Conflict(f"A {rollout.status} rollout cannot be resumed.")
    paused = list(rollout.phases.filter(status=RolloutStatus.PAUSED))
    rollout.status = RolloutStatus.RUNNING if paused else RolloutStatus.SCHEDULED
    rollout.save(update_fields=["status"])
    now = timezone.now()
    ids: list[int] = []
    for phase in paused:
        phase.status = RolloutStatus.RUNNING
        phase.save(update_fields=["status"])
        open_batches = phase.batches.filter(status__in=OPEN_BATCH)
        ids += list(open_batches.values_list("pk", flat=True))
        open_batches.update(dispatched_at=now)
        transaction.on_commit(partial(finish_phase, phase_id=phase.pk))
    _log(rollout, "resume", actor, batches=len(ids))
    _dispatch(ids)


@transaction.atomic
def cancel(*, rollout: Rollout, actor: str) -> None:
    """Stops the rollout for good; subjects already reached stay on the version."""
    rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
    if rollout.status not in (*LIVE_ROLLOUT, RolloutStatus.PAUSED, RolloutStatus.DRAFT):
        raise Conflict(f"A {rollout.status} rollout cannot be cancelled.")
    rollout.status = RolloutStatus.CANCELLED
    rollout.save(update_fields=["status"])
    open_phases = rollout.phases.filter(
        status__in=[RolloutStatus.SCHEDULED, RolloutStatus.RUNNING, RolloutStatus.PAUSED]
    )
    RolloutBatch.objects.filter(phase__in=open_phases, status__in=OPEN_BATCH).update(
        status=BatchStatus.CANCELLED
    )
    open_phases.update(status=RolloutStatus.CANCELLED, completed_at=timezone.now())
    _log(rollout, "cancel", actor)


def dry_run(*, rollout: Rollout, actor: str) -> dict[str, Any]:
    """What the rollout would do now, changing nothing: subjects not yet on the version
    per phase and jurisdiction, and the defaults it would grant, refuse or keep."""
    version = rollout.version
    phases = []
    all_ids: list[int] = []
    for phase in rollout.phases.order_by("position"):
        ids = _phase_jurisdiction_ids(phase)
        all_ids += ids
        per_jurisdiction = (
            Subject.objects.filter(
                jurisdiction_id__in=ids,
                erased_at__isnull=True,
                policy_version__label__lt=version.label,
            )
            .values("jurisdiction__code")
            .annotate(n=Count("pk"))
            .order_by("jurisdiction__code")
        )
        counts = [{"code": r["jurisdiction__code"], "subjects": r["n"]} for r in per_jurisdiction]
        phases.append(
            {
                "position": phase.position,
                "status": phase.status,
                "jurisdictions": counts,
                "subjects": sum(c["subjects"] for c in counts),
            }
        )
    now = timezone.now()
    with transaction.atomic():
        changes = reach.preview(version=version, jurisdiction_ids=all_ids, year=now.year)
    result = {"computed_at": now.isoformat(), "phases": phases, "changes": changes}
    Rollout.objects.filter(pk=rollout.pk).update(dry_run=result, dry_run_at=now)
    rollout.dry_run, rollout.dry_run_at = result, now
    _log(rollout, "dry_run", actor, subjects=sum(p["subjects"] for p in phases))
    return result


@transaction.atomic
def rollback_phase(*, phase: RolloutPhase, actor: str) -> dict[str, int]:
    """Undoes a phase. Its subjects return to the version each came from (kept on
    their notice) and its jurisdictions to the version they had before the phase
    started; the phase's `rollout_default` decisions that the subject has not changed
    since go back to their earlier value, each with a new event; unresolved notices of
    the version are withdrawn. Explicit choices made meanwhile are kept."""
    phase = (
        RolloutPhase.objects.select_for_update(of=("self",))
        .select_related("rollout__version")
        .get(pk=phase.pk)
    )
    if phase.status in (RolloutStatus.SCHEDULED, RolloutStatus.ROLLED_BACK):
        raise Conflict(f"A {phase.status} phase cannot be rolled back.")
    version = phase.rollout.version
    jurisdiction_ids = _phase_jurisdiction_ids(phase)
    started = (
        phase.actions.filter(action="phase_started")
        .order_by("-at")
        .values_list("detail", flat=True)
        .first()
    )
    recorded: dict[str, int] = (started or {}).get("previous_versions") or {}
    jurisdiction_before = {int(k): v for k, v in recorded.items()}
    fallback = PolicyVersion.objects.filter(label__lt=version.label).order_by("-label").first()
    if fallback is None:
        raise Conflict("There is no earlier policy version to return to.")
    RolloutBatch.objects.filter(phase=phase, status__in=OPEN_BATCH).update(
        status=BatchStatus.CANCELLED
    )
    now = timezone.now()
    on_version = Subject.objects.filter(
        jurisdiction_id__in=jurisdiction_ids, policy_version=version
    )
    notices = PolicyNotice.objects.filter(
        version=version, subject__in=on_version, previous_version__isnull=False
    )
    moved = 0
    for previous_id, subject_ids in _group_by_previous(notices):
        moved += Subject.objects.filter(pk__in=subject_ids, policy_version=version).update(
            policy_version_id=previous_id, updated_at=now
        )
    for jurisdiction_id in jurisdiction_ids:
        # Subjects who registered on the version after the phase started.
        moved += on_version.filter(jurisdiction_id=jurisdiction_id).update(
            policy_version_id=jurisdiction_before.get(jurisdiction_id, fallback.pk),
            updated_at=now,
        )
        Jurisdiction.objects.filter(pk=jurisdiction_id, current_policy_version=version).update(
            current_policy_version_id=jurisdiction_before.get(jurisdiction_id, fallback.pk)
        )
    _, deleted = PolicyNotice.objects.filter(
        version=version, subject__jurisdiction_id__in=jurisdiction_ids, resolved_at__isnull=True
    ).delete()
    withdrawn = deleted.get(PolicyNotice._meta.label, 0)

    unchanged = ConsentState.objects.filter(
        event__rollout_phase=phase, event__source=Source.ROLLOUT_DEFAULT
    ).select_related("event", "subject")
    events = []
    for state in unchanged.iterator():
        before = (
            ConsentEvent.objects.filter(
                subject_id=state.subject_id, purpose_id=state.purpose_id, id__lt=state.event_id
            )
            .order_by("-id")
            .values_list("granted", flat=True)
            .first()
        )
        event = ConsentEvent.objects.create(
            subject_id=state.subject_id,
            purpose_id=state.purpose_id,
            granted=bool(before),
            source=Source.ROLLOUT_DEFAULT,
            policy_version_id=state.subject.policy_version_id,
            jurisdiction_id=state.event.jurisdiction_id,
            actor_type="staff" if actor.startswith("staff:") else "system",
            actor_id=actor,
            occurred_at=now,
            reason=f"Rollback of phase {phase.position} of {version.label}",
        )
        ConsentState.objects.filter(pk=state.pk).update(
            granted=event.granted,
            source=event.source,
            policy_version_id=event.policy_version_id,
            event=event,
            updated_at=now,
        )
        events.append(event)
    webhooks.enqueue_consent_changes(events=events)
    phase.status = RolloutStatus.ROLLED_BACK
    phase.completed_at = now
    phase.save(update_fields=["status", "completed_at"])
    summary = {"reverted": len(events), "subjects": moved, "notices_withdrawn": withdrawn}
    _log(phase.rollout, "rollback", actor, phase, **summary)
    return summary


def _group_by_previous(notices: QuerySet[PolicyNotice]) -> list[tuple[int, list[int]]]:
    groups: dict[int, list[int]] = {}
    for subject_id, previous_id in notices.values_list("subject_id", "previous_version_id"):
        groups.setdefault(previous_id, []).append(subject_id)
    return list(groups.items())
