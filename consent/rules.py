"""The pure rules of consent: ages, defaults and the check, free of database access.

Services (writes) and selectors (reads) both decide through these functions, so a
default applied at registration and the answer of a consent check cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from consent.choices import DenialReason, Mechanism, Source


@dataclass(frozen=True)
class AgeRules:
    consent_age: int
    opt_in_below_age: int | None
    minor_age: int
    profiling_ads_to_minors_banned: bool


@dataclass(frozen=True)
class PurposeFlags:
    essential: bool
    gpc_applies: bool
    profiling: bool


def lowest_age(birth_year: int | None, today: date) -> int | None:
    """The youngest the person can be: only the birth year is known, so a person born
    in 2009 is treated as 16 throughout 2026 (the protective reading)."""
    if birth_year is None:
        return None
    return max(today.year - birth_year - 1, 0)


def age_blocked(*, age: int | None, rules: AgeRules, purpose: PurposeFlags) -> bool:
    """True when an age rule forbids the purpose, whatever the person chose.

    An unknown age blocks nothing: the rules apply to people known to be minors.
    """
    if purpose.essential or age is None:
        return False
    if age < rules.consent_age:
        return True
    return purpose.profiling and rules.profiling_ads_to_minors_banned and age < rules.minor_age


def effective_mechanism(*, mechanism: str, age: int | None, rules: AgeRules) -> str:
    """Opt-out becomes opt-in below the jurisdiction's opt-in age (e.g. California, 16)."""
    if (
        mechanism == Mechanism.OPT_OUT
        and age is not None
        and rules.opt_in_below_age is not None
        and age < rules.opt_in_below_age
    ):
        return Mechanism.OPT_IN
    return mechanism


def default_decision(
    *,
    mechanism: str,
    age: int | None,
    rules: AgeRules,
    purpose: PurposeFlags,
    gpc_signalled: bool,
) -> tuple[bool, Source]:
    """What a subject gets when they have not chosen: (granted, source)."""
    if mechanism == Mechanism.ALWAYS_ON:
        return True, Source.ROLLOUT_DEFAULT
    if age_blocked(age=age, rules=rules, purpose=purpose):
        return False, Source.AGE_RULE
    if purpose.gpc_applies and gpc_signalled:
        return False, Source.GPC
    granted = effective_mechanism(mechanism=mechanism, age=age, rules=rules) == Mechanism.OPT_OUT
    return granted, Source.ROLLOUT_DEFAULT


def is_live(*, introduced_label: str, subject_version_label: str, mechanism: str | None) -> bool:
    """The purpose's version has reached the subject and the jurisdiction offers it."""
    return (
        mechanism is not None
        and mechanism != Mechanism.UNAVAILABLE
        and introduced_label <= subject_version_label
    )


def check(
    *,
    live: bool,
    mechanism: str | None,
    blocked_by_age: bool,
    state_granted: bool | None,
    state_source: str | None,
) -> DenialReason | None:
    """The consent check: None when allowed, else the reason for the denial."""
    if not live:
        return DenialReason.NOT_LIVE
    if mechanism == Mechanism.ALWAYS_ON:
        return None
    if blocked_by_age:
        return DenialReason.AGE_RESTRICTED
    if state_granted:
        return None
    if state_source == Source.GPC:
        return DenialReason.GPC
    return DenialReason.DENIED
