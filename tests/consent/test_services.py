"""Behaviour of the consent services, checked through the consent check and the records.

Data is built through the services themselves (SubjectFactory registers, `publish`
makes a policy version live), so a test fails when the behaviour it names breaks.
"""

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from consent import selectors, services
from consent.choices import ActorType, DenialReason, Scope, Source
from consent.errors import AlreadyExists, Conflict, InvalidValue, Locked, NotFound
from consent.models import (
    ConsentEvent,
    ConsentState,
    DashboardLink,
    IdempotencyRecord,
    Jurisdiction,
    PolicyNotice,
    PolicyVersion,
    Purpose,
    ServiceAccount,
    ServiceToken,
    Subject,
)
from tests.factories import TEST_ACTOR, SubjectFactory, publish

pytestmark = pytest.mark.django_db

NON_ESSENTIAL_2025 = ["analytics", "ads_personalization", "ads_data_sharing"]
STAFF = services.Actor(ActorType.STAFF, "staff:alice")


# --- helpers --------------------------------------------------------------------------------


def born(age: int) -> int:
    """A birth year whose protective reading (the youngest possible age) is `age`."""
    return selectors.today().year - age - 1


def check(subject_or_id, purpose_key):
    external_id = getattr(subject_or_id, "external_id", subject_or_id)
    purpose = selectors.get_purpose(key=purpose_key)
    [result] = selectors.check_consent(purpose=purpose, external_ids=[external_id])
    return result


def reason(subject_or_id, purpose_key):
    """None when allowed, else the denial reason."""
    result = check(subject_or_id, purpose_key)
    assert result.allowed is (result.reason is None)
    return result.reason


def choose(subject, purpose_key, granted, *, source=Source.USER_APP, **kwargs):
    return services.record_choice(
        external_id=subject.external_id,
        purpose_key=purpose_key,
        granted=granted,
        source=source,
        actor=services.Actor(ActorType.SUBJECT, subject.external_id),
        **kwargs,
    )


def state(subject, purpose_key) -> ConsentState:
    return ConsentState.objects.select_related("event").get(
        subject_id=subject.pk, purpose__key=purpose_key
    )


def events(subject, purpose_key=None, **filters):
    qs = ConsentEvent.objects.filter(subject_id=subject.pk, **filters)
    if purpose_key is not None:
        qs = qs.filter(purpose__key=purpose_key)
    return list(qs.order_by("id"))


def refresh(subject) -> Subject:
    return Subject.objects.select_related("jurisdiction", "policy_version").get(pk=subject.pk)


# --- defaults per mechanism -------------------------------------------------------------------


def test_ads_purposes_are_not_live_before_their_version_reaches_the_subject():
    german = SubjectFactory.create(country="DE", birth_year=born(40))
    brazilian = SubjectFactory.create(country="BR", birth_year=born(40))

    for subject in (german, brazilian):
        assert reason(subject, "ads_personalization") == DenialReason.NOT_LIVE
        assert reason(subject, "ads_data_sharing") == DenialReason.NOT_LIVE
        assert not ConsentState.objects.filter(
            subject=subject, purpose__key__startswith="ads_"
        ).exists()
    with pytest.raises(Conflict):
        choose(german, "ads_personalization", True)
    assert reason(german, "ads_personalization") == DenialReason.NOT_LIVE


def test_publishing_one_jurisdiction_leaves_the_others_not_live():
    german = SubjectFactory.create(country="DE")
    brazilian = SubjectFactory.create(country="BR")

    publish("2025-06", "BR")

    assert reason(brazilian, "ads_personalization") is None
    assert reason(german, "ads_personalization") == DenialReason.NOT_LIVE


def test_an_eu_subject_is_denied_personalised_ads_until_they_say_yes():
    german = SubjectFactory.create(country="DE", birth_year=born(30))
    publish("2025-06", "DE")

    assert reason(german, "ads_personalization") == DenialReason.DENIED
    assert state(german, "ads_personalization").source == Source.ROLLOUT_DEFAULT

    choose(german, "ads_personalization", True)

    assert reason(german, "ads_personalization") is None
    assert reason(german, "ads_data_sharing") == DenialReason.DENIED


def test_a_brazilian_subject_is_granted_ads_by_default_once_live():
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))
    publish("2025-06", "BR")

    assert reason(brazilian, "ads_personalization") is None
    assert reason(brazilian, "ads_data_sharing") is None
    assert state(brazilian, "ads_personalization").source == Source.ROLLOUT_DEFAULT


def test_an_opt_out_default_can_be_turned_off():
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))
    publish("2025-06", "BR")

    choose(brazilian, "ads_data_sharing", False)

    assert reason(brazilian, "ads_data_sharing") == DenialReason.DENIED
    assert reason(brazilian, "ads_personalization") is None


def test_analytics_follows_the_ads_mechanism_of_the_jurisdiction_from_registration():
    assert reason(SubjectFactory.create(country="DE"), "analytics") == DenialReason.DENIED
    assert reason(SubjectFactory.create(country="BR"), "analytics") is None
    assert reason(SubjectFactory.create(country="US", subdivision="US-CA"), "analytics") is None


def test_a_subject_registered_after_the_publish_starts_on_the_new_version_with_defaults():
    publish("2025-06", "BR", "DE")

    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))
    german = SubjectFactory.create(country="DE", birth_year=born(30))

    assert brazilian.policy_version.label == "2025-06"
    assert reason(brazilian, "ads_personalization") is None
    assert reason(german, "ads_personalization") == DenialReason.DENIED
    assert not PolicyNotice.objects.filter(subject__in=[brazilian, german]).exists()


def test_an_unknown_subject_is_never_allowed():
    result = check("nobody-here", "service_delivery")
    assert (result.allowed, result.reason) == (False, DenialReason.UNKNOWN_SUBJECT)


# --- service delivery ---------------------------------------------------------------------------


def test_service_delivery_is_always_allowed_even_where_age_rules_block_everything_else():
    indian_minor = SubjectFactory.create(country="IN", birth_year=born(17))
    german = SubjectFactory.create(country="DE")

    assert reason(indian_minor, "service_delivery") is None
    assert reason(german, "service_delivery") is None
    assert reason(indian_minor, "analytics") == DenialReason.AGE_RESTRICTED


@pytest.mark.parametrize("granted", [False, True])
def test_service_delivery_cannot_be_changed(granted):
    subject = SubjectFactory.create(country="DE")
    before = events(subject)

    with pytest.raises(Locked) as excinfo:
        choose(subject, "service_delivery", granted)

    assert excinfo.value.field == "purpose"
    assert events(subject) == before
    assert state(subject, "service_delivery").granted is True
    assert reason(subject, "service_delivery") is None


def test_staff_cannot_change_service_delivery_either():
    subject = SubjectFactory.create(country="BR")
    with pytest.raises(Locked):
        choose(subject, "service_delivery", False, source=Source.STAFF, reason="asked by phone")


# --- age rules ------------------------------------------------------------------------------------


def test_a_15_year_old_californian_starts_with_ads_off_but_may_opt_in_themselves():
    teen = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(15))
    publish("2025-06", "US-CA")

    assert reason(teen, "ads_data_sharing") == DenialReason.DENIED
    assert reason(teen, "ads_personalization") == DenialReason.DENIED
    assert state(teen, "ads_data_sharing").source == Source.ROLLOUT_DEFAULT

    choose(teen, "ads_personalization", True)
    choose(teen, "ads_data_sharing", True)

    assert reason(teen, "ads_personalization") is None
    assert reason(teen, "ads_data_sharing") is None


def test_an_adult_californian_has_ads_on_by_default():
    adult = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(30))
    publish("2025-06", "US-CA")

    assert reason(adult, "ads_data_sharing") is None
    assert reason(adult, "ads_personalization") is None


def test_a_californian_of_unknown_age_has_ads_on_by_default():
    unknown_age = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=None)
    publish("2025-06", "US-CA")

    assert reason(unknown_age, "ads_data_sharing") is None


def test_a_17_year_old_in_india_is_age_restricted_for_every_non_essential_purpose():
    minor = SubjectFactory.create(country="IN", birth_year=born(17))
    publish("2025-06", "IN")

    for key in NON_ESSENTIAL_2025:
        assert reason(minor, key) == DenialReason.AGE_RESTRICTED, key
        before = events(minor, key)
        with pytest.raises(Locked) as excinfo:
            choose(minor, key, True)
        assert excinfo.value.field == "granted"
        assert events(minor, key) == before
        assert state(minor, key).granted is False
    views = {v.purpose.key: v for v in selectors.subject_consents(subject=refresh(minor))}
    assert {k: views[k].locked for k in NON_ESSENTIAL_2025} == dict.fromkeys(
        NON_ESSENTIAL_2025, "age_restricted"
    )


def test_an_indian_adult_may_opt_in():
    adult = SubjectFactory.create(country="IN", birth_year=born(18))
    publish("2025-06", "IN")

    assert reason(adult, "ads_personalization") == DenialReason.DENIED
    choose(adult, "ads_personalization", True)
    assert reason(adult, "ads_personalization") is None


def test_a_17_year_old_in_brazil_is_blocked_from_profiling_ads_but_not_from_analytics():
    minor = SubjectFactory.create(country="BR", birth_year=born(17))
    publish("2025-06", "BR")

    assert reason(minor, "ads_personalization") == DenialReason.AGE_RESTRICTED
    assert reason(minor, "ads_data_sharing") == DenialReason.AGE_RESTRICTED
    assert reason(minor, "analytics") is None
    assert state(minor, "ads_personalization").source == Source.AGE_RULE
    with pytest.raises(Locked):
        choose(minor, "ads_personalization", True)

    choose(minor, "analytics", False)
    assert reason(minor, "analytics") == DenialReason.DENIED


def test_an_age_restricted_subject_may_still_refuse():
    minor = SubjectFactory.create(country="BR", birth_year=born(17))
    publish("2025-06", "BR")

    choose(minor, "ads_personalization", False)

    assert state(minor, "ads_personalization").source == Source.USER_APP
    assert reason(minor, "ads_personalization") == DenialReason.AGE_RESTRICTED


# --- Global Privacy Control ---------------------------------------------------------------------


def californian_with_ads(age=30):
    subject = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(age))
    publish("2025-06", "US-CA")
    return subject


def gpc(subject):
    return services.apply_gpc(external_id=subject.external_id, actor=TEST_ACTOR)


def test_gpc_opts_out_of_sharing_and_is_recorded_as_its_own_source():
    subject = californian_with_ads()
    assert reason(subject, "ads_data_sharing") is None

    gpc(subject)

    [event] = events(subject, source=Source.GPC)
    assert (event.purpose.key, event.granted) == ("ads_data_sharing", False)
    assert state(subject, "ads_data_sharing").event_id == event.pk
    assert reason(subject, "ads_data_sharing") == DenialReason.GPC
    # Personalisation is not sale/sharing: GPC leaves it alone.
    assert reason(subject, "ads_personalization") is None
    assert refresh(subject).gpc_signalled_at is not None


def test_gpc_is_applied_only_once():
    subject = californian_with_ads()
    gpc(subject)
    before = events(subject)
    signalled_at = refresh(subject).gpc_signalled_at

    gpc(subject)

    assert events(subject) == before
    assert refresh(subject).gpc_signalled_at == signalled_at


def test_a_later_explicit_choice_wins_over_gpc_and_is_not_undone_by_gpc_again():
    subject = californian_with_ads()
    gpc(subject)

    choose(subject, "ads_data_sharing", True, source=Source.USER_WEB)
    assert reason(subject, "ads_data_sharing") is None

    gpc(subject)
    assert reason(subject, "ads_data_sharing") is None
    assert state(subject, "ads_data_sharing").source == Source.USER_WEB


def test_a_choice_sent_with_gpc_applies_gpc_first_and_the_choice_wins():
    subject = californian_with_ads()

    choose(subject, "ads_data_sharing", True, gpc=True)

    sources = [e.source for e in events(subject, "ads_data_sharing")]
    assert sources[-2:] == [Source.GPC, Source.USER_APP]
    assert reason(subject, "ads_data_sharing") is None
    assert refresh(subject).gpc_signalled_at is not None


def test_gpc_keeps_an_explicit_refusal_as_it_is():
    subject = californian_with_ads()
    choose(subject, "ads_data_sharing", False)

    gpc(subject)

    assert events(subject, source=Source.GPC) == []
    assert state(subject, "ads_data_sharing").source == Source.USER_APP
    assert reason(subject, "ads_data_sharing") == DenialReason.DENIED


def test_gpc_before_a_version_goes_live_makes_new_sharing_purposes_start_refused():
    subject = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(30))
    gpc(subject)
    assert events(subject, source=Source.GPC) == []  # nothing it applies to is live yet

    publish("2025-06", "US-CA")

    sharing = state(subject, "ads_data_sharing")
    assert (sharing.granted, sharing.source) == (False, Source.GPC)
    assert sharing.event.source == Source.GPC
    assert reason(subject, "ads_data_sharing") == DenialReason.GPC
    assert reason(subject, "ads_personalization") is None


# --- moving -------------------------------------------------------------------------------------


def move(subject, **attributes):
    return services.update_subject(external_id=subject.external_id, actor=TEST_ACTOR, **attributes)


def test_moving_from_california_to_germany_replaces_defaults_and_keeps_explicit_choices():
    publish("2025-06", "US-CA", "DE")
    subject = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(30))
    choose(subject, "ads_personalization", True)
    choose(subject, "analytics", False)
    kept = {key: state(subject, key).event_id for key in ("ads_personalization", "analytics")}
    last_before = events(subject)[-1].pk

    moved = move(subject, country="DE")

    assert (moved.country, moved.subdivision) == ("DE", "")
    assert refresh(subject).jurisdiction.code == "DE"
    new = [e for e in events(subject) if e.pk > last_before]
    assert sorted(e.purpose.key for e in new) == ["ads_data_sharing", "service_delivery"]
    assert {e.source for e in new} == {Source.JURISDICTION_CHANGE}
    assert {e.jurisdiction.code for e in new} == {"DE"}
    # The Californian opt-out default for sharing is now the German opt-in default.
    assert reason(subject, "ads_data_sharing") == DenialReason.DENIED
    assert state(subject, "ads_data_sharing").source == Source.JURISDICTION_CHANGE
    # Explicit choices are kept as they were.
    assert {key: state(subject, key).event_id for key in kept} == kept
    assert reason(subject, "ads_personalization") is None
    assert reason(subject, "analytics") == DenialReason.DENIED
    assert reason(subject, "service_delivery") is None


def test_moving_withdraws_an_explicit_grant_the_new_age_rules_forbid():
    publish("2025-06", "US-CA", "DE")
    minor = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(17))
    choose(minor, "ads_personalization", True)
    assert reason(minor, "ads_personalization") is None

    move(minor, country="DE")

    personalization = state(minor, "ads_personalization")
    assert (personalization.granted, personalization.source) == (
        False,
        Source.JURISDICTION_CHANGE,
    )
    assert reason(minor, "ads_personalization") == DenialReason.AGE_RESTRICTED


def test_a_sharing_purpose_that_goes_live_through_a_move_starts_refused_by_earlier_gpc():
    publish("2025-06", "US-CA")
    subject = SubjectFactory.create(country="DE", birth_year=born(30))
    gpc(subject)

    move(subject, country="US", subdivision="US-CA")

    sharing = state(subject, "ads_data_sharing")
    assert (sharing.granted, sharing.source) == (False, Source.GPC)
    assert reason(subject, "ads_data_sharing") == DenialReason.GPC
    assert state(subject, "ads_personalization").source == Source.JURISDICTION_CHANGE
    assert reason(subject, "ads_personalization") is None


def test_a_move_to_a_jurisdiction_behind_on_versions_waits_for_its_publish():
    subject = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(30))
    publish("2025-06", "US-CA")
    services.resolve_notice(external_id=subject.external_id, actor=TEST_ACTOR)
    choose(subject, "ads_personalization", True)

    move(subject, country="DE")

    assert refresh(subject).policy_version.label == "2024-01"
    assert reason(subject, "ads_personalization") == DenialReason.NOT_LIVE

    publish("2025-06", "DE")

    # Germany asks for a fresh decision on the material change: the Californian
    # grant does not carry over, and the subject is asked again.
    assert reason(subject, "ads_personalization") == DenialReason.DENIED
    notice = selectors.pending_notice(subject=refresh(subject))
    assert notice is not None
    assert notice.version.label == "2025-06"
    assert notice.requires_decision is True
    assert {p.key for p in notice.decision_purposes.all()} == {
        "ads_personalization",
        "ads_data_sharing",
    }
    with pytest.raises(Conflict):
        services.resolve_notice(external_id=subject.external_id, actor=TEST_ACTOR)
    choose(subject, "ads_personalization", True)
    choose(subject, "ads_data_sharing", False)
    assert services.resolve_notice(external_id=subject.external_id, actor=TEST_ACTOR)
    assert reason(subject, "ads_personalization") is None


def test_a_move_within_the_same_jurisdiction_writes_nothing():
    subject = SubjectFactory.create(country="DE", birth_year=born(30))
    before = events(subject)

    move(subject, language="de-DE")

    assert events(subject) == before
    assert refresh(subject).language == "de-DE"


def test_a_birth_year_that_makes_the_subject_a_minor_withdraws_a_forbidden_grant():
    subject = SubjectFactory.create(country="DE", birth_year=born(30))
    publish("2025-06", "DE")
    choose(subject, "ads_personalization", True)
    choose(subject, "analytics", True)
    last_before = events(subject)[-1].pk

    move(subject, birth_year=born(17))

    new = [e for e in events(subject) if e.pk > last_before]
    assert [(e.purpose.key, e.granted, e.source) for e in new] == [
        ("ads_personalization", False, Source.AGE_RULE)
    ]
    assert reason(subject, "ads_personalization") == DenialReason.AGE_RESTRICTED
    # Analytics is not profiling and 17 is above the German consent age: kept.
    assert state(subject, "analytics").source == Source.USER_APP
    assert reason(subject, "analytics") is None


# --- events and current state --------------------------------------------------------------------


def assert_states_point_at_last_events(subject):
    for consent in ConsentState.objects.filter(subject=subject).select_related("event"):
        last = ConsentEvent.objects.filter(subject=subject, purpose=consent.purpose_id).latest("id")
        assert consent.event_id == last.pk
        assert (consent.granted, consent.source) == (last.granted, last.source)


def test_registration_writes_one_event_per_live_purpose():
    subject = SubjectFactory.create(country="DE")

    assert sorted(e.purpose.key for e in events(subject)) == ["analytics", "service_delivery"]
    assert ConsentState.objects.filter(subject=subject).count() == 2
    assert_states_point_at_last_events(subject)


def test_every_change_writes_exactly_one_event_per_purpose_changed():
    subject = SubjectFactory.create(country="US", subdivision="US-CA", birth_year=born(30))
    assert len(events(subject)) == 2

    publish("2025-06", "US-CA")
    assert len(events(subject)) == 4
    assert_states_point_at_last_events(subject)

    choose(subject, "ads_personalization", False)
    [last] = events(subject)[4:]
    assert (last.purpose.key, last.granted, last.source) == (
        "ads_personalization",
        False,
        Source.USER_APP,
    )
    assert state(subject, "ads_personalization").event_id == last.pk

    gpc(subject)
    assert len(events(subject)) == 6
    choose(subject, "ads_personalization", True)
    choose(subject, "ads_personalization", True)
    assert len(events(subject)) == 8
    assert_states_point_at_last_events(subject)


def test_events_carry_their_proof_context():
    subject = californian_with_ads()
    version = PolicyVersion.objects.get(label="2025-06")
    proof = services.Proof(
        notice_version=version,
        language="en-US",
        ip_truncated=services.truncate_ip("203.0.113.77"),
        user_agent="ParleyApp/1.0",
    )

    choose(subject, "ads_data_sharing", False, proof=proof)

    event = state(subject, "ads_data_sharing").event
    assert event.notice_version == version
    assert (event.language, event.ip_truncated, event.user_agent) == (
        "en-US",
        "203.0.113.0/24",
        "ParleyApp/1.0",
    )
    assert (event.actor_type, event.actor_id) == (ActorType.SUBJECT, subject.external_id)
    assert (event.jurisdiction.code, event.policy_version.label) == ("US-CA", "2025-06")


# --- publishing policy versions ----------------------------------------------------------------


def test_publishing_is_idempotent():
    subjects = [SubjectFactory.create(country="DE") for _ in range(3)]
    SubjectFactory.create(country="BR")

    assert publish("2025-06", "DE") == 3
    event_count = ConsentEvent.objects.count()
    notice_count = PolicyNotice.objects.count()

    assert publish("2025-06", "DE") == 0
    assert ConsentEvent.objects.count() == event_count
    assert PolicyNotice.objects.count() == notice_count
    assert {refresh(s).policy_version.label for s in subjects} == {"2025-06"}
    assert Jurisdiction.objects.get(code="DE").current_policy_version.label == "2025-06"


def test_publishing_creates_one_notice_per_subject_asking_for_decisions_where_required():
    german = SubjectFactory.create(country="DE", birth_year=born(30))
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))

    publish("2025-06", "DE", "BR")

    [german_notice] = PolicyNotice.objects.filter(subject=german)
    assert german_notice.version.label == "2025-06"
    assert german_notice.requires_decision is True
    assert {p.key for p in german_notice.decision_purposes.all()} == {
        "ads_personalization",
        "ads_data_sharing",
    }
    [brazilian_notice] = PolicyNotice.objects.filter(subject=brazilian)
    assert brazilian_notice.requires_decision is False
    assert not brazilian_notice.decision_purposes.exists()
    assert selectors.pending_notice(subject=brazilian) == brazilian_notice


def test_a_minor_is_not_asked_to_decide_on_what_an_age_rule_forbids():
    minor = SubjectFactory.create(country="DE", birth_year=born(17))

    publish("2025-06", "DE")

    notice = PolicyNotice.objects.get(subject=minor)
    assert notice.requires_decision is False
    assert not notice.decision_purposes.exists()
    assert reason(minor, "ads_personalization") == DenialReason.AGE_RESTRICTED


def test_publishing_keeps_explicit_choices_made_earlier():
    german = SubjectFactory.create(country="DE", birth_year=born(30))
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))
    choose(german, "analytics", True)
    choose(brazilian, "analytics", False)
    publish("2025-06", "DE", "BR")
    choose(brazilian, "ads_personalization", False)
    choose(brazilian, "ads_data_sharing", True)
    kept = {
        (s.pk, key): state(s, key).event_id
        for s, key in [
            (german, "analytics"),
            (brazilian, "analytics"),
            (brazilian, "ads_personalization"),
            (brazilian, "ads_data_sharing"),
        ]
    }
    # 2026-01 also changes the terms of purposes with explicit choices.
    linked = PolicyVersion.objects.get(label="2026-01")
    linked.changed_purposes.add(
        *Purpose.objects.filter(key__in=["ads_personalization", "ads_data_sharing"])
    )

    publish("2026-01", "BR", "DE")

    now_kept = {
        (pk, key): ConsentState.objects.get(subject_id=pk, purpose__key=key).event_id
        for pk, key in kept
    }
    assert now_kept == kept
    assert reason(german, "analytics") is None
    assert reason(brazilian, "analytics") == DenialReason.DENIED
    assert reason(brazilian, "ads_personalization") == DenialReason.DENIED
    assert reason(brazilian, "ads_data_sharing") is None
    assert reason(brazilian, "ads_cross_account") == DenialReason.DENIED


def test_a_fresh_decision_keeps_an_earlier_explicit_refusal():
    german = SubjectFactory.create(country="DE", birth_year=born(30))
    publish("2025-06", "DE")
    choose(german, "ads_data_sharing", False)
    refusal = state(german, "ads_data_sharing").event_id
    linked = PolicyVersion.objects.get(label="2026-01")
    linked.changed_purposes.add(Purpose.objects.get(key="ads_data_sharing"))

    publish("2026-01", "DE")

    assert state(german, "ads_data_sharing").event_id == refusal
    notice = PolicyNotice.objects.get(subject=german, version=linked)
    assert {p.key for p in notice.decision_purposes.all()} == {
        "ads_data_sharing",
        "ads_cross_account",
    }


def test_a_notice_does_not_wait_for_a_purpose_that_has_become_locked():
    german = SubjectFactory.create(country="DE", birth_year=born(30))
    publish("2025-06", "DE")
    notice = selectors.pending_notice(subject=german)
    assert notice is not None
    assert {p.key for p in notice.decision_purposes.all()} == {
        "ads_personalization",
        "ads_data_sharing",
    }
    with pytest.raises(Conflict):
        services.resolve_notice(external_id=german.external_id, actor=TEST_ACTOR)

    # The birth year is corrected: a 12-year-old cannot consent to either in Germany.
    services.update_subject(external_id=german.external_id, birth_year=born(12), actor=TEST_ACTOR)

    assert services.resolve_notice(external_id=german.external_id, actor=TEST_ACTOR)
    assert selectors.pending_notice(subject=refresh(german)) is None


def test_a_notice_asking_for_decisions_is_resolved_only_after_them():
    german = SubjectFactory.create(country="DE", birth_year=born(30))
    publish("2025-06", "DE")

    with pytest.raises(Conflict) as excinfo:
        services.resolve_notice(external_id=german.external_id, actor=TEST_ACTOR)
    assert "ads_personalization" in excinfo.value.detail
    assert "ads_data_sharing" in excinfo.value.detail

    choose(german, "ads_personalization", False)
    with pytest.raises(Conflict) as excinfo:
        services.resolve_notice(external_id=german.external_id, actor=TEST_ACTOR)
    assert "ads_personalization" not in excinfo.value.detail
    assert "ads_data_sharing" in excinfo.value.detail
    assert selectors.pending_notice(subject=german) is not None

    choose(german, "ads_data_sharing", True)
    notice = services.resolve_notice(external_id=german.external_id, actor=TEST_ACTOR)

    assert notice.resolved_at is not None
    assert selectors.pending_notice(subject=german) is None
    with pytest.raises(NotFound):
        services.resolve_notice(external_id=german.external_id, actor=TEST_ACTOR)


def test_a_notice_without_decisions_is_resolved_by_acknowledging_it():
    brazilian = SubjectFactory.create(country="BR", birth_year=born(30))
    publish("2025-06", "BR")

    notice = services.resolve_notice(external_id=brazilian.external_id, actor=TEST_ACTOR)

    assert notice.resolved_at is not None
    assert selectors.pending_notice(subject=brazilian) is None


# --- erasure ------------------------------------------------------------------------------------


def test_erasure_withdraws_everything_and_leaves_an_anonymous_tombstone():
    subject = SubjectFactory.create(external_id="erase-me", country="DE", birth_year=born(30))
    publish("2025-06", "DE")
    choose(subject, "ads_personalization", True)
    history = events(subject)
    purposes_with_state = set(
        ConsentState.objects.filter(subject=subject).values_list("purpose__key", flat=True)
    )

    services.erase_subject(external_id="erase-me", actor=TEST_ACTOR)

    tombstone = refresh(subject)
    assert tombstone.external_id != "erase-me"
    assert tombstone.birth_year is None
    assert tombstone.erased_at is not None
    erasures = events(subject, source=Source.ERASURE)
    assert {e.purpose.key for e in erasures} == purposes_with_state
    assert len(erasures) == len(purposes_with_state)
    assert not any(e.granted for e in erasures)
    assert events(subject)[: len(history)] == history  # the history is kept
    assert not PolicyNotice.objects.filter(subject=subject).exists()
    with pytest.raises(NotFound):
        selectors.get_subject(external_id="erase-me")
    assert check("erase-me", "service_delivery").reason == DenialReason.UNKNOWN_SUBJECT
    # Nor does the tombstone's own id answer as a subject.
    assert check(tombstone.external_id, "service_delivery").reason == DenialReason.UNKNOWN_SUBJECT
    with pytest.raises(NotFound):
        selectors.get_subject(external_id=tombstone.external_id)
    with pytest.raises(NotFound):
        choose(subject, "analytics", True)


def test_an_erased_external_id_can_register_again_as_a_new_subject():
    first = SubjectFactory.create(external_id="comes-back", country="BR")
    services.erase_subject(external_id="comes-back", actor=TEST_ACTOR)

    second = SubjectFactory.create(external_id="comes-back", country="BR")

    assert second.pk != first.pk
    assert reason("comes-back", "analytics") is None
    assert selectors.get_subject(external_id="comes-back").pk == second.pk


def test_two_erasures_get_different_random_ids():
    a = SubjectFactory.create(country="BR")
    b = SubjectFactory.create(country="BR")
    services.erase_subject(external_id=a.external_id, actor=TEST_ACTOR)
    services.erase_subject(external_id=b.external_id, actor=TEST_ACTOR)

    assert refresh(a).external_id != refresh(b).external_id
    assert a.external_id not in refresh(a).external_id


# --- staff ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("why", ["", "   "])
def test_a_staff_change_without_a_reason_is_refused(why):
    subject = SubjectFactory.create(country="BR")
    before = events(subject)

    with pytest.raises(InvalidValue) as excinfo:
        services.record_choice(
            external_id=subject.external_id,
            purpose_key="analytics",
            granted=False,
            source=Source.STAFF,
            actor=STAFF,
            reason=why,
        )

    assert excinfo.value.field == "reason"
    assert events(subject) == before


def test_a_staff_change_with_a_reason_is_recorded_as_an_explicit_choice():
    subject = SubjectFactory.create(country="BR")

    services.record_choice(
        external_id=subject.external_id,
        purpose_key="analytics",
        granted=False,
        source=Source.STAFF,
        actor=STAFF,
        reason="Ticket 123: asked by email",
    )

    event = state(subject, "analytics").event
    assert (event.source, event.reason) == (Source.STAFF, "Ticket 123: asked by email")
    assert (event.actor_type, event.actor_id) == (ActorType.STAFF, "staff:alice")
    assert reason(subject, "analytics") == DenialReason.DENIED


@pytest.mark.parametrize(
    "source", [Source.GPC, Source.ROLLOUT_DEFAULT, Source.ERASURE, Source.AGE_RULE]
)
def test_only_explicit_sources_can_record_a_choice(source):
    subject = SubjectFactory.create(country="BR")
    with pytest.raises(ValueError, match="explicit"):
        choose(subject, "analytics", False, source=source)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"country": "XX"}, "country"),
        ({"country": "DEU"}, "country"),
        ({"country": "US", "subdivision": "DE-BY"}, "subdivision"),
        ({"country": "US", "subdivision": "US-ZZ"}, "subdivision"),
        ({"country": "DE", "language": "english!"}, "language"),
        ({"country": "DE", "language": "e"}, "language"),
        ({"country": "DE", "birth_year": 1899}, "birth_year"),
        ({"country": "DE", "birth_year": timezone.now().year + 1}, "birth_year"),
        ({"country": "DE", "external_id": "a/b"}, "external_id"),
        ({"country": "DE", "external_id": ""}, "external_id"),
        ({"country": "DE", "external_id": "x" * 65}, "external_id"),
        ({"country": "DE", "external_id": "with space"}, "external_id"),
    ],
)
def test_invalid_registrations_are_refused_naming_the_field(attributes, field):
    attributes = {"external_id": "valid-id", **attributes}
    with pytest.raises(InvalidValue) as excinfo:
        services.register_subject(actor=TEST_ACTOR, **attributes)

    assert excinfo.value.field == field
    assert not Subject.objects.exists()
    assert not ConsentEvent.objects.exists()


def test_valid_codes_are_normalised():
    subject = SubjectFactory.create(country="us", subdivision="us-ca", language="es-419")

    assert (subject.country, subject.subdivision) == ("US", "US-CA")
    assert subject.jurisdiction.code == "US-CA"


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"country": "ZZ"}, "country"),
        ({"subdivision": "DE-BY"}, "subdivision"),
        ({"subdivision": "US-ZZ"}, "subdivision"),
        ({"language": "not a tag"}, "language"),
        ({"birth_year": 1800}, "birth_year"),
    ],
)
def test_invalid_updates_are_refused_naming_the_field(attributes, field):
    subject = SubjectFactory.create(country="US", subdivision="US-CA")
    before = events(subject)

    with pytest.raises(InvalidValue) as excinfo:
        move(subject, **attributes)

    assert excinfo.value.field == field
    assert (refresh(subject).country, refresh(subject).subdivision) == ("US", "US-CA")
    assert events(subject) == before


def test_registering_an_existing_external_id_is_refused():
    SubjectFactory.create(external_id="taken", country="DE")

    with pytest.raises(AlreadyExists) as excinfo:
        SubjectFactory.create(external_id="taken", country="BR")

    assert excinfo.value.field == "external_id"
    assert Subject.objects.get(external_id="taken").country == "DE"


def test_jurisdiction_falls_back_from_subdivision_to_country_to_default():
    assert SubjectFactory.create(country="US", subdivision="US-CA").jurisdiction.code == "US-CA"
    assert SubjectFactory.create(country="US", subdivision="US-WA").jurisdiction.code == "US"
    assert SubjectFactory.create(country="US").jurisdiction.code == "US"
    assert SubjectFactory.create(country="JP").jurisdiction.code == "DEFAULT"


# --- bulk consent check -------------------------------------------------------------------------


def test_the_bulk_check_answers_in_input_order_with_unknown_subjects_denied():
    brazilian = SubjectFactory.create(country="BR")
    german = SubjectFactory.create(country="DE")
    erased = SubjectFactory.create(country="BR")
    services.erase_subject(external_id=erased.external_id, actor=TEST_ACTOR)
    purpose = selectors.get_purpose(key="analytics")
    asked = [german.external_id, "ghost", brazilian.external_id, erased.external_id]
    asked.append(german.external_id)

    results = selectors.check_consent(purpose=purpose, external_ids=asked)

    assert [(r.subject, r.allowed, r.reason) for r in results] == [
        (german.external_id, False, DenialReason.DENIED),
        ("ghost", False, DenialReason.UNKNOWN_SUBJECT),
        (brazilian.external_id, True, None),
        (erased.external_id, False, DenialReason.UNKNOWN_SUBJECT),
        (german.external_id, False, DenialReason.DENIED),
    ]


def test_the_check_by_primary_key_answers_as_the_check_by_external_id():
    brazilian = SubjectFactory.create(country="BR")
    german = SubjectFactory.create(country="DE", birth_year=1990)
    teen = SubjectFactory.create(country="BR", birth_year=2014)
    erased = SubjectFactory.create(country="BR")
    erased_id = erased.external_id
    services.erase_subject(external_id=erased_id, actor=TEST_ACTOR)
    subjects = {
        german.external_id: german.pk,
        brazilian.external_id: brazilian.pk,
        teen.external_id: teen.pk,
        erased_id: erased.pk,  # its key now names the tombstone: never found under it
    }
    for key in ("analytics", "ads_personalization", "service_delivery"):
        purpose = selectors.get_purpose(key=key)

        by_key = selectors.check_consent_of_locked(purpose=purpose, subjects=subjects)

        assert by_key == selectors.check_consent(purpose=purpose, external_ids=list(subjects))
        assert [r.subject for r in by_key] == list(subjects)
        assert by_key[-1] == (erased_id, False, DenialReason.UNKNOWN_SUBJECT)
    analytics = selectors.get_purpose(key="analytics")
    assert [
        r.allowed for r in selectors.check_consent_of_locked(purpose=analytics, subjects=subjects)
    ] == [False, True, False, False]


def test_the_bulk_check_refuses_more_than_1000_subjects():
    purpose = selectors.get_purpose(key="analytics")
    with pytest.raises(ValueError, match="1000"):
        selectors.check_consent(purpose=purpose, external_ids=[f"u{i}" for i in range(1001)])


def register_many(count, prefix):
    """Alternates Brazilians (analytics on) and Germans (analytics off)."""
    ids = []
    for i in range(count):
        external_id = f"{prefix}-{i}"
        services.register_subject(
            external_id=external_id, country="BR" if i % 2 else "DE", actor=TEST_ACTOR
        )
        ids.append(external_id)
    return ids


def test_the_bulk_check_runs_in_a_constant_number_of_queries(django_assert_num_queries):
    purpose = selectors.get_purpose(key="analytics")
    few = register_many(10, "few")
    many = register_many(1000, "many")

    with django_assert_num_queries(1):
        few_results = selectors.check_consent(purpose=purpose, external_ids=few)
    # Reversed, with unknown ids in between, to show the answers follow the question.
    asked = list(reversed(many))
    asked[1] = "unknown-1"
    asked[500] = "unknown-2"
    with django_assert_num_queries(1):
        many_results = selectors.check_consent(purpose=purpose, external_ids=asked)

    assert [r.allowed for r in few_results] == [i % 2 == 1 for i in range(10)]
    assert [r.subject for r in many_results] == asked
    for external_id, result in zip(asked, many_results, strict=True):
        if external_id.startswith("unknown"):
            assert result.reason == DenialReason.UNKNOWN_SUBJECT
        else:
            brazilian = int(external_id.rsplit("-", 1)[1]) % 2 == 1
            assert result.allowed is brazilian
            assert result.reason == (None if brazilian else DenialReason.DENIED)


# --- receipts -----------------------------------------------------------------------------------


def test_a_receipt_for_a_user_choice_has_the_kantara_fields_and_is_explicit():
    subject = californian_with_ads()
    choose(subject, "ads_data_sharing", False, source=Source.USER_WEB)
    event = selectors.get_event(
        subject=refresh(subject), event_id=state(subject, "ads_data_sharing").event_id
    )

    receipt: dict[str, Any] = selectors.consent_receipt(event=event)

    assert receipt["version"] == "KI-CR-v1.1.0"
    assert receipt["jurisdiction"] == "US-CA"
    assert receipt["consentTimestamp"] == int(event.occurred_at.timestamp())
    assert isinstance(receipt["consentTimestamp"], int)
    assert receipt["collectionMethod"] == str(Source.USER_WEB.label)
    assert uuid.UUID(receipt["consentReceiptID"])
    assert receipt["piiPrincipalId"] == subject.external_id
    assert receipt["piiControllers"] == [settings.CONSENT_RECEIPT_CONTROLLER]
    assert receipt["piiControllers"][0]["piiController"]
    assert receipt["policyUrl"] == settings.POLICY_URL_TEMPLATE.format(label="2025-06")
    [service] = receipt["services"]
    [purpose] = service["purposes"]
    assert purpose["consentType"] == "EXPLICIT"
    assert purpose["purposeCategory"] == ["ads_data_sharing"]
    assert set(purpose["piiCategory"]) == {"updates_activity", "ad_interactions"}
    assert purpose["thirdPartyDisclosure"] is True
    assert receipt["parley"]["granted"] is False
    assert receipt["parley"]["source"] == Source.USER_WEB


def test_a_receipt_for_a_default_is_implicit_and_each_receipt_has_its_own_id():
    subject = SubjectFactory.create(country="BR")
    default_event = state(subject, "analytics").event
    choose(subject, "analytics", False)
    choice_event = state(subject, "analytics").event

    default_receipt: dict[str, Any] = selectors.consent_receipt(event=default_event)
    choice_receipt: dict[str, Any] = selectors.consent_receipt(event=choice_event)

    assert default_receipt["services"][0]["purposes"][0]["consentType"] == "IMPLICIT"
    assert choice_receipt["services"][0]["purposes"][0]["consentType"] == "EXPLICIT"
    assert default_receipt["consentReceiptID"] != choice_receipt["consentReceiptID"]
    assert selectors.consent_receipt(event=default_event) == default_receipt


def test_an_event_of_another_subject_is_not_found():
    mine = SubjectFactory.create(country="BR")
    theirs = SubjectFactory.create(country="BR")
    their_event = events(theirs)[0]

    with pytest.raises(NotFound):
        selectors.get_event(subject=mine, event_id=their_event.pk)


# --- dashboard view -----------------------------------------------------------------------------


def test_subject_consents_show_what_is_explicit_and_what_is_locked():
    subject = SubjectFactory.create(country="DE", birth_year=born(30))
    choose(subject, "analytics", True)

    views = {v.purpose.key: v for v in selectors.subject_consents(subject=refresh(subject))}

    assert list(views) == ["service_delivery", "analytics"]
    assert (views["service_delivery"].locked, views["service_delivery"].explicit) == (
        "essential",
        False,
    )
    assert (views["analytics"].allowed, views["analytics"].explicit) == (True, True)
    assert views["analytics"].locked is None


# --- truncate_ip ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        (" 198.51.100.1 ", "198.51.100.0/24"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::/48"),
        ("2001:db8::1", "2001:db8::/48"),
        ("not-an-ip", ""),
        ("203.0.113.300", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_truncate_ip_keeps_only_the_network(raw, expected):
    assert services.truncate_ip(raw) == expected


# --- housekeeping ---------------------------------------------------------------------------------


def test_purge_expired_deletes_old_keys_and_dead_links_but_keeps_live_ones():
    subject = SubjectFactory.create(country="BR")
    account = ServiceAccount.objects.create(name="app-backend")
    now = timezone.now()
    old_key = IdempotencyRecord.objects.create(
        account=account,
        key="old",
        fingerprint="f",
        response_status=201,
        response_body={},
        created_at=now - settings.IDEMPOTENCY_KEY_TTL - timedelta(minutes=1),
    )
    fresh_key = IdempotencyRecord.objects.create(
        account=account,
        key="fresh",
        fingerprint="f",
        response_status=201,
        response_body={},
        created_at=now - settings.IDEMPOTENCY_KEY_TTL + timedelta(minutes=5),
    )

    def link(name, *, expires_in, used=False):
        return DashboardLink.objects.create(
            subject=subject,
            token_hash=hashlib.sha256(name.encode()).hexdigest(),
            expires_at=now + expires_in,
            used_at=now if used else None,
        )

    expired = link("expired", expires_in=-timedelta(seconds=1))
    used = link("used", expires_in=timedelta(minutes=4), used=True)
    live = link("live", expires_in=timedelta(minutes=4))

    counts = services.purge_expired(now=now)

    assert counts == {"idempotency_records": 1, "dashboard_links": 2}
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [fresh_key.pk]
    assert list(DashboardLink.objects.values_list("pk", flat=True)) == [live.pk]
    assert not IdempotencyRecord.objects.filter(pk=old_key.pk).exists()
    assert not DashboardLink.objects.filter(pk__in=[expired.pk, used.pk]).exists()
    assert services.purge_expired(now=now) == {"idempotency_records": 0, "dashboard_links": 0}


@pytest.mark.parametrize("scopes", [["consent:read", "consent:admin"], ["everything"], []])
def test_create_service_token_rejects_unknown_or_missing_scopes(scopes):
    with pytest.raises(InvalidValue) as excinfo:
        services.create_service_token(name="partner", scopes=scopes)

    assert excinfo.value.field == "scopes"
    assert not ServiceToken.objects.exists()
    assert not ServiceAccount.objects.filter(name="partner").exists()


def test_create_service_token_stores_only_a_hash():
    token, raw = services.create_service_token(
        name="ad-server", scopes=[Scope.CONSENT_READ, "ads:decide", "consent:read"]
    )

    stored = ServiceToken.objects.get(pk=token.pk)
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert stored.scopes == ["ads:decide", "consent:read"]
    assert stored.prefix == raw[: len(stored.prefix)]
    assert len(stored.prefix) < len(raw)
    stored_values = ServiceToken.objects.filter(pk=token.pk).values().get()
    assert not any(raw in str(value) for value in stored_values.values())
