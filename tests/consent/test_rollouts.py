"""The rollout engine in process: phases, keyset batches, controls, rollback, dry run, API.

Batch tasks run eagerly (CELERY_TASK_ALWAYS_EAGER) when the engine's on-commit hooks
fire. The test's transaction never commits, so `settle()` fires them as a commit
would, including the hooks those hooks add: a started phase dispatches its batches,
a finished one starts whatever is due by the wall clock. The migrations load the seed
plan, "2025-06" in three phases and "2026-01" in one phase over every jurisdiction,
all due by now; a test that wants one phase alone parks or postpones the others.
A real worker, Redis and a SIGKILL are in test_rollout_worker.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent import reach, rollouts, rules, selectors, services
from consent.choices import (
    EXPLICIT_SOURCES,
    ActorType,
    BatchStatus,
    DenialReason,
    Mechanism,
    RolloutStatus,
    Source,
)
from consent.errors import Conflict, Locked
from consent.models import (
    ConsentEvent,
    ConsentState,
    Jurisdiction,
    JurisdictionRule,
    NoticeDecisionPurpose,
    OutboxMessage,
    PolicyNotice,
    PolicyVersion,
    Purpose,
    Rollout,
    RolloutAction,
    RolloutBatch,
    RolloutPhase,
    Subject,
)
from tests.factories import TEST_ACTOR, SubjectFactory

pytestmark = pytest.mark.django_db

API = "/api/v1"
PROBLEM = "application/problem+json"
LATER = datetime(2100, 1, 1, tzinfo=UTC)
JULY_2025 = datetime(2025, 7, 1, tzinfo=UTC)
STAFF = "staff:tess"
ADS_PURPOSES = ["ads_personalization", "ads_data_sharing"]


# --- the engine, eagerly ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def eager_engine(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.ROLLOUT_BATCH_SIZE = 3


@pytest.fixture
def settle(django_capture_on_commit_callbacks) -> Callable[[], Any]:
    """`with settle(): …` runs the on-commit work of the block as a commit would:
    batch tasks (eagerly), phase closing, and the start of phases that were waiting."""

    @contextmanager
    def run() -> Iterator[None]:
        with django_capture_on_commit_callbacks(execute=True):
            yield

    return run


# --- helpers --------------------------------------------------------------------------------


def born(age: int) -> int:
    """A birth year whose protective reading (the youngest possible age) is `age`."""
    return selectors.today().year - age - 1


def ads() -> Rollout:
    return Rollout.objects.get(version__label="2025-06")


def linked() -> Rollout:
    return Rollout.objects.get(version__label="2026-01")


def phase(rollout: Rollout, position: int = 1) -> RolloutPhase:
    return RolloutPhase.objects.get(rollout=rollout, position=position)


def park(*plans: Rollout) -> None:
    """Back to draft: the tick leaves a draft rollout alone."""
    Rollout.objects.filter(pk__in=[r.pk for r in plans]).update(status=RolloutStatus.DRAFT)


def postpone(*phases: RolloutPhase) -> None:
    RolloutPhase.objects.filter(pk__in=[p.pk for p in phases]).update(starts_at=LATER)


def only_ads_phase_one() -> RolloutPhase:
    """Phase 1 of 2025-06 is the only due phase: the others wait for later."""
    park(linked())
    postpone(phase(ads(), 2), phase(ads(), 3))
    return phase(ads())


def actor_for(subject: Subject) -> services.Actor:
    return services.Actor(ActorType.SUBJECT, subject.external_id)


def choose(subject: Subject, purpose_key: str, granted: bool) -> ConsentState:
    return services.record_choice(
        external_id=subject.external_id,
        purpose_key=purpose_key,
        granted=granted,
        source=Source.USER_APP,
        actor=actor_for(subject),
    )


def signal_gpc(subject: Subject) -> None:
    services.apply_gpc(external_id=subject.external_id, actor=TEST_ACTOR)


def state(subject: Subject, purpose_key: str) -> tuple[bool, str]:
    row = ConsentState.objects.get(subject_id=subject.pk, purpose__key=purpose_key)
    return row.granted, row.source


def version_of(subject: Subject) -> str:
    return Subject.objects.get(pk=subject.pk).policy_version.label


def reason(subject: Subject, purpose_key: str) -> DenialReason | None:
    purpose = selectors.get_purpose(key=purpose_key)
    [result] = selectors.check_consent(purpose=purpose, external_ids=[subject.external_id])
    return result.reason


def notice(subject: Subject, label: str) -> PolicyNotice:
    return PolicyNotice.objects.get(subject_id=subject.pk, version__label=label)


def decision_keys(notice_row: PolicyNotice) -> set[str]:
    return set(notice_row.decision_purposes.values_list("key", flat=True))


def refreshed(obj: Any) -> Any:
    obj.refresh_from_db()
    return obj


def snapshot() -> tuple[Any, ...]:
    """Everything a rollout could write."""
    return (
        list(ConsentEvent.objects.order_by("id").values_list("id", flat=True)),
        list(
            ConsentState.objects.order_by("subject_id", "purpose_id").values_list(
                "subject_id", "purpose_id", "granted", "source", "event_id"
            )
        ),
        list(
            PolicyNotice.objects.order_by("id").values_list(
                "id", "subject_id", "version_id", "requires_decision", "resolved_at"
            )
        ),
        list(Subject.objects.order_by("id").values_list("id", "policy_version_id", "updated_at")),
        OutboxMessage.objects.count(),
    )


# --- the oracle: consent.rules, subject by subject ------------------------------------------


def _in_range(purpose: Purpose, changed: dict[int, set[str]], lo: str, hi: str) -> bool:
    return lo < purpose.introduced_in.label <= hi or any(
        lo < label <= hi for label in changed.get(purpose.pk, set())
    )


def assert_states_follow_the_rules(subject_ids: Iterable[int]) -> int:
    """Every (subject, purpose) against `consent.rules`, one subject at a time.

    A purpose not live for the subject has no state. A live one has a state equal to
    its newest event. The person's own choices (and a GPC signal they sent) are kept
    as they are, unless the only thing after them is a rollout asking again for an
    earlier grant of a purpose that a material version changed where the law wants a
    fresh decision. Everything else is the jurisdiction's default as
    `rules.default_decision` gives it. Returns how many pairs were checked."""
    ids = list(subject_ids)
    today = selectors.today()
    purposes = list(Purpose.objects.select_related("introduced_in"))
    mechanisms = {
        (j, p): m
        for j, p, m in JurisdictionRule.objects.values_list(
            "jurisdiction_id", "purpose_id", "mechanism"
        )
    }
    material = dict(PolicyVersion.objects.values_list("pk", "material"))
    labels = dict(PolicyVersion.objects.values_list("pk", "label"))
    changed: dict[int, set[int]] = defaultdict(set)  # purpose → versions changing it
    for version_id, purpose_id in PolicyVersion.changed_purposes.through.objects.values_list(
        "policyversion_id", "purpose_id"
    ):
        changed[purpose_id].add(version_id)
    states = {(s.subject_id, s.purpose_id): s for s in ConsentState.objects.filter(subject__in=ids)}
    history: dict[tuple[int, int], list[ConsentEvent]] = defaultdict(list)
    for event in ConsentEvent.objects.filter(subject__in=ids).order_by("id"):
        history[(event.subject_id, event.purpose_id)].append(event)
    checked = 0
    subjects = Subject.objects.filter(pk__in=ids).select_related("jurisdiction", "policy_version")
    for subject in subjects:
        age = rules.lowest_age(subject.birth_year, today)
        age_rules = selectors.age_rules(subject.jurisdiction)
        reached = subject.policy_version.label
        for purpose in purposes:
            key = (subject.pk, purpose.pk)
            where = f"{subject.external_id} ({subject.jurisdiction.code}) / {purpose.key}"
            mechanism = mechanisms.get((subject.jurisdiction_id, purpose.pk))
            live = rules.is_live(
                introduced_label=purpose.introduced_in.label,
                subject_version_label=subject.policy_version.label,
                mechanism=mechanism,
            )
            current = states.get(key)
            if not live:
                assert current is None, f"{where}: a state for a purpose that is not live"
                continue
            events = history[key]
            assert current is not None, f"{where}: no state for a live purpose"
            assert current.event_id == events[-1].pk, f"{where}: the state is not the last event"
            own = [
                e
                for e in events
                if e.source in EXPLICIT_SOURCES
                or (e.source == Source.GPC and e.rollout_phase_id is None)
            ]
            checked += 1
            if own and own[-1].pk == events[-1].pk:
                choice = own[-1]
                asked_again = (
                    choice.source in EXPLICIT_SOURCES
                    and choice.granted
                    and subject.jurisdiction.material_change_requires_decision
                    and any(
                        material[v] and labels[choice.policy_version_id] < labels[v] <= reached
                        for v in changed[purpose.pk]
                    )
                )
                assert not asked_again, f"{where}: an earlier grant was not asked again"
                continue  # the person's choice (or their GPC signal), kept
            if own:
                choice = own[-1]
                assert choice.source in EXPLICIT_SOURCES, f"{where}: GPC overwritten"
                assert choice.granted, f"{where}: an explicit refusal was overwritten"
                assert subject.jurisdiction.material_change_requires_decision, where
                for later in events[events.index(choice) + 1 :]:
                    assert later.rollout_phase_id is not None, f"{where}: overwritten"
                    assert material[later.policy_version_id], where
                    assert later.policy_version_id in changed[purpose.pk], where
            expected = rules.default_decision(
                mechanism=mechanism or Mechanism.UNAVAILABLE,
                age=age,
                rules=age_rules,
                purpose=selectors.purpose_flags(purpose),
                gpc_signalled=subject.gpc_signalled_at is not None,
            )
            assert (current.granted, current.source) == expected, where
    return checked


def expected_decisions(subject: Subject, *, since: str, label: str) -> set[str]:
    """The purposes a notice for `label` asks a decision on, reached from `since`."""
    jurisdiction = subject.jurisdiction
    between = PolicyVersion.objects.filter(label__gt=since, label__lte=label)
    if not (jurisdiction.material_change_requires_decision and any(v.material for v in between)):
        return set()
    mechanisms = dict(jurisdiction.rules.values_list("purpose__key", "mechanism"))
    changed: dict[int, set[str]] = defaultdict(set)
    for version in between.prefetch_related("changed_purposes"):
        for purpose in version.changed_purposes.all():
            changed[purpose.pk].add(version.label)
    age = rules.lowest_age(subject.birth_year, selectors.today())
    keys = set()
    for purpose in Purpose.objects.select_related("introduced_in"):
        mechanism = mechanisms.get(purpose.key)
        if (
            _in_range(purpose, changed, since, label)
            and mechanism not in (None, Mechanism.UNAVAILABLE, Mechanism.ALWAYS_ON)
            and not rules.age_blocked(
                age=age,
                rules=selectors.age_rules(jurisdiction),
                purpose=selectors.purpose_flags(purpose),
            )
        ):
            keys.add(purpose.key)
    return keys


def assert_one_notice_each(subject_ids: Iterable[int], *, since: str, label: str) -> None:
    """Exactly one notice of `label` per subject, asking exactly the expected decisions."""
    ids = set(subject_ids)
    notices = list(
        PolicyNotice.objects.filter(subject__in=ids, version__label=label)
        .select_related("subject__jurisdiction")
        .prefetch_related("decision_purposes")
    )
    per_subject = Counter(n.subject_id for n in notices)
    assert set(per_subject) == ids
    assert set(per_subject.values()) == {1}
    cache: dict[tuple[int, int | None], set[str]] = {}
    for row in notices:
        subject = row.subject
        key = (subject.jurisdiction_id, subject.birth_year)
        if key not in cache:
            cache[key] = expected_decisions(subject, since=since, label=label)
        expected = cache[key]
        assert {p.key for p in row.decision_purposes.all()} == expected, subject.external_id
        assert row.requires_decision is bool(expected), subject.external_id
        assert row.resolved_at is None


# --- the tick ---------------------------------------------------------------------------------


def test_a_phase_is_not_started_merely_because_its_date_has_passed():
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))

    assert phase(ads()).starts_at < timezone.now()
    assert version_of(brazilian) == "2024-01"
    assert reason(brazilian, "ads_personalization") == DenialReason.NOT_LIVE
    assert Jurisdiction.objects.get(code="BR").current_policy_version.label == "2024-01"
    assert set(RolloutPhase.objects.values_list("status", flat=True)) == {RolloutStatus.SCHEDULED}


def test_the_tick_starts_the_phases_that_are_due_and_no_other():
    SubjectFactory.create(country="BR")
    SubjectFactory.create(country="DE")

    assert rollouts.tick(now=JULY_2025) == {"started": 1, "redispatched": 0, "closed": 0}

    first = phase(ads())
    assert first.status == RolloutStatus.RUNNING
    assert first.started_at is not None
    assert first.total == 1
    assert first.batches.count() == 1
    assert refreshed(ads()).status == RolloutStatus.RUNNING
    # Phase 2 starts on 1 September 2025, phase 3 and 2026-01 in January 2026.
    assert phase(ads(), 2).status == RolloutStatus.SCHEDULED
    assert phase(ads(), 3).status == RolloutStatus.SCHEDULED
    assert phase(linked()).status == RolloutStatus.SCHEDULED
    assert Jurisdiction.objects.get(code="BR").current_policy_version.label == "2025-06"
    assert Jurisdiction.objects.get(code="DE").current_policy_version.label == "2024-01"
    # A second tick finds nothing more to start.
    assert rollouts.tick(now=JULY_2025 + timedelta(minutes=1))["started"] == 0
    actions = RolloutAction.objects.filter(rollout=ads(), action="phase_started")
    assert list(actions.values_list("actor", flat=True)) == [rollouts.ENGINE]


@pytest.mark.parametrize(
    "status", [RolloutStatus.DRAFT, RolloutStatus.PAUSED, RolloutStatus.CANCELLED]
)
def test_the_tick_starts_nothing_of_a_rollout_that_is_not_live(status):
    Rollout.objects.filter(pk=ads().pk).update(status=status)

    assert rollouts.tick(now=JULY_2025)["started"] == 0

    assert set(ads().phases.values_list("status", flat=True)) == {RolloutStatus.SCHEDULED}
    assert not RolloutBatch.objects.exists()


# --- what a phase does to subjects --------------------------------------------------------------


def test_a_rollout_gives_each_subject_the_defaults_of_their_jurisdiction(settle):
    park(linked())
    german = SubjectFactory.create(external_id="de-adult", country="DE", birth_year=born(30))
    brazilian = SubjectFactory.create(external_id="br-adult", country="BR", birth_year=born(30))
    californian = SubjectFactory.create(
        external_id="ca-15", country="US", subdivision="US-CA", birth_year=born(15)
    )
    teen_brazilian = SubjectFactory.create(external_id="br-17", country="BR", birth_year=born(17))
    teen_indian = SubjectFactory.create(external_id="in-17", country="IN", birth_year=born(17))
    gpc_brazilian = SubjectFactory.create(external_id="br-gpc", country="BR", birth_year=born(30))
    signal_gpc(gpc_brazilian)
    gpc_californian = SubjectFactory.create(
        external_id="ca-gpc", country="US", subdivision="US-CA", birth_year=born(40)
    )
    signal_gpc(gpc_californian)
    chooser = SubjectFactory.create(external_id="br-chooser", country="BR", birth_year=born(30))
    choice = choose(chooser, "analytics", False)
    german_chooser = SubjectFactory.create(external_id="de-chooser", country="DE")
    german_choice = choose(german_chooser, "analytics", True)
    briton = SubjectFactory.create(external_id="gb-adult", country="GB", birth_year=born(30))
    japanese = SubjectFactory.create(external_id="jp-adult", country="JP", birth_year=born(30))
    everyone = Subject.objects.all()

    with settle():
        rollouts.tick()

    assert refreshed(ads()).status == RolloutStatus.COMPLETED
    assert {p.status for p in ads().phases.all()} == {RolloutStatus.COMPLETED}
    assert set(everyone.values_list("policy_version__label", flat=True)) == {"2025-06"}
    # Opt-in in Germany, the UK and elsewhere: off until the person says yes.
    for subject in (german, briton, japanese):
        for key in ADS_PURPOSES:
            assert state(subject, key) == (False, Source.ROLLOUT_DEFAULT)
            assert reason(subject, key) == DenialReason.DENIED
    # Opt-out in Brazil: on by default.
    for key in ADS_PURPOSES:
        assert state(brazilian, key) == (True, Source.ROLLOUT_DEFAULT)
        assert reason(brazilian, key) is None
    # California: opt-out becomes opt-in below 16.
    for key in ADS_PURPOSES:
        assert state(californian, key) == (False, Source.ROLLOUT_DEFAULT)
    assert state(californian, "analytics") == (False, Source.ROLLOUT_DEFAULT)
    # Brazil bans profiling ads to minors; analytics is not profiling.
    for key in ADS_PURPOSES:
        assert state(teen_brazilian, key) == (False, Source.AGE_RULE)
        assert reason(teen_brazilian, key) == DenialReason.AGE_RESTRICTED
    assert state(teen_brazilian, "analytics") == (True, Source.ROLLOUT_DEFAULT)
    # India: under 18 nothing non-essential.
    for key in ["analytics", *ADS_PURPOSES]:
        assert state(teen_indian, key) == (False, Source.AGE_RULE)
    assert state(teen_indian, "service_delivery") == (True, Source.ROLLOUT_DEFAULT)
    # GPC opts out of sharing, not of personalisation.
    for subject in (gpc_brazilian, gpc_californian):
        assert state(subject, "ads_data_sharing") == (False, Source.GPC)
        assert reason(subject, "ads_data_sharing") == DenialReason.GPC
        assert state(subject, "ads_personalization") == (True, Source.ROLLOUT_DEFAULT)
    # Earlier explicit choices are kept as they were.
    kept = ConsentState.objects.get(subject=chooser, purpose__key="analytics")
    assert (kept.granted, kept.source, kept.event_id) == (False, Source.USER_APP, choice.event_id)
    kept = ConsentState.objects.get(subject=german_chooser, purpose__key="analytics")
    assert (kept.granted, kept.event_id) == (True, german_choice.event_id)
    # One notice each; Germany, the UK and the default rules want a fresh decision,
    # Brazil and California do not; nothing is left to decide for the Indian teenager.
    assert PolicyNotice.objects.count() == everyone.count()
    for subject in (german, briton, japanese):
        assert notice(subject, "2025-06").requires_decision
        assert decision_keys(notice(subject, "2025-06")) == set(ADS_PURPOSES)
    for subject in (brazilian, californian, teen_brazilian, teen_indian, gpc_californian):
        assert not notice(subject, "2025-06").requires_decision
        assert decision_keys(notice(subject, "2025-06")) == set()
    # Every default is an event of the phase that wrote it.
    written = ConsentEvent.objects.filter(rollout_phase__isnull=False)
    assert written.count() == 2 * everyone.count()
    for event in written.select_related("rollout_phase", "subject__jurisdiction"):
        assert event.rollout_phase is not None
        assert event.rollout_phase.jurisdictions.filter(pk=event.subject.jurisdiction_id).exists()
        assert event.actor_id == f"rollout:{ads().pk}:{event.rollout_phase.position}"
        assert event.policy_version.label == "2025-06"
        assert event.notice_version is not None
        assert event.notice_version.label == "2025-06"
    assert assert_states_follow_the_rules(everyone.values_list("pk", flat=True)) == 4 * len(
        everyone
    )


MIXED_PLACES = [
    ("DE", ""),
    ("FR", ""),
    ("IE", ""),
    ("CH", ""),
    ("BR", ""),
    ("IN", ""),
    ("GB", ""),
    ("US", ""),
    ("US", "US-CA"),
    ("US", "US-CO"),
    ("US", "US-CT"),
    ("US", "US-TX"),
    ("SG", ""),
    ("NG", ""),
    ("ZA", ""),
    ("JP", ""),
]
MIXED_AGES = [None, 11, 13, 14, 15, 16, 17, 18, 30, 70]


@pytest.mark.parametrize(
    "analytics_changes", [False, True], ids=["seed plan", "2025-06 also changes analytics"]
)
def test_the_set_based_step_agrees_with_the_rules_for_a_mixed_population(
    settings, settle, analytics_changes
):
    """The whole seed plan over many jurisdictions, ages, GPC and choices: each
    (subject, purpose) ends where `consent.rules` says, one notice per version. When
    2025-06 also changes analytics, earlier choices about it meet a material change."""
    settings.ROLLOUT_BATCH_SIZE = 7
    park(linked())
    if analytics_changes:
        PolicyVersion.objects.get(label="2025-06").changed_purposes.add(
            Purpose.objects.get(key="analytics")
        )
    subjects = []
    for index, ((country, subdivision), age) in enumerate(
        (place, age) for place in MIXED_PLACES for age in MIXED_AGES
    ):
        subject = SubjectFactory.create(
            external_id=f"mixed-{index}",
            country=country,
            subdivision=subdivision,
            birth_year=None if age is None else born(age),
        )
        if index % 3 == 0:
            signal_gpc(subject)
        if index % 7 in (1, 4):  # 7 and the 10 ages are coprime: every age chooses
            try:
                choose(subject, "analytics", index % 7 == 1)
            except Locked:  # an age rule forbids the grant
                choose(subject, "analytics", False)
        subjects.append(subject)
    ids = [s.pk for s in subjects]

    with settle():
        rollouts.tick()

    assert refreshed(ads()).status == RolloutStatus.COMPLETED
    assert assert_states_follow_the_rules(ids) == 4 * len(ids)
    assert_one_notice_each(ids, since="2024-01", label="2025-06")
    # Between the versions, some decide about ads and some send GPC.
    for index, subject in enumerate(subjects):
        if index % 7 == 2:
            try:
                choose(subject, "ads_personalization", index % 2 == 0)
            except Locked:
                choose(subject, "ads_personalization", False)
        if index % 11 == 3:
            signal_gpc(subject)
    Rollout.objects.filter(pk=linked().pk).update(status=RolloutStatus.SCHEDULED)

    with settle():
        rollouts.tick()

    assert refreshed(linked()).status == RolloutStatus.COMPLETED
    assert set(Subject.objects.values_list("policy_version__label", flat=True)) == {"2026-01"}
    assert assert_states_follow_the_rules(ids) == 5 * len(ids)
    assert_one_notice_each(ids, since="2025-06", label="2026-01")
    assert PolicyNotice.objects.count() == 2 * len(ids)
    duplicates = (
        ConsentEvent.objects.filter(rollout_phase__isnull=False)
        .values("subject", "purpose", "rollout_phase")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not duplicates.exists()


def test_a_subject_registered_after_their_phase_started_starts_on_the_new_version(settle):
    first = only_ads_phase_one()
    earlier = SubjectFactory.create(country="BR", birth_year=born(30))
    rollouts.start_phase(phase_id=first.pk, actor=STAFF)  # batches not run yet

    newcomer = SubjectFactory.create(country="BR", birth_year=born(30))
    german = SubjectFactory.create(country="DE", birth_year=born(30))

    assert version_of(newcomer) == "2025-06"
    assert state(newcomer, "ads_personalization") == (True, Source.ROLLOUT_DEFAULT)
    assert reason(newcomer, "ads_personalization") is None
    assert version_of(earlier) == "2024-01"
    assert version_of(german) == "2024-01"
    newcomer_events = ConsentEvent.objects.filter(subject=newcomer).count()

    with settle():
        for batch in refreshed(first).batches.all():
            rollouts.run_batch(batch_id=batch.pk)

    assert refreshed(first).status == RolloutStatus.COMPLETED
    assert version_of(earlier) == "2025-06"
    assert ConsentEvent.objects.filter(subject=newcomer).count() == newcomer_events
    assert not PolicyNotice.objects.filter(subject=newcomer).exists()
    assert PolicyNotice.objects.filter(subject=earlier).count() == 1
    assert version_of(german) == "2024-01"


# --- batches --------------------------------------------------------------------------------


def test_a_phase_is_cut_into_keyset_batches_of_at_most_the_batch_size():
    first = only_ads_phase_one()
    for index in range(14):
        country, subdivision = [("BR", ""), ("DE", ""), ("US", "US-CA"), ("IN", "")][index % 4]
        SubjectFactory.create(external_id=f"k{index}", country=country, subdivision=subdivision)
    services.erase_subject(external_id="k4", actor=TEST_ACTOR)  # erased: not counted
    in_phase = list(
        Subject.objects.filter(
            jurisdiction__in=first.jurisdictions.all(), erased_at__isnull=True
        ).values_list("pk", flat=True)
    )
    in_phase.sort()

    rollouts.start_phase(phase_id=first.pk, actor=STAFF)

    first.refresh_from_db()
    batches = list(first.batches.order_by("lo_id"))
    chunks = [in_phase[i : i + 3] for i in range(0, len(in_phase), 3)]
    assert [(b.lo_id, b.size) for b in batches] == [(c[0], len(c)) for c in chunks]
    assert [b.hi_id for b in batches] == [c[0] for c in chunks[1:]] + [reach.MAX_ID]
    assert {b.status for b in batches} == {BatchStatus.PENDING}
    assert all(b.dispatched_at is not None for b in batches)
    assert first.total == len(in_phase) == sum(b.size for b in batches)
    for batch in batches:
        assert rollouts.run_batch(batch_id=batch.pk) == BatchStatus.DONE
        reached = PolicyNotice.objects.filter(
            subject_id__gte=batch.lo_id, subject_id__lt=batch.hi_id
        ).count()
        assert reached == refreshed(batch).processed == batch.size
    first.refresh_from_db()
    assert (first.status, first.processed, first.failed) == (
        RolloutStatus.COMPLETED,
        len(in_phase),
        0,
    )


@pytest.mark.parametrize("size", [1, 2, 4, 6, 11, 12, 50])
def test_the_keyset_ranges_hold_every_subject_of_the_phase_once(size):
    """Ranges of `size` subjects of the phase, whatever lies between them: subjects of
    other jurisdictions and erased ones are left out, neither counted nor starting a
    range, and the last range holds the rest (12 subjects: sizes that divide them, and
    sizes that do not)."""
    first = only_ads_phase_one()
    for index in range(19):
        country, subdivision = [("BR", ""), ("DE", ""), ("US", "US-CA")][index % 3]
        SubjectFactory.create(external_id=f"r{index}", country=country, subdivision=subdivision)
    for external_id in ("r0", "r7"):  # one in the phase (BR), one outside it (DE)
        services.erase_subject(external_id=external_id, actor=TEST_ACTOR)
    jurisdictions = list(first.jurisdictions.values_list("pk", flat=True))
    in_phase = sorted(
        Subject.objects.filter(jurisdiction__in=jurisdictions, erased_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    assert len(in_phase) == 12

    ranges = rollouts._boundaries(jurisdictions, size)

    chunks = [in_phase[i : i + size] for i in range(0, len(in_phase), size)]
    assert ranges == [
        (chunk[0], later[0] if later else reach.MAX_ID, len(chunk))
        for chunk, later in zip(chunks, [*chunks[1:], []], strict=True)
    ]


def test_a_phase_without_subjects_has_no_ranges():
    first = only_ads_phase_one()
    jurisdictions = list(first.jurisdictions.values_list("pk", flat=True))
    Subject.objects.filter(jurisdiction__in=jurisdictions).update(erased_at=timezone.now())
    assert rollouts._boundaries(jurisdictions, 3) == []
    assert rollouts._boundaries([], 3) == []


def test_a_batch_is_one_transaction(monkeypatch):
    first = only_ads_phase_one()
    for index in range(3):
        SubjectFactory.create(external_id=f"tx{index}", country="BR")
    rollouts.start_phase(phase_id=first.pk, actor=STAFF)
    [batch] = refreshed(first).batches.all()
    before = snapshot()

    def crash() -> None:  # the last step of reach: everything else is written by then
        raise RuntimeError("connection lost")

    monkeypatch.setattr(reach, "_cleanup", crash)
    with pytest.raises(RuntimeError):
        rollouts.run_batch(batch_id=batch.pk)

    assert snapshot() == before
    batch.refresh_from_db()
    assert (batch.status, batch.attempts) == (BatchStatus.PENDING, 1)
    assert "connection lost" in batch.error
    assert refreshed(first).status == RolloutStatus.RUNNING

    monkeypatch.undo()
    assert rollouts.run_batch(batch_id=batch.pk) == BatchStatus.DONE
    batch.refresh_from_db()
    assert (batch.status, batch.attempts, batch.error) == (BatchStatus.DONE, 2, "")
    assert PolicyNotice.objects.count() == 3


def test_running_a_finished_batch_again_changes_nothing(settle):
    first = only_ads_phase_one()
    for index in range(8):
        SubjectFactory.create(country=["BR", "IN", "GB", "US"][index % 4], birth_year=born(20))
    with settle():
        rollouts.start_now(rollout=ads(), actor=STAFF)
    assert refreshed(first).status == RolloutStatus.COMPLETED
    before = snapshot()
    batches = list(first.batches.all())
    assert len(batches) == 3

    with settle():
        for batch in batches:
            assert rollouts.run_batch(batch_id=batch.pk) == BatchStatus.DONE
        rollouts.tick()
    assert snapshot() == before

    # Even with the progress lost (every batch pending again, the phase running), the
    # step itself reaches nobody twice.
    RolloutBatch.objects.filter(phase=first).update(status=BatchStatus.PENDING)
    RolloutPhase.objects.filter(pk=first.pk).update(status=RolloutStatus.RUNNING)
    with settle():
        for batch in batches:
            assert rollouts.run_batch(batch_id=batch.pk) == BatchStatus.DONE

    assert snapshot() == before
    first.refresh_from_db()
    assert (first.status, first.total, first.processed) == (RolloutStatus.COMPLETED, 8, 8)


def test_the_tick_redispatches_a_batch_stuck_past_the_timeout(settings, settle, monkeypatch):
    first = only_ads_phase_one()
    for _ in range(7):
        SubjectFactory.create(country="BR")
    rollouts.start_phase(phase_id=first.pk, actor=STAFF)  # the messages are lost
    done, *stuck = refreshed(first).batches.order_by("lo_id")
    rollouts.run_batch(batch_id=done.pk)
    dispatched_at = refreshed(stuck[0]).dispatched_at
    sent: list[int] = []
    monkeypatch.setattr(rollouts, "_send", sent.append)

    rollouts.tick(now=dispatched_at + settings.ROLLOUT_BATCH_TIMEOUT - timedelta(seconds=1))
    assert sent == []

    late = dispatched_at + settings.ROLLOUT_BATCH_TIMEOUT + timedelta(seconds=1)
    assert rollouts.tick(now=late)["redispatched"] == 2
    assert sorted(sent) == sorted(b.pk for b in stuck)
    assert {refreshed(b).dispatched_at for b in stuck} == {late}

    monkeypatch.undo()  # this time the messages arrive
    with settle():
        rollouts.tick(now=late + settings.ROLLOUT_BATCH_TIMEOUT + timedelta(seconds=1))
    assert refreshed(first).status == RolloutStatus.COMPLETED
    assert set(Subject.objects.values_list("policy_version__label", flat=True)) == {"2025-06"}


def test_a_failing_batch_is_retried_then_marked_failed(settings, settle, monkeypatch):
    park(ads())  # a draft earlier version does not hold 2026-01 back
    for _ in range(7):
        SubjectFactory.create(country="BR")
    only = phase(linked())
    first_id = Subject.objects.order_by("pk")[0].pk
    original = reach.reach
    attempts: Counter[int] = Counter()

    def flaky(**kwargs: Any) -> reach.ReachResult:
        attempts[kwargs["lo"]] += 1
        if kwargs["lo"] == first_id:
            raise RuntimeError("disk full")
        return original(**kwargs)

    monkeypatch.setattr(reach, "reach", flaky)
    with settle():
        rollouts.tick()

    failed, *others = only.batches.order_by("lo_id")
    assert attempts[first_id] == settings.ROLLOUT_BATCH_MAX_ATTEMPTS
    assert (failed.status, failed.attempts) == (
        BatchStatus.FAILED,
        settings.ROLLOUT_BATCH_MAX_ATTEMPTS,
    )
    assert "disk full" in failed.error
    assert {b.status for b in others} == {BatchStatus.DONE}
    only.refresh_from_db()
    assert (only.status, only.total, only.processed, only.failed) == (
        RolloutStatus.FAILED,
        7,
        4,
        3,
    )
    assert refreshed(linked()).status == RolloutStatus.FAILED
    actions = RolloutAction.objects.filter(rollout=linked()).values_list("action", flat=True)
    assert {"phase_failed", "failed"} <= set(actions)
    # The three subjects of the failed batch stay where they were.
    assert Subject.objects.filter(policy_version__label="2024-01").count() == 3


# --- controls -----------------------------------------------------------------------------------


def test_pause_holds_the_pending_batches_and_resume_completes_the_phase(settle):
    first = only_ads_phase_one()
    for _ in range(7):
        SubjectFactory.create(country="BR")
    rollouts.start_now(rollout=ads(), actor=STAFF)
    done, *pending = refreshed(first).batches.order_by("lo_id")
    assert rollouts.run_batch(batch_id=done.pk) == BatchStatus.DONE

    rollouts.pause(rollout=ads(), actor=STAFF)

    assert refreshed(ads()).status == RolloutStatus.PAUSED
    assert refreshed(first).status == RolloutStatus.PAUSED
    assert {refreshed(b).status for b in pending} == {BatchStatus.PENDING}
    before = snapshot()
    assert rollouts.run_batch(batch_id=pending[0].pk) == "phase paused"
    late = timezone.now() + timedelta(days=1)
    assert rollouts.tick(now=late) == {"started": 0, "redispatched": 0, "closed": 0}
    assert snapshot() == before
    assert refreshed(pending[0]).status == BatchStatus.PENDING
    assert refreshed(first).processed == 3

    with settle():
        rollouts.resume(rollout=ads(), actor=STAFF)

    first.refresh_from_db()
    assert (first.status, first.processed, first.total) == (RolloutStatus.COMPLETED, 7, 7)
    assert refreshed(ads()).status == RolloutStatus.RUNNING  # phases 2 and 3 to come
    assert set(Subject.objects.values_list("policy_version__label", flat=True)) == {"2025-06"}


def test_cancel_drops_the_pending_batches_and_keeps_the_subjects_already_reached():
    first = only_ads_phase_one()
    for _ in range(7):
        SubjectFactory.create(country="BR")
    rollouts.start_now(rollout=ads(), actor=STAFF)
    done, *pending = refreshed(first).batches.order_by("lo_id")
    rollouts.run_batch(batch_id=done.pk)

    rollouts.cancel(rollout=ads(), actor=STAFF)

    assert refreshed(ads()).status == RolloutStatus.CANCELLED
    assert set(ads().phases.values_list("status", flat=True)) == {RolloutStatus.CANCELLED}
    assert {refreshed(b).status for b in pending} == {BatchStatus.CANCELLED}
    assert rollouts.run_batch(batch_id=pending[0].pk) == BatchStatus.CANCELLED
    reached = Subject.objects.filter(pk__gte=done.lo_id, pk__lt=done.hi_id)
    assert set(reached.values_list("policy_version__label", flat=True)) == {"2025-06"}
    assert PolicyNotice.objects.filter(subject__in=reached).count() == 3
    assert Subject.objects.filter(policy_version__label="2024-01").count() == 4
    assert rollouts.tick()["started"] == 0
    for control in (rollouts.pause, rollouts.resume, rollouts.cancel, rollouts.start_now):
        with pytest.raises(Conflict):
            control(rollout=ads(), actor=STAFF)


def test_start_now_starts_the_next_phase_whatever_its_date(settle):
    park(linked())
    postpone(*ads().phases.all())
    SubjectFactory.create(country="BR")
    SubjectFactory.create(country="DE")

    with settle():
        started = rollouts.start_now(rollout=ads(), actor=STAFF)
    assert started.position == 1
    assert refreshed(started).status == RolloutStatus.COMPLETED
    assert phase(ads(), 2).status == RolloutStatus.SCHEDULED

    with settle():
        assert rollouts.start_now(rollout=ads(), actor=STAFF).position == 2
        assert rollouts.start_now(rollout=ads(), actor=STAFF).position == 3

    assert refreshed(ads()).status == RolloutStatus.COMPLETED
    assert set(Subject.objects.values_list("policy_version__label", flat=True)) == {"2025-06"}
    with pytest.raises(Conflict, match="already started"):
        rollouts.start_now(rollout=ads(), actor=STAFF)
    for control in (rollouts.pause, rollouts.resume, rollouts.cancel):
        with pytest.raises(Conflict):
            control(rollout=ads(), actor=STAFF)


def test_starting_a_phase_marks_its_version_published(settle):
    park(linked())
    postpone(*ads().phases.all())
    PolicyVersion.objects.filter(pk=ads().version_id).update(published_at=None)

    with settle():
        rollouts.start_now(rollout=ads(), actor=STAFF)

    assert refreshed(ads().version).published_at is not None


def test_start_phase_refuses_a_phase_that_is_not_scheduled():
    first = only_ads_phase_one()
    rollouts.start_phase(phase_id=first.pk, actor=STAFF)

    with pytest.raises(Conflict, match="running"):
        rollouts.start_phase(phase_id=first.pk, actor=STAFF)


def test_pause_and_resume_of_a_rollout_that_has_not_started():
    rollouts.pause(rollout=ads(), actor=STAFF)
    assert rollouts.tick(now=JULY_2025)["started"] == 0
    with pytest.raises(Conflict):
        rollouts.pause(rollout=ads(), actor=STAFF)

    rollouts.resume(rollout=ads(), actor=STAFF)

    assert refreshed(ads()).status == RolloutStatus.SCHEDULED
    with pytest.raises(Conflict):
        rollouts.resume(rollout=ads(), actor=STAFF)
    assert rollouts.tick(now=JULY_2025)["started"] == 1


def test_every_control_is_recorded_with_its_actor(settle):
    first = only_ads_phase_one()
    for _ in range(4):
        SubjectFactory.create(country="BR")

    rollouts.dry_run(rollout=ads(), actor="staff:dora")
    rollouts.start_now(rollout=ads(), actor="staff:sam")
    rollouts.pause(rollout=ads(), actor="staff:sam")
    with settle():
        rollouts.resume(rollout=ads(), actor="service:policy-tool")
    rollouts.rollback_phase(phase=first, actor="staff:ro")
    rollouts.cancel(rollout=ads(), actor="staff:sam")

    actions = list(
        RolloutAction.objects.filter(rollout=ads())
        .order_by("id")
        .values_list("action", "actor", "phase__position")
    )
    assert actions == [
        ("dry_run", "staff:dora", None),
        ("phase_started", "staff:sam", 1),
        ("pause", "staff:sam", None),
        ("resume", "service:policy-tool", None),
        ("phase_completed", rollouts.ENGINE, 1),
        ("rollback", "staff:ro", 1),
        ("cancel", "staff:sam", None),
    ]
    started = RolloutAction.objects.get(rollout=ads(), action="phase_started")
    assert {k: started.detail[k] for k in ("batches", "subjects")} == {"batches": 2, "subjects": 4}
    assert set(started.detail["previous_versions"].values()) == {
        PolicyVersion.objects.get(label="2024-01").pk
    }


# --- versions arrive in order ------------------------------------------------------------------


def test_a_later_version_waits_for_an_earlier_versions_running_phase(settle):
    german = SubjectFactory.create(country="DE", birth_year=born(30))
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))
    japanese = SubjectFactory.create(country="JP", birth_year=born(30))

    assert rollouts.tick()["started"] == 3  # 2025-06 everywhere; 2026-01 waits

    assert phase(linked()).status == RolloutStatus.SCHEDULED
    with pytest.raises(Conflict, match="in order"):
        rollouts.start_now(rollout=linked(), actor=STAFF)
    assert rollouts.tick()["started"] == 0
    for batch in RolloutBatch.objects.filter(phase__rollout=ads()):
        rollouts.run_batch(batch_id=batch.pk)
    assert refreshed(ads()).status == RolloutStatus.COMPLETED
    assert {version_of(s) for s in (german, brazilian, japanese)} == {"2025-06"}

    with settle():
        assert rollouts.tick()["started"] == 1

    assert refreshed(linked()).status == RolloutStatus.COMPLETED
    for subject in (german, brazilian, japanese):
        assert version_of(subject) == "2026-01"
        labels = PolicyNotice.objects.filter(subject=subject).values_list("version__label")
        assert sorted(label for (label,) in labels) == ["2025-06", "2026-01"]
        assert state(subject, "ads_cross_account") == (False, Source.ROLLOUT_DEFAULT)
    # Each version's defaults came from its own phase.
    sources = ConsentEvent.objects.filter(subject=brazilian, rollout_phase__isnull=False)
    assert sorted(
        sources.values_list("purpose__key", "rollout_phase__rollout__version__label")
    ) == [
        ("ads_cross_account", "2026-01"),
        ("ads_data_sharing", "2025-06"),
        ("ads_personalization", "2025-06"),
    ]


def test_a_later_version_waits_for_an_earlier_phase_that_is_due_or_paused(settle):
    SubjectFactory.create(country="JP")
    postpone(phase(ads(), 1), phase(ads(), 2))
    # Phase 3 (the default rules) is due but not started: 2026-01 must wait for it.
    with pytest.raises(Conflict, match="in order"):
        rollouts.start_now(rollout=linked(), actor=STAFF)

    rollouts.start_now(rollout=ads(), actor=STAFF)  # phase 1, over other jurisdictions
    rollouts.start_phase(phase_id=phase(ads(), 3).pk, actor=STAFF)
    rollouts.pause(rollout=ads(), actor=STAFF)
    with pytest.raises(Conflict, match="in order"):
        rollouts.start_now(rollout=linked(), actor=STAFF)

    rollouts.cancel(rollout=ads(), actor=STAFF)  # a cancelled version holds nothing back
    with settle():
        rollouts.start_now(rollout=linked(), actor=STAFF)
    assert refreshed(linked()).status == RolloutStatus.COMPLETED
    assert set(Subject.objects.values_list("policy_version__label", flat=True)) == {"2026-01"}


def test_an_earlier_phase_that_is_not_due_yet_does_not_hold_a_later_version(settle):
    postpone(*ads().phases.all())
    japanese = SubjectFactory.create(country="JP", birth_year=born(30))

    with settle():
        rollouts.tick()

    assert refreshed(linked()).status == RolloutStatus.COMPLETED
    assert version_of(japanese) == "2026-01"
    # The versions in between come along: their purposes are live, with defaults.
    assert assert_states_follow_the_rules([japanese.pk]) == 5
    assert_one_notice_each([japanese.pk], since="2024-01", label="2026-01")
    assert decision_keys(notice(japanese, "2026-01")) == {
        "ads_personalization",
        "ads_data_sharing",
        "ads_cross_account",
    }


# --- dry run -----------------------------------------------------------------------------------


@pytest.fixture
def analytics_changed() -> None:
    """2025-06 also changes the terms of analytics, so a phase decides it again."""
    PolicyVersion.objects.get(label="2025-06").changed_purposes.add(
        Purpose.objects.get(key="analytics")
    )


def cast() -> dict[str, Subject]:
    people = {
        "br_plain": SubjectFactory.create(country="BR", birth_year=born(30)),
        "br_later": SubjectFactory.create(country="BR", birth_year=born(30)),
        "br_gpc": SubjectFactory.create(country="BR", birth_year=born(30)),
        "br_ack": SubjectFactory.create(country="BR", birth_year=born(30)),
        "br_teen": SubjectFactory.create(country="BR", birth_year=born(17)),
        "br_refuser": SubjectFactory.create(country="BR", birth_year=born(30)),
        "gb_granter": SubjectFactory.create(country="GB", birth_year=born(30)),
        "de_plain": SubjectFactory.create(country="DE", birth_year=born(30)),
    }
    signal_gpc(people["br_gpc"])
    choose(people["br_refuser"], "analytics", False)
    choose(people["gb_granter"], "analytics", True)
    return people


def test_a_dry_run_counts_subjects_and_changes_and_changes_nothing(analytics_changed):
    park(linked())
    cast()
    before = snapshot()
    versions = set(Jurisdiction.objects.values_list("code", "current_policy_version"))

    result = rollouts.dry_run(rollout=ads(), actor=STAFF)

    assert snapshot() == before
    assert set(Jurisdiction.objects.values_list("code", "current_policy_version")) == versions
    assert [(p["position"], p["status"], p["subjects"]) for p in result["phases"]] == [
        (1, RolloutStatus.SCHEDULED, 7),
        (2, RolloutStatus.SCHEDULED, 1),
        (3, RolloutStatus.SCHEDULED, 0),
    ]
    assert result["phases"][0]["jurisdictions"] == [
        {"code": "BR", "subjects": 6},
        {"code": "GB", "subjects": 1},
    ]
    assert result["phases"][1]["jurisdictions"] == [{"code": "DE", "subjects": 1}]
    assert result["phases"][2]["jurisdictions"] == []
    assert result["changes"] == [
        # Granted for the Brazilian adults (GPC refuses sharing), refused for the
        # teenager, the Briton and the German.
        {"purpose": "ads_data_sharing", "granted": 4, "refused": 4, "kept": 0},
        {"purpose": "ads_personalization", "granted": 5, "refused": 3, "kept": 0},
        # Only the British grant is asked again (material change, fresh decision);
        # defaults that stay the same and the Brazilian refusal are kept.
        {"purpose": "analytics", "granted": 0, "refused": 1, "kept": 7},
    ]
    stored = refreshed(ads())
    assert stored.dry_run == result
    assert stored.dry_run_at is not None
    assert RolloutAction.objects.get(rollout=ads(), action="dry_run").detail == {"subjects": 8}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_dry_run_neither_waits_for_nor_holds_up_a_choice_being_written():
    """A dry run only reads: a person's choice in progress (their subject row locked,
    as `services.record_choice` does) does not block it."""
    subject = SubjectFactory.create(country="BR")
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"] or None
    ) as other:
        other.execute("SELECT id FROM consent_subject WHERE id = %s FOR UPDATE", [subject.pk])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            result = rollouts.dry_run(rollout=ads(), actor=STAFF)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")

    assert result["phases"][0]["subjects"] == 1
    assert [c["granted"] for c in result["changes"]] == [1, 1]


def test_a_dry_run_agrees_with_the_rollout_it_previews(settle, analytics_changed):
    park(linked())
    cast()
    preview = rollouts.dry_run(rollout=ads(), actor=STAFF)
    events = ConsentEvent.objects.count()

    with settle():
        rollouts.tick()

    written = ConsentEvent.objects.filter(pk__gt=0).order_by("id")[events:]
    counts: Counter[tuple[str, bool]] = Counter(
        (e.purpose.key, e.granted) for e in written.select_related("purpose")
    )
    for change in preview["changes"]:
        assert counts[(change["purpose"], True)] == change["granted"], change
        assert counts[(change["purpose"], False)] == change["refused"], change
    after = rollouts.dry_run(rollout=ads(), actor=STAFF)
    assert [p["subjects"] for p in after["phases"]] == [0, 0, 0]
    assert after["changes"] == []


# --- rollback -----------------------------------------------------------------------------------


def test_rollback_reverts_untouched_defaults_and_keeps_later_choices(settle, analytics_changed):
    first = only_ads_phase_one()
    people = cast()
    with settle():
        rollouts.tick()
    assert refreshed(first).status == RolloutStatus.COMPLETED
    # The British grant of analytics was asked again: it fell back to the default.
    assert state(people["gb_granter"], "analytics") == (False, Source.ROLLOUT_DEFAULT)
    later_choice = choose(people["br_later"], "ads_personalization", False)
    services.resolve_notice(external_id=people["br_ack"].external_id, actor=TEST_ACTOR)
    reached = [name for name in people if name != "de_plain"]

    summary = rollouts.rollback_phase(phase=first, actor="staff:ro")

    # Reverted: 3 for the Briton, 2 for each of the 3 untouched Brazilian adults, 1 each
    # for the one who chose and the one with GPC; age rule and GPC refusals are no defaults.
    assert summary == {"reverted": 11, "subjects": 7, "notices_withdrawn": 6}
    assert refreshed(first).status == RolloutStatus.ROLLED_BACK
    for name in reached:
        assert version_of(people[name]) == "2024-01"
        assert reason(people[name], "ads_personalization") == DenialReason.NOT_LIVE
    for code in ("BR", "GB", "US", "IN"):
        assert Jurisdiction.objects.get(code=code).current_policy_version.label == "2024-01"
    # The previous value comes back in a new event.
    revert = ConsentEvent.objects.filter(
        subject=people["gb_granter"], purpose__key="analytics"
    ).latest("id")
    assert (revert.granted, revert.source, revert.policy_version.label) == (
        True,
        Source.ROLLOUT_DEFAULT,
        "2024-01",
    )
    assert "Rollback of phase 1 of 2025-06" in revert.reason
    assert revert.actor_id == "staff:ro"
    assert state(people["gb_granter"], "analytics")[0] is True
    assert state(people["br_plain"], "ads_personalization") == (False, Source.ROLLOUT_DEFAULT)
    # Kept: the explicit choice made after the phase, GPC, the age rule, the refusal.
    kept = ConsentState.objects.get(subject=people["br_later"], purpose__key="ads_personalization")
    assert (kept.event_id, kept.source) == (later_choice.event_id, Source.USER_APP)
    assert state(people["br_gpc"], "ads_data_sharing") == (False, Source.GPC)
    assert state(people["br_teen"], "ads_personalization") == (False, Source.AGE_RULE)
    assert state(people["br_refuser"], "analytics") == (False, Source.USER_APP)
    # Unresolved notices are withdrawn; the one already acknowledged stays.
    assert list(PolicyNotice.objects.values_list("subject_id", flat=True)) == [people["br_ack"].pk]
    assert version_of(people["de_plain"]) == "2024-01"
    with pytest.raises(Conflict):
        rollouts.rollback_phase(phase=first, actor="staff:ro")
    with pytest.raises(Conflict):
        rollouts.rollback_phase(phase=phase(ads(), 2), actor="staff:ro")


def test_rollback_returns_subjects_to_the_version_they_came_from(settle):
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))
    rollouts.cancel(rollout=ads(), actor=STAFF)
    with settle():
        rollouts.start_now(rollout=linked(), actor=STAFF)
    assert version_of(brazilian) == "2026-01"

    rollouts.rollback_phase(phase=phase(linked()), actor="staff:ro")

    assert version_of(brazilian) == "2024-01"
    assert Jurisdiction.objects.get(code="BR").current_policy_version.label == "2024-01"


def test_a_subject_reached_again_after_a_rollback_keeps_one_notice_and_decides_again(settle):
    first = only_ads_phase_one()
    returning = SubjectFactory.create(country="GB", birth_year=born(30))
    undecided = SubjectFactory.create(country="GB", birth_year=born(30))
    with settle():
        rollouts.tick()
    earlier = notice(returning, "2025-06")
    assert decision_keys(earlier) == set(ADS_PURPOSES)
    for key in ADS_PURPOSES:
        choose(returning, key, True)
    services.resolve_notice(external_id=returning.external_id, actor=TEST_ACTOR)
    rollouts.rollback_phase(phase=first, actor="staff:ro")
    # The withdrawn notice took its purposes with it; the resolved one kept its own.
    assert not PolicyNotice.objects.filter(subject=undecided).exists()
    assert set(NoticeDecisionPurpose.objects.values_list("policynotice_id", flat=True)) == {
        earlier.pk
    }
    newcomer = SubjectFactory.create(country="GB", birth_year=born(30))

    reached = services.publish_version_to_jurisdiction(
        version=PolicyVersion.objects.get(label="2025-06"),
        jurisdiction=Jurisdiction.objects.get(code="GB"),
    )

    # One call over a notice that exists and two that do not: the existing one is
    # reopened with the same purposes, not duplicated.
    assert reached == 3
    again = notice(returning, "2025-06")
    assert again.pk == earlier.pk
    assert (again.requires_decision, again.resolved_at) == (True, None)
    assert decision_keys(again) == set(ADS_PURPOSES)
    for subject in (undecided, newcomer):
        assert notice(subject, "2025-06").requires_decision
        assert decision_keys(notice(subject, "2025-06")) == set(ADS_PURPOSES)
    assert NoticeDecisionPurpose.objects.count() == 3 * len(ADS_PURPOSES)


# --- the REST API -----------------------------------------------------------------------------


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0].strip() == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


@pytest.fixture
def policy_reader(api_client):
    return api_client("policy:read", name="policy-dashboard")


def test_the_list_shows_every_rollout_with_its_phases(policy_reader):
    response = policy_reader.get(f"{API}/rollouts")

    assert response.status_code == 200, response.content
    body = response.json()
    assert [(r["version"], r["status"], len(r["phases"])) for r in body] == [
        ("2025-06", "scheduled", 3),
        ("2026-01", "scheduled", 1),
    ]
    first = body[0]["phases"][0]
    assert first["position"] == 1
    assert first["starts_at"].startswith("2025-06-17")
    assert {"BR", "GB", "IN", "US", "US-CA"} <= set(first["jurisdictions"])
    assert first["jurisdictions"] == sorted(first["jurisdictions"])
    assert (first["total"], first["processed"], first["failed"]) == (0, 0, 0)
    assert len(body[1]["phases"][0]["jurisdictions"]) == Jurisdiction.objects.count()


def test_the_list_costs_the_same_queries_whatever_the_number_of_rollouts(policy_reader):
    policy_reader.get(f"{API}/rollouts")  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as two:
        policy_reader.get(f"{API}/rollouts")
    version = PolicyVersion.objects.get(label="2026-01")
    for index in range(3):
        extra = Rollout.objects.create(version=version, name=f"extra {index}")
        extra_phase = RolloutPhase.objects.create(rollout=extra, position=1, starts_at=LATER)
        extra_phase.jurisdictions.set(Jurisdiction.objects.all()[:3])

    with CaptureQueriesContext(connection) as five:
        response = policy_reader.get(f"{API}/rollouts")

    assert len(response.json()) == 5
    assert len(five) == len(two)


def test_the_detail_shows_the_progress_of_each_phase(api_client, settle):
    first = only_ads_phase_one()
    for index in range(5):
        SubjectFactory.create(country=["BR", "GB"][index % 2])
    with settle():
        rollouts.tick()
    rollout_id = ads().pk

    response = api_client("policy:read").get(f"{API}/rollouts/{rollout_id}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["version"], body["status"]) == (rollout_id, "2025-06", "running")
    assert body["name"] == ads().name
    progress = [
        (p["position"], p["status"], p["total"], p["processed"], p["failed"])
        for p in body["phases"]
    ]
    assert progress == [
        (1, "completed", 5, 5, 0),
        (2, "scheduled", 0, 0, 0),
        (3, "scheduled", 0, 0, 0),
    ]
    assert body["phases"][0]["started_at"] is not None
    assert body["phases"][0]["completed_at"] is not None
    assert refreshed(first).status == RolloutStatus.COMPLETED


def test_an_unknown_rollout_is_a_404_problem(api_client):
    client = api_client("policy:read", "policy:write")

    assert_problem(client.get(f"{API}/rollouts/999999"), 404)
    assert_problem(client.post(f"{API}/rollouts/999999/dry-run"), 404)
    assert_problem(client.post(f"{API}/rollouts/999999/pause"), 404)


def test_a_dry_run_over_the_api_needs_only_policy_read(policy_reader):
    SubjectFactory.create(country="BR", birth_year=born(30))
    SubjectFactory.create(country="DE", birth_year=born(30))
    before = snapshot()

    response = policy_reader.post(f"{API}/rollouts/{ads().pk}/dry-run")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"computed_at", "phases", "changes"}
    assert [p["subjects"] for p in body["phases"]] == [1, 1, 0]
    assert body["phases"][0]["jurisdictions"] == [{"code": "BR", "subjects": 1}]
    assert body["changes"] == [
        {"purpose": "ads_data_sharing", "granted": 1, "refused": 1, "kept": 0},
        {"purpose": "ads_personalization", "granted": 1, "refused": 1, "kept": 0},
    ]
    assert snapshot() == before


def test_the_policy_tool_controls_a_rollout_over_the_api(policy_tool, settle):
    first = only_ads_phase_one()
    for _ in range(4):
        SubjectFactory.create(country="BR")
    url = f"{API}/rollouts/{ads().pk}"

    start = policy_tool.post(f"{url}/start")
    assert start.status_code == 200, start.content
    assert start.json()["status"] == "running"
    assert start.json()["phases"][0]["status"] == "running"
    assert start.json()["phases"][0]["total"] == 4

    pause = policy_tool.post(f"{url}/pause")
    assert pause.status_code == 200, pause.content
    assert pause.json()["status"] == "paused"
    assert pause.json()["phases"][0]["status"] == "paused"

    with settle():
        resume = policy_tool.post(f"{url}/resume")
    assert resume.status_code == 200, resume.content
    assert resume.json()["status"] == "running"
    detail = policy_tool.get(url).json()
    assert (detail["phases"][0]["status"], detail["phases"][0]["processed"]) == ("completed", 4)

    cancel = policy_tool.post(f"{url}/cancel")
    assert cancel.status_code == 200, cancel.content
    assert cancel.json()["status"] == "cancelled"
    assert [p["status"] for p in cancel.json()["phases"]] == ["completed", "cancelled", "cancelled"]
    assert refreshed(first).status == RolloutStatus.COMPLETED
    actors = set(RolloutAction.objects.filter(rollout=ads()).values_list("actor", flat=True))
    assert "service:policy-tool" in actors


@pytest.mark.parametrize(
    ("setup", "action"),
    [
        (None, "resume"),  # a scheduled rollout is not paused
        ("cancel", "pause"),
        ("cancel", "resume"),
        ("cancel", "cancel"),
        ("cancel", "start"),
        ("pause", "pause"),
    ],
)
def test_an_invalid_transition_is_a_409_problem(policy_tool, setup, action):
    if setup is not None:
        getattr(rollouts, setup)(rollout=ads(), actor=STAFF)
    status = refreshed(ads()).status

    response = policy_tool.post(f"{API}/rollouts/{ads().pk}/{action}")

    problem = assert_problem(response, 409)
    assert problem["type"].endswith("conflict")
    assert refreshed(ads()).status == status


def test_a_later_version_started_too_early_over_the_api_is_a_409_problem(policy_tool):
    response = policy_tool.post(f"{API}/rollouts/{linked().pk}/start")

    problem = assert_problem(response, 409)
    assert "in order" in problem["detail"]
    assert phase(linked()).status == RolloutStatus.SCHEDULED


def test_controls_need_policy_write(policy_reader):
    for action in ("start", "pause", "resume", "cancel"):
        response = policy_reader.post(f"{API}/rollouts/{ads().pk}/{action}")
        assert "policy:write" in assert_problem(response, 403)["detail"]
    assert refreshed(ads()).status == RolloutStatus.SCHEDULED
