"""The reference data loaded by consent/migrations/0003_reference_data.py.

The expectations below are written out independently from the migration (from
shared/facts/jurisdictions.md and the seed plan), so a wrong value in the migration
makes a test fail.
"""

import importlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from django.apps import apps as global_apps
from django.db.models import Count

from consent.choices import FORBIDDEN_CATEGORY_KEYS, Mechanism, Region, RolloutStatus
from consent.models import (
    Jurisdiction,
    JurisdictionRule,
    MetadataCategory,
    PolicyVersion,
    Purpose,
    Rollout,
    RolloutPhase,
)

pytestmark = pytest.mark.django_db

EU = [
    "AT",
    "BE",
    "BG",
    "HR",
    "CY",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "GR",
    "HU",
    "IE",
    "IT",
    "LV",
    "LT",
    "LU",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SK",
    "SI",
    "ES",
    "SE",
]
EEA_NON_EU = ["IS", "LI", "NO"]
US_STATES = [
    "US-CA",
    "US-CO",
    "US-CT",
    "US-TX",
    "US-VA",
    "US-DE",
    "US-MD",
    "US-MN",
    "US-MT",
    "US-NE",
    "US-NH",
    "US-NJ",
    "US-OR",
]
UNIVERSAL_OPT_OUT_STATES = ["US-DE", "US-MD", "US-MN", "US-MT", "US-NE", "US-NH", "US-NJ", "US-OR"]
SEA = ["SG", "ID", "TH", "VN", "PH", "MY"]
AFRICA = ["NG", "ZA", "KE"]
ALL_CODES = {
    *EU,
    *EEA_NON_EU,
    "CH",
    "GB",
    "BR",
    "IN",
    "US",
    *US_STATES,
    *SEA,
    *AFRICA,
    "DEFAULT",
}

EU_RESEARCHED_AGES = {
    "AT": 14,
    "BE": 13,
    "DK": 13,
    "FI": 13,
    "SE": 13,
    "CZ": 15,
    "FR": 15,
    "IT": 14,
    "ES": 14,
    "IE": 16,
    "NL": 16,
    "SK": 16,
}

PURPOSE_KEYS = [
    "service_delivery",
    "analytics",
    "ads_personalization",
    "ads_data_sharing",
    "ads_cross_account",
]

OPT_IN, OPT_OUT, ALWAYS_ON = Mechanism.OPT_IN, Mechanism.OPT_OUT, Mechanism.ALWAYS_ON


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def expected_region(code):
    if code in EU or code in EEA_NON_EU or code == "CH":
        return Region.EU_EEA
    if code == "US" or code.startswith("US-"):
        return Region.US
    return {
        "GB": Region.UK,
        "BR": Region.LATAM,
        "IN": Region.SOUTH_ASIA,
        "DEFAULT": Region.OTHER,
        **dict.fromkeys(SEA, Region.SOUTH_EAST_ASIA),
        **dict.fromkeys(AFRICA, Region.AFRICA),
    }[code]


def expected_ads_mechanism(code):
    if code == "US" or code.startswith("US-") or code in {"BR", "SG", "NG"}:
        return OPT_OUT
    return OPT_IN


# (consent_age, opt_in_below_age, minor_age, profiling_banned, gpc_required,
#  material_change_requires_decision, deadline_days, extension_days)
NON_EU_EXPECTED = {
    "CH": (18, None, 18, True, False, True, 30, 60),
    "GB": (13, None, 18, False, False, True, 30, 60),
    "BR": (12, None, 18, True, False, False, 15, 0),
    "IN": (18, None, 18, True, False, True, 90, 0),
    "US-CA": (13, 16, 18, False, True, False, 45, 45),
    "US-CO": (13, 18, 18, False, True, True, 45, 45),
    "US-CT": (13, None, 18, True, True, False, 45, 0),
    "US-TX": (13, None, 18, False, True, False, 45, 0),
    "US-VA": (13, None, 18, False, False, False, 45, 45),
    **dict.fromkeys(UNIVERSAL_OPT_OUT_STATES, (13, None, 18, False, True, False, 45, 0)),
    "US": (13, None, 18, False, False, False, 45, 0),
    "SG": (13, None, 18, False, False, True, 30, 0),
    "ID": (18, None, 18, False, False, False, 3, 0),
    "TH": (20, None, 20, False, False, True, 30, 0),
    "VN": (18, None, 18, False, False, True, 3, 0),
    "PH": (18, None, 18, False, False, True, 30, 0),
    "MY": (18, None, 18, False, False, True, 21, 14),
    "NG": (18, None, 18, False, False, True, 30, 0),
    "ZA": (18, None, 18, False, False, True, 30, 0),
    "KE": (18, None, 18, False, False, True, 30, 0),
    "DEFAULT": (18, None, 18, True, False, True, 30, 0),
}


def expected_row(code):
    if code in EU or code in EEA_NON_EU:
        return (EU_RESEARCHED_AGES.get(code, 16), None, 18, True, False, True, 30, 60)
    return NON_EU_EXPECTED[code]


def actual_row(j):
    return (
        j.consent_age,
        j.opt_in_below_age,
        j.minor_age,
        j.profiling_ads_to_minors_banned,
        j.gpc_required,
        j.material_change_requires_decision,
        j.request_deadline_days,
        j.request_deadline_extension_days,
    )


# --- counts --------------------------------------------------------------------------


def test_counts():
    assert MetadataCategory.objects.count() == 9
    assert PolicyVersion.objects.count() == 3
    assert Purpose.objects.count() == 5
    assert Jurisdiction.objects.count() == 58
    assert len(ALL_CODES) == 58
    assert JurisdictionRule.objects.count() == 58 * 5
    assert Rollout.objects.count() == 2
    assert RolloutPhase.objects.count() == 4


# --- metadata categories -------------------------------------------------------------


def test_categories_are_exactly_the_seeded_metadata_and_never_content():
    keys = set(MetadataCategory.objects.values_list("key", flat=True))
    assert keys == {
        "message_timing",
        "contact_info",
        "updates_activity",
        "coarse_location",
        "device_language",
        "age_band",
        "ad_interactions",
        "accounts_center",
        "app_usage",
    }
    assert not keys & FORBIDDEN_CATEGORY_KEYS
    for category in MetadataCategory.objects.all():
        assert category.name.strip(), category.key
        assert category.description.strip(), category.key
    assert "content" in MetadataCategory.objects.get(key="message_timing").description


# --- policy versions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "title", "material", "published_at"),
    [
        ("2024-01", "Baseline privacy policy", False, utc(2024, 1, 1)),
        ("2025-06", "Ads and paid features in the Updates tab", True, utc(2025, 6, 1)),
        ("2026-01", "Linked accounts and multi-device premium", True, utc(2026, 1, 5)),
    ],
)
def test_policy_versions(label, title, material, published_at):
    version = PolicyVersion.objects.get(label=label)
    assert version.title == title
    assert version.material is material
    assert version.published_at == published_at
    assert version.body.strip()
    assert "end-to-end encrypted" in version.summary_of_changes


# --- purposes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "categories", "introduced_in", "essential", "gpc_applies", "profiling", "order"),
    [
        ("service_delivery", {"message_timing", "contact_info"}, "2024-01", True, False, False, 10),
        ("analytics", {"app_usage", "message_timing"}, "2024-01", False, False, False, 20),
        (
            "ads_personalization",
            {"updates_activity", "coarse_location", "device_language", "age_band"},
            "2025-06",
            False,
            False,
            True,
            30,
        ),
        (
            "ads_data_sharing",
            {"updates_activity", "ad_interactions"},
            "2025-06",
            False,
            True,
            True,
            40,
        ),
        ("ads_cross_account", {"accounts_center"}, "2026-01", False, True, True, 50),
    ],
)
def test_purposes(key, categories, introduced_in, essential, gpc_applies, profiling, order):
    purpose = Purpose.objects.get(key=key)
    assert set(purpose.categories.values_list("key", flat=True)) == categories
    assert purpose.introduced_in.label == introduced_in
    assert purpose.essential is essential
    assert purpose.gpc_applies is gpc_applies
    assert purpose.profiling is profiling
    assert purpose.display_order == order
    assert purpose.name.strip()
    assert purpose.description.strip()


def test_purposes_in_display_order():
    assert list(Purpose.objects.values_list("key", flat=True)) == PURPOSE_KEYS


# --- jurisdictions -------------------------------------------------------------------


def test_jurisdiction_codes_kinds_and_regions():
    jurisdictions = {j.code: j for j in Jurisdiction.objects.all()}
    assert set(jurisdictions) == ALL_CODES
    for code, j in jurisdictions.items():
        assert j.region == expected_region(code), code
        if code == "DEFAULT":
            assert j.kind == "default"
        elif code.startswith("US-"):
            assert j.kind == "subdivision"
        else:
            assert j.kind == "country", code
        assert j.name.strip(), code
        assert j.law.strip(), code
        assert j.notes.strip(), code


def test_every_jurisdiction_starts_on_the_baseline():
    assert set(Jurisdiction.objects.values_list("current_policy_version__label", flat=True)) == {
        "2024-01"
    }


@pytest.mark.parametrize("code", sorted(ALL_CODES))
def test_jurisdiction_fields(code):
    assert actual_row(Jurisdiction.objects.get(code=code)) == expected_row(code)


def test_minor_age_never_below_consent_age():
    for j in Jurisdiction.objects.all():
        assert j.minor_age >= j.consent_age, j.code


def test_gpc_required_exactly_in_the_listed_us_states():
    required = set(Jurisdiction.objects.filter(gpc_required=True).values_list("code", flat=True))
    assert required == set(US_STATES) - {"US-VA"}


def test_profiling_ads_to_minors_banned_set():
    banned = set(
        Jurisdiction.objects.filter(profiling_ads_to_minors_banned=True).values_list(
            "code", flat=True
        )
    )
    assert banned == {*EU, *EEA_NON_EU, "CH", "BR", "IN", "US-CT", "DEFAULT"}


def test_opt_in_below_age_only_in_california_and_colorado():
    rows = dict(
        Jurisdiction.objects.filter(opt_in_below_age__isnull=False).values_list(
            "code", "opt_in_below_age"
        )
    )
    assert rows == {"US-CA": 16, "US-CO": 18}


def test_eu_laws_and_member_states():
    for code in [*EU, *EEA_NON_EU]:
        j = Jurisdiction.objects.get(code=code)
        assert "GDPR" in j.law
        assert "DSA" in j.law


def test_eu_states_without_a_researched_age_say_the_gdpr_default_was_applied():
    for code in [*EU, *EEA_NON_EU]:
        notes = Jurisdiction.objects.get(code=code).notes
        if code in EU_RESEARCHED_AGES:
            assert "not in the researched facts" not in notes, code
        else:
            assert "not in the researched facts" in notes, code
            assert "GDPR default" in notes, code


def test_switzerland_is_flagged_as_not_researched():
    ch = Jurisdiction.objects.get(code="CH")
    assert "not in the researched facts" in ch.notes
    assert "protective default" in ch.notes


def test_specific_facts_per_region():
    gb = Jurisdiction.objects.get(code="GB")
    assert "Children's Code" in gb.notes
    assert "PECR" in gb.law

    br = Jurisdiction.objects.get(code="BR")
    assert "LGPD" in br.law
    assert "ECA Digital" in br.law
    assert "unverified" in br.notes

    india = Jurisdiction.objects.get(code="IN")
    assert "DPDP" in india.law
    assert "s.9(3)" in india.notes
    assert "unverified" in india.notes

    ca = Jurisdiction.objects.get(code="US-CA")
    assert "CCPA" in ca.law
    assert "7025" in ca.notes
    assert "15 business days" in ca.notes

    ct = Jurisdiction.objects.get(code="US-CT")
    assert "1 Jul 2026" in ct.notes
    assert "≈" in ct.notes

    th = Jurisdiction.objects.get(code="TH")
    assert "PDPA 2019" in th.law
    assert "s.19" in th.notes

    vn = Jurisdiction.objects.get(code="VN")
    assert "91/2025" in vn.law
    assert "unverified" in vn.notes

    za = Jurisdiction.objects.get(code="ZA")
    assert "POPIA" in za.law
    assert "s.69" in za.notes

    ng = Jurisdiction.objects.get(code="NG")
    assert "NDPA" in ng.law


@pytest.mark.parametrize(
    "code", ["IN", "US-CA", "US-TX", "SG", "ID", "TH", "VN", "PH", "MY", "NG", "KE"]
)
def test_uncertain_facts_are_flagged_in_notes(code):
    notes = Jurisdiction.objects.get(code=code).notes
    assert "unverified" in notes or "≈" in notes


# --- jurisdiction rules --------------------------------------------------------------


def test_exactly_one_rule_per_jurisdiction_and_purpose():
    pairs = Counter(JurisdictionRule.objects.values_list("jurisdiction__code", "purpose__key"))
    assert set(pairs) == {(code, key) for code in ALL_CODES for key in PURPOSE_KEYS}
    assert set(pairs.values()) == {1}
    per_jurisdiction = Jurisdiction.objects.annotate(n=Count("rules")).values_list("n", flat=True)
    assert set(per_jurisdiction) == {5}


def test_rule_mechanisms():
    mechanisms = {
        (code, key): mechanism
        for code, key, mechanism in JurisdictionRule.objects.values_list(
            "jurisdiction__code", "purpose__key", "mechanism"
        )
    }
    for code in ALL_CODES:
        ads = expected_ads_mechanism(code)
        assert mechanisms[code, "service_delivery"] == ALWAYS_ON, code
        assert mechanisms[code, "analytics"] == ads, code
        assert mechanisms[code, "ads_personalization"] == ads, code
        assert mechanisms[code, "ads_data_sharing"] == ads, code
        assert mechanisms[code, "ads_cross_account"] == OPT_IN, code


def test_always_on_only_for_essential_purposes():
    always_on = JurisdictionRule.objects.filter(mechanism=ALWAYS_ON)
    assert set(always_on.values_list("purpose__key", flat=True)) == {"service_delivery"}
    assert not JurisdictionRule.objects.filter(purpose__essential=False, mechanism=ALWAYS_ON)


@pytest.mark.parametrize(
    ("code", "mechanism"),
    [
        ("DE", OPT_IN),
        ("CH", OPT_IN),
        ("GB", OPT_IN),
        ("BR", OPT_OUT),
        ("IN", OPT_IN),
        ("US-CA", OPT_OUT),
        ("US", OPT_OUT),
        ("SG", OPT_OUT),
        ("ID", OPT_IN),
        ("NG", OPT_OUT),
        ("ZA", OPT_IN),
        ("KE", OPT_IN),
        ("DEFAULT", OPT_IN),
    ],
)
def test_targeted_ads_mechanism_spot_checks(code, mechanism):
    rule = JurisdictionRule.objects.get(jurisdiction__code=code, purpose__key="ads_data_sharing")
    assert rule.mechanism == mechanism


# --- rollouts ------------------------------------------------------------------------


def phase_codes(phase):
    return set(phase.jurisdictions.values_list("code", flat=True))


def test_ads_rollout_phases():
    rollout = Rollout.objects.get(version__label="2025-06")
    assert rollout.name == "2025-06 Ads and paid features — phased"
    assert rollout.status == RolloutStatus.SCHEDULED
    phases = list(rollout.phases.order_by("position"))
    assert [p.position for p in phases] == [1, 2, 3]
    assert [p.starts_at for p in phases] == [
        utc(2025, 6, 17),
        utc(2025, 9, 1),
        utc(2026, 1, 15),
    ]
    assert {p.status for p in phases} == {RolloutStatus.SCHEDULED}
    assert phase_codes(phases[0]) == {"US", *US_STATES, "BR", "IN", "GB"}
    assert phase_codes(phases[1]) == {*EU, *EEA_NON_EU, "CH", *SEA, *AFRICA}
    assert phase_codes(phases[2]) == {"DEFAULT"}


def test_ads_rollout_covers_every_jurisdiction_exactly_once():
    codes = RolloutPhase.objects.filter(rollout__version__label="2025-06").values_list(
        "jurisdictions__code", flat=True
    )
    counts = Counter(codes)
    assert set(counts) == ALL_CODES
    assert set(counts.values()) == {1}


def test_linked_accounts_rollout_is_one_phase_everywhere():
    rollout = Rollout.objects.get(version__label="2026-01")
    assert rollout.name == "2026-01 Linked accounts — everywhere"
    assert rollout.status == RolloutStatus.SCHEDULED
    (phase,) = rollout.phases.all()
    assert phase.position == 1
    assert phase.starts_at == utc(2026, 1, 15)
    assert phase.status == RolloutStatus.SCHEDULED
    assert phase_codes(phase) == ALL_CODES


def test_no_rollout_for_the_baseline():
    assert not Rollout.objects.filter(version__label="2024-01").exists()


# --- reversibility -------------------------------------------------------------------


def test_unload_removes_everything_and_load_restores_it():
    migration = importlib.import_module("consent.migrations.0003_reference_data")
    models = [
        MetadataCategory,
        PolicyVersion,
        Purpose,
        Jurisdiction,
        JurisdictionRule,
        Rollout,
        RolloutPhase,
    ]
    models_: list[Any] = models
    before = {model: model._default_manager.count() for model in models_}

    migration.unload(global_apps, None)
    assert {m: m._default_manager.count() for m in models_} == dict.fromkeys(models_, 0)
    assert not RolloutPhase.jurisdictions.through.objects.exists()
    assert not Purpose.categories.through.objects.exists()

    migration.load(global_apps, None)
    assert {m: m._default_manager.count() for m in models_} == before
