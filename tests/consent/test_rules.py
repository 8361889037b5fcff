"""The pure consent rules (consent/rules.py): ages, mechanisms, defaults and the check."""

from datetime import date

import pytest

from consent import rules
from consent.choices import DenialReason, Mechanism, Source

TODAY = date(2026, 11, 22)

# Rule sets shaped like the seeded jurisdictions, written out independently.
CALIFORNIA = rules.AgeRules(
    consent_age=13, opt_in_below_age=16, minor_age=18, profiling_ads_to_minors_banned=False
)
GERMANY = rules.AgeRules(
    consent_age=16, opt_in_below_age=None, minor_age=18, profiling_ads_to_minors_banned=True
)
BRAZIL = rules.AgeRules(
    consent_age=12, opt_in_below_age=None, minor_age=18, profiling_ads_to_minors_banned=True
)
INDIA = rules.AgeRules(
    consent_age=18, opt_in_below_age=None, minor_age=18, profiling_ads_to_minors_banned=True
)

ESSENTIAL = rules.PurposeFlags(essential=True, gpc_applies=False, profiling=False)
ANALYTICS = rules.PurposeFlags(essential=False, gpc_applies=False, profiling=False)
PERSONALIZATION = rules.PurposeFlags(essential=False, gpc_applies=False, profiling=True)
SHARING = rules.PurposeFlags(essential=False, gpc_applies=True, profiling=True)


# --- lowest_age -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth_year", "today", "expected"),
    [
        # Born 2009: 16 or 17 during 2026; the protective reading is the younger.
        (2009, TODAY, 16),
        (2009, date(2026, 1, 1), 16),
        (2009, date(2026, 12, 31), 16),
        (2009, date(2027, 1, 1), 17),
        (1990, TODAY, 35),
        (2025, TODAY, 0),
        # Born this year: could be zero days old, never a negative age.
        (2026, TODAY, 0),
    ],
)
def test_lowest_age_is_the_youngest_the_person_can_be(birth_year, today, expected):
    assert rules.lowest_age(birth_year, today) == expected


def test_lowest_age_is_unknown_without_a_birth_year():
    assert rules.lowest_age(None, TODAY) is None


# --- age_blocked ----------------------------------------------------------------------------


@pytest.mark.parametrize("age", [0, 5, 12, 17, 40, None])
@pytest.mark.parametrize("age_rules", [CALIFORNIA, GERMANY, BRAZIL, INDIA])
def test_an_essential_purpose_is_never_age_blocked(age, age_rules):
    assert not rules.age_blocked(age=age, rules=age_rules, purpose=ESSENTIAL)


@pytest.mark.parametrize("purpose", [ANALYTICS, PERSONALIZATION, SHARING])
@pytest.mark.parametrize("age_rules", [CALIFORNIA, GERMANY, BRAZIL, INDIA])
def test_an_unknown_age_blocks_nothing(purpose, age_rules):
    assert not rules.age_blocked(age=None, rules=age_rules, purpose=purpose)


@pytest.mark.parametrize("purpose", [ANALYTICS, PERSONALIZATION, SHARING])
def test_below_the_consent_age_every_non_essential_purpose_is_blocked(purpose):
    assert rules.age_blocked(age=17, rules=INDIA, purpose=purpose)
    assert rules.age_blocked(age=15, rules=GERMANY, purpose=purpose)
    assert rules.age_blocked(age=12, rules=CALIFORNIA, purpose=purpose)


def test_the_consent_age_itself_is_not_blocked_by_the_consent_age():
    assert not rules.age_blocked(age=13, rules=CALIFORNIA, purpose=SHARING)
    assert not rules.age_blocked(age=18, rules=INDIA, purpose=SHARING)
    assert not rules.age_blocked(age=16, rules=GERMANY, purpose=ANALYTICS)


def test_a_minor_is_blocked_from_profiling_where_profiling_ads_to_minors_are_banned():
    assert rules.age_blocked(age=17, rules=BRAZIL, purpose=PERSONALIZATION)
    assert rules.age_blocked(age=17, rules=BRAZIL, purpose=SHARING)
    assert rules.age_blocked(age=16, rules=GERMANY, purpose=PERSONALIZATION)


def test_a_minor_may_still_use_non_profiling_purposes_where_profiling_is_banned():
    assert not rules.age_blocked(age=17, rules=BRAZIL, purpose=ANALYTICS)
    assert not rules.age_blocked(age=16, rules=GERMANY, purpose=ANALYTICS)


def test_an_adult_is_not_blocked_from_profiling_where_it_is_banned_for_minors():
    assert not rules.age_blocked(age=18, rules=BRAZIL, purpose=PERSONALIZATION)
    assert not rules.age_blocked(age=18, rules=GERMANY, purpose=SHARING)


def test_a_minor_may_be_profiled_where_the_jurisdiction_does_not_ban_it():
    assert not rules.age_blocked(age=15, rules=CALIFORNIA, purpose=PERSONALIZATION)
    assert not rules.age_blocked(age=17, rules=CALIFORNIA, purpose=SHARING)


# --- effective_mechanism ----------------------------------------------------------------------


@pytest.mark.parametrize("age", [0, 13, 15])
def test_opt_out_becomes_opt_in_below_the_opt_in_age(age):
    assert (
        rules.effective_mechanism(mechanism=Mechanism.OPT_OUT, age=age, rules=CALIFORNIA)
        == Mechanism.OPT_IN
    )


@pytest.mark.parametrize("age", [16, 17, 40, None])
def test_opt_out_stays_opt_out_from_the_opt_in_age_or_when_the_age_is_unknown(age):
    assert (
        rules.effective_mechanism(mechanism=Mechanism.OPT_OUT, age=age, rules=CALIFORNIA)
        == Mechanism.OPT_OUT
    )


def test_opt_out_stays_opt_out_for_minors_where_there_is_no_opt_in_age():
    assert (
        rules.effective_mechanism(mechanism=Mechanism.OPT_OUT, age=13, rules=BRAZIL)
        == Mechanism.OPT_OUT
    )


@pytest.mark.parametrize(
    "mechanism", [Mechanism.OPT_IN, Mechanism.ALWAYS_ON, Mechanism.UNAVAILABLE]
)
def test_only_opt_out_is_changed_by_the_opt_in_age(mechanism):
    assert rules.effective_mechanism(mechanism=mechanism, age=14, rules=CALIFORNIA) == mechanism


# --- default_decision -------------------------------------------------------------------------


def default(mechanism, *, age=40, age_rules=CALIFORNIA, purpose=ANALYTICS, gpc=False):
    return rules.default_decision(
        mechanism=mechanism, age=age, rules=age_rules, purpose=purpose, gpc_signalled=gpc
    )


def test_opt_in_defaults_to_refused():
    assert default(Mechanism.OPT_IN) == (False, Source.ROLLOUT_DEFAULT)


def test_opt_out_defaults_to_granted():
    assert default(Mechanism.OPT_OUT) == (True, Source.ROLLOUT_DEFAULT)


def test_always_on_defaults_to_granted_even_for_a_young_child_with_gpc():
    assert default(Mechanism.ALWAYS_ON, age=5, age_rules=INDIA, purpose=ESSENTIAL, gpc=True) == (
        True,
        Source.ROLLOUT_DEFAULT,
    )


def test_unavailable_defaults_to_refused():
    assert default(Mechanism.UNAVAILABLE) == (False, Source.ROLLOUT_DEFAULT)


def test_opt_out_below_the_opt_in_age_defaults_to_refused():
    assert default(Mechanism.OPT_OUT, age=15, purpose=PERSONALIZATION) == (
        False,
        Source.ROLLOUT_DEFAULT,
    )


def test_an_age_rule_refuses_by_default_and_says_so():
    assert default(Mechanism.OPT_OUT, age=17, age_rules=BRAZIL, purpose=SHARING) == (
        False,
        Source.AGE_RULE,
    )
    assert default(Mechanism.OPT_IN, age=17, age_rules=INDIA, purpose=ANALYTICS) == (
        False,
        Source.AGE_RULE,
    )


def test_gpc_refuses_a_sharing_purpose_by_default_and_says_so():
    assert default(Mechanism.OPT_OUT, purpose=SHARING, gpc=True) == (False, Source.GPC)


def test_gpc_does_not_touch_a_purpose_it_does_not_apply_to():
    assert default(Mechanism.OPT_OUT, purpose=PERSONALIZATION, gpc=True) == (
        True,
        Source.ROLLOUT_DEFAULT,
    )


def test_an_age_rule_is_named_before_gpc():
    assert default(Mechanism.OPT_OUT, age=17, age_rules=BRAZIL, purpose=SHARING, gpc=True) == (
        False,
        Source.AGE_RULE,
    )


# --- is_live ------------------------------------------------------------------------------------


def test_a_purpose_is_live_once_its_version_has_reached_the_subject():
    assert rules.is_live(
        introduced_label="2025-06", subject_version_label="2025-06", mechanism=Mechanism.OPT_IN
    )
    assert rules.is_live(
        introduced_label="2025-06", subject_version_label="2026-01", mechanism=Mechanism.OPT_OUT
    )


def test_a_purpose_is_not_live_before_its_version_reaches_the_subject():
    assert not rules.is_live(
        introduced_label="2025-06", subject_version_label="2024-01", mechanism=Mechanism.OPT_OUT
    )


def test_a_purpose_is_not_live_where_the_jurisdiction_does_not_offer_it():
    assert not rules.is_live(
        introduced_label="2024-01", subject_version_label="2026-01", mechanism=None
    )
    assert not rules.is_live(
        introduced_label="2024-01",
        subject_version_label="2026-01",
        mechanism=Mechanism.UNAVAILABLE,
    )


# --- check ----------------------------------------------------------------------------------------


def check(
    *,
    live=True,
    mechanism=Mechanism.OPT_OUT,
    blocked=False,
    granted=True,
    source=Source.ROLLOUT_DEFAULT,
):
    return rules.check(
        live=live,
        mechanism=mechanism,
        blocked_by_age=blocked,
        state_granted=granted,
        state_source=source,
    )


def test_a_granted_live_purpose_is_allowed():
    assert check() is None
    assert check(mechanism=Mechanism.OPT_IN, source=Source.USER_APP) is None


def test_a_refused_purpose_is_denied():
    assert check(granted=False) == DenialReason.DENIED
    assert check(granted=False, source=Source.USER_WEB) == DenialReason.DENIED


def test_a_purpose_without_a_decision_is_denied():
    assert check(granted=None, source=None) == DenialReason.DENIED


def test_a_purpose_refused_by_gpc_says_gpc():
    assert check(granted=False, source=Source.GPC) == DenialReason.GPC


def test_an_age_blocked_purpose_is_age_restricted_even_when_granted():
    assert check(blocked=True, granted=True, source=Source.USER_APP) == DenialReason.AGE_RESTRICTED


def test_an_essential_purpose_is_allowed_whatever_the_state():
    assert check(mechanism=Mechanism.ALWAYS_ON, granted=False, source=Source.ERASURE) is None
    assert check(mechanism=Mechanism.ALWAYS_ON, granted=None, source=None) is None


def test_not_live_comes_before_everything():
    assert check(live=False) == DenialReason.NOT_LIVE
    assert check(live=False, mechanism=Mechanism.ALWAYS_ON) == DenialReason.NOT_LIVE
    assert (
        check(live=False, blocked=True, granted=False, source=Source.GPC) == DenialReason.NOT_LIVE
    )


def test_an_essential_purpose_is_allowed_before_any_age_rule():
    assert check(mechanism=Mechanism.ALWAYS_ON, blocked=True) is None


def test_an_age_rule_comes_before_gpc_and_a_plain_refusal():
    assert check(blocked=True, granted=False, source=Source.GPC) == DenialReason.AGE_RESTRICTED
    assert check(blocked=True, granted=False) == DenialReason.AGE_RESTRICTED


def test_a_later_explicit_grant_wins_over_gpc():
    assert check(granted=True, source=Source.USER_WEB) is None
