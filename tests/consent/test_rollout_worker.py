"""Rollouts through a real Celery worker process, Redis and PostgreSQL (no eager mode).

Each test starts `celery -A config worker` (prefork, two processes) against the test
database and its own Redis database, builds a few thousand subjects in bulk, starts
phase 1 of 2025-06 (US, Brazil, India, the UK; the other phases and 2026-01 are held
back) and watches the database until the phase is settled, calling the beat's tick
as the beat would. Transactional tests empty every table afterwards; the reference
data of the migrations is serialised at setup and restored for the later tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from consent import rollouts, rules, selectors, services
from consent.choices import ActorType, BatchStatus, RolloutStatus, Source
from consent.models import (
    ConsentEvent,
    ConsentState,
    JurisdictionRule,
    PolicyNotice,
    PolicyVersion,
    Purpose,
    RolloutBatch,
    RolloutPhase,
    Subject,
)
from tests.consent.test_rollouts import (
    assert_one_notice_each,
    assert_states_follow_the_rules,
    born,
    only_ads_phase_one,
)
from tests.factories import TEST_ACTOR
from tests.workers import (
    database_params,
    database_url,
    start_worker,
    stop_worker,
    worker_broker_url,
)
from tests.workers import worker_broker as use_worker_broker

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

BASE_DIR = Path(__file__).resolve().parents[2]
WORKER_BROKER = worker_broker_url(7)  # used by no other test
BATCH_SIZE = 500
DEADLINE = 120.0  # seconds: a generous bound; each test takes well under a minute
PLACES = [("US", "US-CA"), ("BR", ""), ("DE", ""), ("IN", ""), ("GB", ""), ("JP", "")]
AGES = [None, 12, 14, 15, 16, 17, 18, 25, 40, 70]


# --- the broker and the worker ----------------------------------------------------------


@pytest.fixture
def worker_broker(settings, monkeypatch) -> Iterator[str]:
    """The test process and the worker share a Redis database of their own."""
    settings.ROLLOUT_BATCH_SIZE = BATCH_SIZE
    settings.ROLLOUT_BATCH_TIMEOUT = timedelta(seconds=5)
    with use_worker_broker(WORKER_BROKER, settings, monkeypatch) as url:
        yield url


def _worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": WORKER_BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "ROLLOUT_BATCH_SIZE": str(BATCH_SIZE),
        "ROLLOUT_BATCH_TIMEOUT_SECONDS": "5",
        "DEBUG": "true",
    }


@pytest.fixture
def workers(worker_broker, tmp_path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """start() runs a worker in its own process group and waits until it is ready;
    every worker started is stopped at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"worker-{len(started)}.log"
        process = start_worker(name="rollout-test", env=_worker_env(), log_path=log_path)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            stop_worker(process)


# --- data and observation -------------------------------------------------------------------


def populate(count: int) -> list[Subject]:
    """`count` subjects registered on 2024-01 as `services.register_subject` would leave
    them (the baseline defaults as events and current states), in bulk: every 4th has
    sent GPC (nothing live is a sale then), every 7th has chosen about analytics."""
    now = timezone.now()
    today = selectors.today()
    baseline = PolicyVersion.objects.get(label="2024-01")
    places = {
        place: services.resolve_jurisdiction(country=place[0], subdivision=place[1])
        for place in PLACES
    }
    purposes = list(Purpose.objects.filter(introduced_in=baseline).order_by("pk"))
    analytics = Purpose.objects.get(key="analytics")
    mechanisms = {
        (j, p): m
        for j, p, m in JurisdictionRule.objects.values_list(
            "jurisdiction_id", "purpose_id", "mechanism"
        )
    }
    subjects = Subject.objects.bulk_create(
        [
            Subject(
                external_id=f"bulk-{index:05d}",
                country=PLACES[index % len(PLACES)][0],
                subdivision=PLACES[index % len(PLACES)][1],
                language="en",
                birth_year=None if age is None else born(age),
                jurisdiction=places[PLACES[index % len(PLACES)]],
                policy_version=baseline,
                gpc_signalled_at=now if index % 4 == 0 else None,
                created_at=now,
                updated_at=now,
            )
            for index, age in ((i, AGES[(i // len(PLACES)) % len(AGES)]) for i in range(count))
        ],
        batch_size=2000,
    )
    events = []
    for index, subject in enumerate(subjects):
        age = rules.lowest_age(subject.birth_year, today)
        age_rules = selectors.age_rules(subject.jurisdiction)
        for purpose in purposes:
            granted, source = rules.default_decision(
                mechanism=mechanisms[(subject.jurisdiction_id, purpose.pk)],
                age=age,
                rules=age_rules,
                purpose=selectors.purpose_flags(purpose),
                gpc_signalled=subject.gpc_signalled_at is not None,
            )
            events.append(_event(subject, purpose, granted, source, now, baseline))
        if index % 7 == 3:
            blocked = rules.age_blocked(
                age=age, rules=age_rules, purpose=selectors.purpose_flags(analytics)
            )
            choice = _event(subject, analytics, index % 2 == 1 and not blocked, None, now, baseline)
            events.append(choice)
    ConsentEvent.objects.bulk_create(events, batch_size=5000)
    newest = {(e.subject_id, e.purpose_id): e for e in events}
    ConsentState.objects.bulk_create(
        [
            ConsentState(
                subject_id=e.subject_id,
                purpose_id=e.purpose_id,
                granted=e.granted,
                source=e.source,
                policy_version=baseline,
                event=e,
                updated_at=e.occurred_at,
            )
            for e in newest.values()
        ],
        batch_size=5000,
    )
    return subjects


def _event(
    subject: Subject,
    purpose: Purpose,
    granted: bool,
    source: Source | None,
    now: datetime,
    version: PolicyVersion,
) -> ConsentEvent:
    """A default (source given) written by the app back end, or the person's own choice."""
    own = source is None
    return ConsentEvent(
        subject=subject,
        purpose=purpose,
        granted=granted,
        source=source or Source.USER_APP,
        policy_version=version,
        jurisdiction_id=subject.jurisdiction_id,
        actor_type=ActorType.SUBJECT if own else TEST_ACTOR.type,
        actor_id=subject.external_id if own else TEST_ACTOR.id,
        occurred_at=now + timedelta(seconds=1) if own else now,
        notice_version=version if own else None,
        language=subject.language,
    )


def phase_subject_ids(phase: RolloutPhase) -> list[int]:
    """The phase's subjects in id order: rank r falls in batch r // BATCH_SIZE."""
    return list(
        Subject.objects.filter(jurisdiction__in=phase.jurisdictions.all(), erased_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def wait_for(condition: Callable[[], bool], what: str, *, tick: bool = False) -> None:
    """Polls the database until `condition()`, calling the beat's tick if asked."""
    deadline = time.monotonic() + DEADLINE
    while True:
        if tick:
            rollouts.tick()
        if condition():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


def status_of(phase: RolloutPhase) -> str:
    return RolloutPhase.objects.values_list("status", flat=True).get(pk=phase.pk)


def batches_done(phase: RolloutPhase) -> int:
    return RolloutBatch.objects.filter(phase=phase, status=BatchStatus.DONE).count()


def lock_waiters() -> list[int]:
    """Backends of the test database waiting for a row lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return [pid for (pid,) in cursor.fetchall()]


def backends_alive(pids: list[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
        (alive,) = cursor.fetchone()
    return bool(alive)


def assert_the_phase_reached_everyone_once(phase: RolloutPhase, everyone: list[int]) -> None:
    reached = phase_subject_ids(phase)
    phase.refresh_from_db()
    assert phase.status == RolloutStatus.COMPLETED
    assert (phase.total, phase.processed, phase.failed) == (len(reached), len(reached), 0)
    batches = RolloutBatch.objects.filter(phase=phase)
    assert set(batches.values_list("status", flat=True)) == {BatchStatus.DONE}
    assert batches.count() == -(-len(reached) // BATCH_SIZE)
    assert set(
        Subject.objects.filter(pk__in=reached).values_list("policy_version__label", flat=True)
    ) == {"2025-06"}
    others = Subject.objects.exclude(pk__in=reached)
    assert set(others.values_list("policy_version__label", flat=True)) == {"2024-01"}
    assert not PolicyNotice.objects.filter(subject__in=others).exists()
    duplicates = (
        ConsentEvent.objects.filter(rollout_phase__isnull=False)
        .values("subject", "purpose", "rollout_phase")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert list(duplicates) == []
    assert_one_notice_each(reached, since="2024-01", label="2025-06")
    checked = assert_states_follow_the_rules(everyone)
    assert checked == 4 * len(reached) + 2 * (len(everyone) - len(reached))


# --- the tests ---------------------------------------------------------------------------------


def test_a_phase_over_thousands_of_subjects_completes_through_the_worker(workers):
    phase = only_ads_phase_one()
    everyone = [s.pk for s in populate(4000)]
    workers()

    assert rollouts.tick(now=datetime(2025, 6, 18, tzinfo=UTC))["started"] == 1

    wait_for(lambda: status_of(phase) != RolloutStatus.RUNNING, "the phase", tick=True)
    assert len(phase_subject_ids(phase)) > 2500
    assert_the_phase_reached_everyone_once(phase, everyone)
    # Every reached subject had two new purposes, each decided once.
    written = ConsentEvent.objects.filter(rollout_phase=phase).count()
    assert written == 2 * len(phase_subject_ids(phase))


def test_a_worker_killed_mid_phase_is_replaced_and_the_phase_completes_once(workers):
    phase = only_ads_phase_one()
    everyone = [s.pk for s in populate(4000)]
    ranks = phase_subject_ids(phase)
    assert len(ranks) > 4 * BATCH_SIZE
    # One subject in the 3rd and one in the 4th batch are held by another transaction,
    # so each pool process is stuck inside a batch when the worker is killed.
    hostages = [ranks[2 * BATCH_SIZE + 7], ranks[3 * BATCH_SIZE + 7]]
    holder = psycopg.connect(**database_params())
    try:
        holder.execute("SELECT id FROM consent_subject WHERE id = ANY(%s) FOR UPDATE", [hostages])
        worker = workers()
        rollouts.start_phase(phase_id=phase.pk, actor="staff:tess")
        wait_for(
            lambda: batches_done(phase) == 2 and len(lock_waiters()) == 2,
            "two batches done and two stuck",
        )
        stuck = lock_waiters()

        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

        assert status_of(phase) == RolloutStatus.RUNNING
        statuses = list(
            RolloutBatch.objects.filter(phase=phase).order_by("lo_id").values_list("status")
        )
        assert [s for (s,) in statuses][:4] == [BatchStatus.DONE] * 2 + [BatchStatus.PENDING] * 2
        assert Subject.objects.filter(policy_version__label="2025-06").count() == 2 * BATCH_SIZE
    finally:
        holder.rollback()  # the orphaned transactions get their locks, then find no client
        holder.close()
    wait_for(lambda: not backends_alive(stuck), "the killed worker's connections to end")

    workers()
    wait_for(lambda: status_of(phase) != RolloutStatus.RUNNING, "the phase", tick=True)

    assert_the_phase_reached_everyone_once(phase, everyone)
    assert ConsentEvent.objects.filter(rollout_phase=phase).count() == 2 * len(ranks)
    attempts = RolloutBatch.objects.filter(phase=phase).values_list("attempts", flat=True)
    assert set(attempts) == {1}  # the killed attempts rolled back and left no trace


def test_a_choice_made_while_the_worker_runs_the_phase_is_kept(workers):
    phase = only_ads_phase_one()
    analytics = Purpose.objects.get(key="analytics")
    # 2025-06 also changes the terms of analytics here, so the phase decides it again.
    PolicyVersion.objects.get(label="2025-06").changed_purposes.add(analytics)
    everyone = [s.pk for s in populate(3000)]
    ranks = phase_subject_ids(phase)
    # Adults (or of unknown age) of Brazil and California, who have not chosen yet:
    # any choice is theirs to make, and neither place asks again after a change.
    plain = set(
        Subject.objects.filter(
            Q(birth_year__isnull=True) | Q(birth_year__lte=born(18)),
            pk__in=ranks,
            jurisdiction__code__in=["BR", "US-CA"],
            gpc_signalled_at__isnull=True,
        )
        .exclude(events__source=Source.USER_APP)
        .values_list("pk", flat=True)
    )
    [chooser] = [pk for pk in ranks[BATCH_SIZE : 2 * BATCH_SIZE] if pk in plain][:1]
    meanwhile = [pk for pk in ranks[2 * BATCH_SIZE :] if pk in plain][:30]
    early = [pk for pk in ranks[:BATCH_SIZE] if pk in plain][:10]
    chosen: dict[tuple[int, str], bool] = {}

    def decide(pk: int, key: str, granted: bool) -> None:
        subject = Subject.objects.get(pk=pk)
        services.record_choice(
            external_id=subject.external_id,
            purpose_key=key,
            granted=granted,
            source=Source.USER_APP,
            actor=services.Actor(ActorType.SUBJECT, subject.external_id),
        )
        chosen[(pk, key)] = granted

    # The chooser's choice is being written when the batch reaches them: the batch
    # waits for it, then keeps it.
    holding, release = threading.Event(), threading.Event()

    def choose_and_hold() -> None:
        try:
            with transaction.atomic():
                decide(chooser, "analytics", False)
                holding.set()
                release.wait(timeout=DEADLINE)
        finally:
            connection.close()

    holder = threading.Thread(target=choose_and_hold)
    holder.start()
    try:
        assert holding.wait(timeout=30)
        workers()
        rollouts.start_phase(phase_id=phase.pk, actor="staff:tess")
        wait_for(lambda: bool(lock_waiters()), "the chooser's batch to wait for them")
        for index, pk in enumerate(meanwhile):
            decide(pk, "analytics", index % 2 == 0)
        first_batch = RolloutBatch.objects.filter(phase=phase, lo_id=ranks[0])
        wait_for(lambda: first_batch.filter(status=BatchStatus.DONE).exists(), "the first batch")
        for index, pk in enumerate(early):
            decide(pk, "ads_personalization", index % 2 == 0)
        assert status_of(phase) == RolloutStatus.RUNNING  # still waiting for the chooser
    finally:
        release.set()
        holder.join(timeout=30)

    wait_for(lambda: status_of(phase) != RolloutStatus.RUNNING, "the phase", tick=True)

    assert_the_phase_reached_everyone_once(phase, everyone)
    state = ConsentState.objects.select_related("event").get(subject_id=chooser, purpose=analytics)
    assert (state.granted, state.source, state.event.actor_id) == (
        False,
        Source.USER_APP,
        Subject.objects.get(pk=chooser).external_id,
    )
    assert len(chosen) == 1 + len(meanwhile) + len(early)
    for (pk, key), granted in chosen.items():
        current = ConsentState.objects.get(subject_id=pk, purpose__key=key)
        assert (current.granted, current.source) == (granted, Source.USER_APP), (pk, key)
        assert not ConsentEvent.objects.filter(
            subject_id=pk, purpose__key=key, pk__gt=current.event_id
        ).exists()
