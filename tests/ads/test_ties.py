"""The fixed ties of `ads.choices` hold against the seeded consent model: every signal
type and every targeting feature names a real metadata category, the purpose it needs
covers that category, and nothing ties ads to message content."""

from __future__ import annotations

import pytest

from ads import signals
from ads.choices import FEATURE_TIES, SIGNAL_TIES, Feature, SignalType
from consent.choices import FORBIDDEN_CATEGORY_KEYS
from consent.models import MetadataCategory, Purpose

pytestmark = pytest.mark.django_db

TIES = [(f"signal {k}", v) for k, v in SIGNAL_TIES.items()] + [
    (f"feature {k}", v) for k, v in FEATURE_TIES.items()
]


def test_every_signal_type_and_feature_has_a_tie_and_every_signal_type_a_schema():
    assert set(SIGNAL_TIES) == set(SignalType.values)
    assert set(FEATURE_TIES) == set(Feature.values)
    assert set(signals.EVENT_SCHEMAS) == set(SignalType.values)


@pytest.mark.parametrize(("tie", "category_and_purpose"), TIES, ids=[name for name, _ in TIES])
def test_a_tie_names_a_seeded_category_that_its_purpose_covers(tie, category_and_purpose):
    category, purpose_key = category_and_purpose

    assert MetadataCategory.objects.filter(key=category).exists(), category
    purpose = Purpose.objects.get(key=purpose_key)
    assert purpose.categories.filter(key=category).exists(), (tie, purpose_key, category)


@pytest.mark.parametrize(("tie", "category_and_purpose"), TIES, ids=[name for name, _ in TIES])
def test_no_tie_names_a_content_category(tie, category_and_purpose):
    category, _ = category_and_purpose

    assert category not in FORBIDDEN_CATEGORY_KEYS
    assert signals._normalized_key(category) not in {
        signals._normalized_key(key) for key in signals.CONTENT_KEYS
    }


def test_ads_signals_feed_only_the_purposes_the_product_names():
    """Updates-tab activity feeds personalisation, ad interactions feed data sharing,
    app usage and message timing feed analytics, and nothing feeds service delivery."""
    assert {purpose for _, purpose in SIGNAL_TIES.values()} == {
        "ads_personalization",
        "ads_data_sharing",
        "analytics",
    }
