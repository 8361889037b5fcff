"""Guarantees that only PostgreSQL gives: the append-only trigger on consent events,
and the row locks that serialise concurrent writes for one subject."""

import threading

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from consent import services
from consent.choices import ActorType, Source
from consent.errors import AlreadyExists
from consent.models import ConsentEvent, ConsentState, Jurisdiction, PolicyVersion, Subject
from tests.factories import TEST_ACTOR, SubjectFactory

pytestmark = pytest.mark.postgres

# Transactional tests empty every table afterwards; the reference data loaded by the
# migrations is serialised at setup and restored, so later tests still find it.
threaded = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def snapshot():
    return list(ConsentEvent.objects.order_by("id").values_list("id", "granted", "source"))


# --- the append-only trigger ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE consent_consentevent SET granted = NOT granted",
        "DELETE FROM consent_consentevent",
    ],
)
def test_consent_events_refuse_update_and_delete_in_sql(sql):
    SubjectFactory.create(country="DE")
    SubjectFactory.create(country="BR")
    before = snapshot()
    assert len(before) == 4

    # ERRCODE restrict_violation (23001) is an integrity-constraint class error:
    # psycopg raises RestrictViolation, which Django wraps as IntegrityError.
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql)

    assert isinstance(excinfo.value.__cause__, psycopg.errors.RestrictViolation)
    assert "append-only" in str(excinfo.value)
    assert snapshot() == before


@pytest.mark.django_db
def test_consent_events_refuse_an_orm_update():
    subject = SubjectFactory.create(country="BR")
    before = snapshot()

    with pytest.raises(IntegrityError), transaction.atomic():
        ConsentEvent.objects.filter(subject=subject).update(source=Source.STAFF)

    assert snapshot() == before


# --- what the rollout tables reference cannot be deleted ----------------------------------


@pytest.mark.django_db
def test_subjects_are_never_deleted_in_sql():
    subject = SubjectFactory.create(country="DE")
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM consent_subject WHERE id = %s", [subject.pk])
    assert isinstance(excinfo.value.__cause__, psycopg.errors.RestrictViolation)
    assert "never deleted" in str(excinfo.value)
    assert Subject.objects.filter(pk=subject.pk).exists()
    assert ConsentEvent.objects.filter(subject=subject).count() == 2


@pytest.mark.django_db
def test_a_published_version_cannot_be_deleted_in_sql_but_a_draft_can():
    published = PolicyVersion.objects.get(label="2024-01")
    draft = PolicyVersion.objects.create(label="2031-01", title="Draft")
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM consent_policyversion WHERE id = %s", [published.pk])
    assert "2024-01 is published" in str(excinfo.value)
    with connection.cursor() as cur:
        cur.execute("DELETE FROM consent_policyversion WHERE id = %s", [draft.pk])
    assert list(PolicyVersion.objects.filter(label__in=["2024-01", "2031-01"])) == [published]


@pytest.mark.django_db
def test_publishing_a_version_marks_it_published():
    version = PolicyVersion.objects.create(label="2031-01", title="Next")
    services.publish_version_to_jurisdiction(
        version=version, jurisdiction=Jurisdiction.objects.get(code="FR")
    )
    version.refresh_from_db()
    assert version.published_at is not None
    first = version.published_at
    services.publish_version_to_jurisdiction(
        version=version, jurisdiction=Jurisdiction.objects.get(code="DE")
    )
    version.refresh_from_db()
    assert version.published_at == first


# --- concurrency -----------------------------------------------------------------------------


def run_in_threads(count, work):
    """Runs work(i) in `count` threads released together; returns results by index."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def target(i):
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except Exception as exc:  # reported to the test
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@threaded
def test_concurrent_choices_give_one_event_each_and_a_state_equal_to_the_last():
    subject = SubjectFactory.create(external_id="busy", country="BR")
    actor = services.Actor(ActorType.SUBJECT, "busy")

    def work(i):
        return services.record_choice(
            external_id="busy",
            purpose_key="analytics",
            granted=i % 2 == 0,
            source=Source.USER_APP,
            actor=actor,
        )

    results = run_in_threads(20, work)

    assert [r for r in results if isinstance(r, Exception)] == []
    choices = ConsentEvent.objects.filter(
        subject=subject, purpose__key="analytics", source=Source.USER_APP
    )
    assert choices.count() == 20
    assert sorted(choices.values_list("granted", flat=True)) == [False] * 10 + [True] * 10
    last = ConsentEvent.objects.filter(subject=subject, purpose__key="analytics").latest("id")
    current = ConsentState.objects.get(subject=subject, purpose__key="analytics")
    assert (current.granted, current.event_id, current.source) == (
        last.granted,
        last.pk,
        Source.USER_APP,
    )


@threaded
def test_concurrent_registrations_of_one_external_id_let_exactly_one_win():
    def work(_):
        return services.register_subject(external_id="twin", country="DE", actor=TEST_ACTOR)

    results = run_in_threads(8, work)

    winners = [r for r in results if isinstance(r, Subject)]
    losers = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(winners) == 1
    assert len(losers) == 7
    assert {loser.field for loser in losers} == {"external_id"}
    subject = Subject.objects.get(external_id="twin")
    assert subject.pk == winners[0].pk
    # The losers left nothing behind: only the winner's defaults exist.
    assert ConsentEvent.objects.filter(subject__external_id="twin").count() == 2
    assert ConsentEvent.objects.count() == 2
