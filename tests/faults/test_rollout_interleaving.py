"""A person's choice made while a rollout batch processes them is never overwritten by
the rollout's default, in both orders, built deterministically with two database
connections (two threads), a transaction held open and a pause inside the batch.

`consent.reach` locks the batch's subjects (it moves them to the version,
`UPDATE consent_subject s …`, before it reads their states); `services.record_choice`
locks the subject row before it writes. So:

- a choice whose transaction holds the row first makes the batch wait, and the batch
  then reads the committed choice and keeps it;
- a choice made after the batch has read the states (the worst moment: it has decided
  to write its default) waits for the batch to commit, and is then written after it.

Each subject here granted analytics earlier, and 2025-06 is made to change analytics
for a jurisdiction that requires a fresh decision (GB), so the batch really does want
to write this purpose (an earlier grant falls back to the default): without the
locks the default would land on top of the choice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from consent import reach, rollouts, services
from consent.choices import ActorType, Source
from consent.models import ConsentEvent, ConsentState, PolicyVersion, Purpose, Subject
from tests.consent.test_rollouts import only_ads_phase_one
from tests.factories import SubjectFactory
from tests.faults.servers import wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

TIMEOUT = 30.0


def choose(subject: Subject, granted: bool) -> ConsentState:
    return services.record_choice(
        external_id=subject.external_id,
        purpose_key="analytics",
        granted=granted,
        source=Source.USER_APP,
        actor=services.Actor(ActorType.SUBJECT, subject.external_id),
    )


def waiting_for_a_lock() -> list[str]:
    """The statements of the other backends of this database waiting for a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return [query for (query,) in cursor.fetchall()]


def in_thread(work: Callable[[], Any], results: dict[str, Any], name: str) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = work()
        except Exception as exc:  # reported by the test
            results[name] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def analytics_of(subject: Subject) -> ConsentState:
    return ConsentState.objects.select_related("event").get(
        subject=subject, purpose__key="analytics"
    )


def test_a_choice_during_a_batch_is_never_overwritten_by_the_rollout_default(
    monkeypatch,
) -> None:
    phase = only_ads_phase_one()
    PolicyVersion.objects.get(label="2025-06").changed_purposes.add(
        Purpose.objects.get(key="analytics")
    )
    first = SubjectFactory.create(country="GB")  # chooses before the batch reaches her
    second = SubjectFactory.create(country="GB")  # chooses while the batch holds him
    for subject in (first, second):
        choose(subject, True)
    sent: list[int] = []
    monkeypatch.setattr(rollouts, "_send", sent.append)
    rollouts.start_phase(phase_id=phase.pk, actor="staff:tess")
    [batch_id] = sent

    # A pause inside the batch, right after it decided what to write.
    decided, go_on = threading.Event(), threading.Event()
    run = reach._run

    def pausing_run(sql: str, params: dict[str, Any] | None = None) -> int:
        count = run(sql, params)
        if "TABLE reach_decisions AS" in sql and threading.current_thread().name == "batch":
            decided.set()
            assert go_on.wait(TIMEOUT)
        return count

    monkeypatch.setattr(reach, "_run", pausing_run)
    results: dict[str, Any] = {}
    holding, release = threading.Event(), threading.Event()

    def first_refuses_and_holds() -> ConsentState:
        with transaction.atomic():
            state = choose(first, False)
            holding.set()
            assert release.wait(TIMEOUT)
        return state

    threads = [in_thread(first_refuses_and_holds, results, "first")]
    try:
        assert holding.wait(TIMEOUT)
        threads.append(in_thread(lambda: rollouts.run_batch(batch_id=batch_id), results, "batch"))
        # 1. The batch waits for the choice in progress...
        wait_until(
            lambda: any("UPDATE consent_subject s" in q for q in waiting_for_a_lock()),
            "the batch to wait for the first choice",
            TIMEOUT,
        )
        assert not decided.is_set()
        release.set()
        # ...and goes on once it committed.
        assert decided.wait(TIMEOUT)

        # 2. A choice made now waits for the batch.
        threads.append(in_thread(lambda: choose(second, True), results, "second"))
        wait_until(
            lambda: any('"consent_subject"' in q for q in waiting_for_a_lock()),
            "the second choice to wait for the batch",
            TIMEOUT,
        )
        assert "second" not in results
    finally:
        release.set()
        go_on.set()
        for thread in threads:
            thread.join(timeout=TIMEOUT)

    assert results["batch"] == "done", results
    for subject, granted in ((first, False), (second, True)):
        state = analytics_of(subject)
        assert (state.granted, state.source) == (granted, Source.USER_APP), subject
        assert state.event.actor_id == subject.external_id
        assert state.event_id == results["first" if subject == first else "second"].event_id
        # Nothing was written after the person's choice.
        assert not ConsentEvent.objects.filter(
            subject=subject, purpose__key="analytics", pk__gt=state.event_id
        ).exists()
        assert Subject.objects.get(pk=subject.pk).policy_version.label == "2025-06"
    # The batch did want this purpose: for the second person it wrote its default
    # (before his choice), for the first it kept her refusal.
    defaults = ConsentEvent.objects.filter(
        purpose__key="analytics", source=Source.ROLLOUT_DEFAULT, rollout_phase=phase
    )
    assert list(defaults.values_list("subject_id", "granted")) == [(second.pk, False)]
    assert defaults.get().pk < analytics_of(second).event_id
