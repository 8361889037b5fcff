"""Ad decisions and ad events, as PRODUCT.md ("Ads (metadata only)") describes them.

The cast: Ada, an adult in the United States once Status ads are live there (2025-06
published to US: ads_personalization and ads_data_sharing are opt-out, so allowed
until she says no); a teenager in Brazil, where profiling ads to minors are banned;
someone in Japan, where the 2025-06 policy has not arrived. The ad server calls the
API with a token holding `ads:decide`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.models import ProtectedError
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from ads import decisions
from ads.choices import (
    AGE_BANDS,
    CONTEXT_FEATURES,
    FEATURE_TIES,
    PERSONALIZATION,
    AdEventType,
    CampaignStatus,
    DecisionReason,
    Feature,
    Placement,
    Pricing,
)
from ads.models import (
    Ad,
    AdDecision,
    AdEvent,
    Advertiser,
    Campaign,
    CampaignDay,
    ChatEntryWindow,
    HiddenAdvertiser,
    SubjectFeatures,
    TargetingRule,
)
from consent import selectors, services
from consent.choices import Source
from consent.errors import InvalidValue
from consent.models import MetadataCategory, Subject
from tests.connections import second_connection
from tests.factories import TEST_ACTOR, SubjectFactory, publish

API = "/api/v1"
PROBLEM = "application/problem+json"
US_CONTEXT = {"country": "US", "language": "en"}
DATA_SHARING = "ads_data_sharing"


# --- helpers -----------------------------------------------------------------------------


def born(age: int) -> int:
    """A birth year whose protective reading (the youngest possible age) is `age`."""
    return selectors.today().year - age - 1


def make_campaign(
    name: str = "Campaign",
    *,
    advertiser: Advertiser | None = None,
    rules: dict[str, list[str]] | None = None,
    **fields: Any,
) -> Campaign:
    """An active campaign with one active ad, serving now, CPM 2.00 unless told."""
    advertiser = advertiser or Advertiser.objects.create(name=f"{name} Inc", country="US")
    values: dict[str, Any] = {
        "placement": Placement.STATUS,
        "status": CampaignStatus.ACTIVE,
        "starts_at": timezone.now() - timedelta(days=1),
        "pricing": Pricing.CPM,
        "bid": Decimal("2.00"),
        "daily_budget": Decimal("100"),
        "total_budget": Decimal("1000"),
        "frequency_cap": 3,
        **fields,
    }
    campaign = Campaign.objects.create(advertiser=advertiser, name=name, **values)
    Ad.objects.create(
        campaign=campaign, headline=f"{name} headline", body="Body", call_to_action="Go"
    )
    for feature, feature_values in (rules or {}).items():
        category = MetadataCategory.objects.get(key=FEATURE_TIES[feature][0])
        TargetingRule.objects.create(
            campaign=campaign, feature=feature, category=category, values=feature_values
        )
    return campaign


def decide(subject: Subject | str, placement: str = Placement.STATUS, **context: str) -> AdDecision:
    external_id = subject if isinstance(subject, str) else subject.external_id
    return decisions.decide(
        external_id=external_id, placement=placement, context={**US_CONTEXT, **context}
    )


def impression(decision: AdDecision) -> AdEvent:
    event, _ = decisions.record_event(decision_id=decision.pk, type=AdEventType.IMPRESSION)
    return event


def revoke(subject: Subject, purpose: str) -> None:
    services.record_choice(
        external_id=subject.external_id,
        purpose_key=purpose,
        granted=False,
        source=Source.USER_APP,
        actor=TEST_ACTOR,
    )


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


@pytest.fixture
def ad_server(api_client: Callable[..., APIClient]) -> APIClient:
    return api_client("ads:decide", name="ad-server")


@pytest.fixture
def ada(db: None) -> Subject:
    publish("2025-06", "US")
    subject: Subject = SubjectFactory.create(
        external_id="ada", country="US", language="en-US", birth_year=born(30)
    )
    return subject


# --- consent before targeting ------------------------------------------------------------


@pytest.mark.django_db
def test_the_same_request_is_personalised_with_consent_and_contextual_after_revoking(
    ad_server: APIClient, ada: Subject
) -> None:
    targeted = make_campaign("Thirties", rules={Feature.AGE_BAND: ["25-34"]}, bid=Decimal("9"))
    everyone = make_campaign("Everyone", bid=Decimal("1"))
    body = {"subject": "ada", "placement": "status", "context": US_CONTEXT}

    first = ad_server.post(f"{API}/ads/decisions", body, format="json")
    revoke(ada, PERSONALIZATION)
    second = ad_server.post(f"{API}/ads/decisions", body, format="json")

    assert first.status_code == 200, first.content
    assert first.json()["personalized"] is True
    assert first.json()["reason"] == "served"
    assert first.json()["ad"]["headline"] == "Thirties headline"
    assert second.status_code == 200, second.content
    assert second.json()["personalized"] is False
    assert second.json()["ad"]["headline"] == "Everyone headline"
    logged = AdDecision.objects.get(pk=second.json()["decision_id"])
    assert logged.features_used == {"country": ["us"], "language": ["en"]}
    assert logged.purposes_used == []
    assert logged.campaign_id == everyone.pk
    assert AdDecision.objects.get(pk=first.json()["decision_id"]).campaign_id == targeted.pk


@pytest.mark.django_db
def test_a_served_decision_says_what_it_used_and_why(ad_server: APIClient, ada: Subject) -> None:
    SubjectFeatures.objects.create(
        subject=ada, channel_topics={"football": 3, "cooking": 0}, city="Austin"
    )
    make_campaign(
        "Sports",
        rules={Feature.CHANNEL_TOPIC: ["football"], Feature.CITY: ["austin"]},
        click_to_chat="biz-sports",
        pricing=Pricing.CPC,
        bid=Decimal("0.50"),
    )

    response = ad_server.post(
        f"{API}/ads/decisions",
        {"subject": "ada", "placement": "status", "context": {"country": "MX", "language": "es"}},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ad"] == {
        "id": body["ad"]["id"],
        "headline": "Sports headline",
        "body": "Body",
        "image_url": "",
        "call_to_action": "Go",
        "advertiser": "Sports Inc",
        "click_to_chat": "biz-sports",
    }
    logged = AdDecision.objects.get(pk=body["decision_id"])
    assert logged.subject_id == ada.pk
    assert logged.context == {"country": "MX", "language": "es"}
    assert logged.features_used == {
        "age_band": ["25-34"],
        "channel_topic": ["football"],
        "city": ["austin"],
        "country": ["mx", "us"],
        "language": ["en", "en-us", "es"],
    }
    assert logged.purposes_used == [PERSONALIZATION]
    assert logged.price == Decimal("0.50")


@pytest.mark.django_db
@pytest.mark.parametrize("personalization", [True, False])
@pytest.mark.parametrize("data_sharing", [True, False])
def test_only_features_of_allowed_purposes_reach_targeting(
    ada: Subject, personalization: bool, data_sharing: bool
) -> None:
    clicked = Advertiser.objects.create(name="Clicked before", country="US")
    SubjectFeatures.objects.create(
        subject=ada,
        channel_topics={"hiking": 2},
        ad_interactions={str(clicked.pk): {"clicks": 2, "hides": 0}},
        city="Denver",
    )
    retarget = make_campaign("Retarget", rules={Feature.AD_INTERACTION: [str(clicked.pk)]})
    if not personalization:
        revoke(ada, PERSONALIZATION)
    if not data_sharing:
        revoke(ada, DATA_SHARING)

    decision = decide(ada)

    used = set(decision.features_used)
    profile_features = {Feature.CITY, Feature.AGE_BAND, Feature.CHANNEL_TOPIC}
    assert decision.personalized is personalization
    assert (profile_features <= used) is personalization
    assert (Feature.AD_INTERACTION in used) is (personalization and data_sharing)
    # The retargeting rule needs ad interactions: it matches only when they were allowed.
    assert (decision.campaign_id == retarget.pk) is (personalization and data_sharing)
    expected_purposes = {PERSONALIZATION} if personalization else set()
    if personalization and data_sharing:
        expected_purposes.add(DATA_SHARING)
    assert set(decision.purposes_used) == expected_purposes


PURPOSE_SETS = st.frozensets(st.sampled_from([PERSONALIZATION, DATA_SHARING, "analytics"]))
TOPICS = st.dictionaries(
    st.sampled_from(["football", "k-pop", "cooking", "hiking"]), st.integers(-3, 5), max_size=4
)
INTERACTIONS = st.dictionaries(
    st.integers(1, 50).map(str),
    st.fixed_dictionaries({"clicks": st.integers(0, 3), "hides": st.integers(0, 3)}),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    allowed=PURPOSE_SETS,
    topics=TOPICS,
    interactions=INTERACTIONS,
    city=st.sampled_from(["", "Lagos", "São Paulo"]),
    birth_year=st.one_of(st.none(), st.integers(1920, selectors.today().year)),
    has_features=st.booleans(),
    country=st.sampled_from(["US", "BR", "DE"]),
    context_country=st.sampled_from(["US", "FR"]),
)
def test_allowed_features_hold_exactly_the_features_whose_purpose_is_allowed(
    allowed: frozenset[str],
    topics: dict[str, int],
    interactions: dict[str, dict[str, int]],
    city: str,
    birth_year: int | None,
    has_features: bool,
    country: str,
    context_country: str,
) -> None:
    subject = Subject(country=country, language="pt-BR", birth_year=birth_year)
    row = (
        SubjectFeatures(channel_topics=topics, ad_interactions=interactions, city=city)
        if has_features
        else None
    )
    profile = decisions.profile_of(subject=subject, features=row, on=selectors.today())
    context = decisions.RequestContext(country=context_country, language="en")

    features = decisions.allowed_features(
        context=context, profile=profile, allowed_purposes=allowed
    )

    context_values = {
        Feature.COUNTRY: {context_country.casefold()},
        Feature.LANGUAGE: {"en"},
    }
    assert isinstance(features, decisions.AllowedFeatures)
    with pytest.raises(TypeError):
        features.values[Feature.CITY] = frozenset({"x"})  # type: ignore[index]
    if PERSONALIZATION not in allowed:
        # Nothing of the profile: the request's context and nothing else.
        assert dict(features.values) == context_values
        assert features.personalized is False
        assert features.purposes_used() == []
        return
    profile_values: dict[str, set[str]] = {
        Feature.COUNTRY: {country.casefold()},
        Feature.CITY: ({city.casefold()} - {""}) if row else set(),
        Feature.LANGUAGE: {"pt-br", "pt"},
        Feature.AGE_BAND: {profile.age_band} if profile.age_band else set(),
        Feature.CHANNEL_TOPIC: {t for t, w in topics.items() if w > 0} if row else set(),
        Feature.AD_INTERACTION: (
            {a for a, c in interactions.items() if c["clicks"] > 0} if row else set()
        ),
    }
    expected: dict[str, set[str]] = {f: set(v) for f, v in context_values.items()}
    for feature, found in profile_values.items():
        if FEATURE_TIES[feature][1] in allowed and found:
            expected.setdefault(feature, set()).update(found)
    assert {f: set(v) for f, v in features.values.items()} == expected
    for feature in features.values:
        assert feature in CONTEXT_FEATURES or FEATURE_TIES[feature][1] in allowed
    assert set(features.purposes_used()) <= allowed
    assert features.personalized is True


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (None, None),
        (12, None),
        (13, "13-17"),
        (17, "13-17"),
        (18, "18-24"),
        (64, "55-64"),
        (65, "65+"),
        (101, "65+"),
    ],
)
def test_age_bands_are_the_advertiser_facing_ones(age: int | None, band: str | None) -> None:
    assert decisions.age_band(age) == band
    assert band is None or band in AGE_BANDS


@pytest.mark.django_db
def test_a_minor_where_profiling_ads_to_minors_are_banned_gets_contextual_ads_only() -> None:
    publish("2025-06", "BR")
    teen = SubjectFactory.create(country="BR", language="pt-BR", birth_year=born(15))
    adult = SubjectFactory.create(country="BR", language="pt-BR", birth_year=born(40))
    make_campaign("Teens", rules={Feature.AGE_BAND: ["13-17"]}, bid=Decimal("5"))
    make_campaign("Everyone", bid=Decimal("1"))

    for_teen = decide(teen, country="BR", language="pt-BR")
    for_adult = decide(adult, country="BR", language="pt-BR")

    assert for_teen.reason == DecisionReason.SERVED
    assert for_teen.personalized is False
    assert Feature.AGE_BAND not in for_teen.features_used
    assert for_teen.ad is not None
    assert for_teen.ad.headline == "Everyone headline"
    assert for_adult.personalized is True


@pytest.mark.django_db
def test_no_ad_before_status_ads_reach_the_subject(ad_server: APIClient) -> None:
    publish("2025-06", "US")
    make_campaign("Everyone")
    in_japan = SubjectFactory.create(external_id="yuki", country="JP", language="ja")

    response = ad_server.post(
        f"{API}/ads/decisions",
        {"subject": "yuki", "placement": "status", "context": {"country": "JP", "language": "ja"}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["ad"] is None
    assert response.json()["reason"] == "not_live"
    assert response.json()["personalized"] is False
    logged = AdDecision.objects.get(pk=response.json()["decision_id"])
    assert logged.subject_id == in_japan.pk
    assert logged.features_used == {}


@pytest.mark.django_db
def test_an_unknown_subject_gets_no_ad_and_the_decision_is_logged_without_one(
    ad_server: APIClient,
) -> None:
    make_campaign("Everyone")

    response = ad_server.post(
        f"{API}/ads/decisions",
        {"subject": "nobody", "placement": "channels", "context": US_CONTEXT},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["reason"] == "unknown_subject"
    assert response.json()["ad"] is None
    logged = AdDecision.objects.get(pk=response.json()["decision_id"])
    assert logged.subject_id is None
    assert logged.placement == "channels"


@pytest.mark.django_db
def test_an_erased_subject_is_unknown(ada: Subject) -> None:
    make_campaign("Everyone")
    services.erase_subject(external_id="ada", actor=TEST_ACTOR)

    assert decide("ada").reason == DecisionReason.UNKNOWN_SUBJECT


# --- the API's input -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("placement", ["chat", "chats", "Chat_list"])
def test_there_are_no_ads_in_chats(ad_server: APIClient, ada: Subject, placement: str) -> None:
    make_campaign("Everyone")

    response = ad_server.post(
        f"{API}/ads/decisions",
        {"subject": "ada", "placement": placement, "context": US_CONTEXT},
        format="json",
    )

    body = assert_problem(response, 400)
    assert [e["field"] for e in body["errors"]] == ["placement"]
    assert "chats" in body["errors"][0]["message"]
    assert not AdDecision.objects.exists()


def test_the_service_refuses_a_chat_placement_too() -> None:
    with pytest.raises(InvalidValue):
        decisions.decide(external_id="ada", placement="chat", context=US_CONTEXT)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subject": "ada", "placement": "status", "context": US_CONTEXT, "x": 1}, "x"),
        (
            {"subject": "ada", "placement": "status", "context": {**US_CONTEXT, "city": "x"}},
            "context.city",
        ),
        ({"subject": "ada", "placement": "status"}, "context"),
        (
            {
                "subject": "ada",
                "placement": "status",
                "context": {"country": "XX", "language": "en"},
            },
            "context.country",
        ),
        (
            {
                "subject": "ada",
                "placement": "status",
                "context": {"country": "US", "language": "?"},
            },
            "context.language",
        ),
        ({"subject": "a/b", "placement": "status", "context": US_CONTEXT}, "subject"),
        ({"subject": "ada", "placement": "feed", "context": US_CONTEXT}, "placement"),
    ],
)
def test_bad_decision_requests_are_refused_naming_the_field(
    ad_server: APIClient, body: dict[str, Any], field: str
) -> None:
    response = ad_server.post(f"{API}/ads/decisions", body, format="json")

    problem = assert_problem(response, 400)
    assert field in {e["field"] for e in problem["errors"]}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["ads/decisions", "ads/events"])
def test_the_ad_endpoints_need_the_ads_decide_scope(
    api_client: Callable[..., APIClient], anonymous: APIClient, path: str
) -> None:
    reader = api_client("consent:read", "consent:write", "signals:write", name="no-ads")

    assert_problem(reader.post(f"{API}/{path}", {}, format="json"), 403)
    assert_problem(anonymous.post(f"{API}/{path}", {}, format="json"), 401)


# --- eligibility ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_frequency_cap_counts_todays_impressions_of_the_subject(ada: Subject) -> None:
    capped = make_campaign("Capped", frequency_cap=2, bid=Decimal("9"))
    make_campaign("Fallback", bid=Decimal("1"))
    other = SubjectFactory.create(country="US")

    served = [decide(ada) for _ in range(2)]
    unreported = decide(ada)  # decided, but never shown: does not count
    for decision in served:
        impression(decision)
    after_cap = decide(ada)

    assert [d.campaign_id for d in served] == [capped.pk, capped.pk]
    assert unreported.campaign_id == capped.pk
    assert after_cap.ad is not None
    assert after_cap.ad.headline == "Fallback headline"
    assert decide(other).campaign_id == capped.pk


@pytest.mark.django_db
def test_a_campaign_stops_when_todays_budget_is_spent(ada: Subject) -> None:
    # CPM 10.00: 0.01 per impression; 0.02 a day.
    campaign = make_campaign("Daily", bid=Decimal("10"), daily_budget=Decimal("0.02"))

    for _ in range(2):
        impression(decide(ada))
    exhausted = decide(ada)

    today = CampaignDay.objects.get(campaign=campaign)
    assert today.spent == Decimal("0.02")
    assert today.impressions == 2
    assert exhausted.reason == DecisionReason.NO_ELIGIBLE_AD
    assert exhausted.ad is None
    # Yesterday's spend does not count against today.
    today.day -= timedelta(days=1)
    today.save()
    assert decide(ada).campaign_id == campaign.pk


@pytest.mark.django_db
def test_a_campaign_stops_when_its_total_budget_is_spent(ada: Subject) -> None:
    campaign = make_campaign(
        "Total", bid=Decimal("10"), daily_budget=Decimal("1"), total_budget=Decimal("1")
    )
    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("0.99"))

    impression(decide(ada))  # spends the last 0.01
    exhausted = decide(ada)

    campaign.refresh_from_db()
    assert campaign.spent == Decimal("1")
    assert exhausted.reason == DecisionReason.NO_ELIGIBLE_AD


@pytest.mark.django_db
def test_a_cpc_campaign_needs_room_for_one_click(ada: Subject) -> None:
    campaign = make_campaign(
        "Chat", pricing=Pricing.CPC, bid=Decimal("0.50"), click_to_chat="biz-1"
    )
    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("999.60"))

    assert decide(ada).reason == DecisionReason.NO_ELIGIBLE_AD


@pytest.mark.django_db
def test_a_charge_never_goes_beyond_the_budget(ada: Subject) -> None:
    campaign = make_campaign("Edge", bid=Decimal("10"), total_budget=Decimal("100"))
    decision = decide(ada)
    # Another decision's impression spent almost everything in the meantime.
    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("99.995"))

    event = impression(decision)

    campaign.refresh_from_db()
    assert event.cost == Decimal("0.005")
    assert campaign.spent == campaign.total_budget


@pytest.mark.django_db
def test_a_hidden_advertiser_is_never_shown(ada: Subject) -> None:
    hidden = make_campaign("Hidden", bid=Decimal("9"))
    make_campaign("Shown", bid=Decimal("1"))
    HiddenAdvertiser.objects.create(subject=ada, advertiser=hidden.advertiser)
    revoke(ada, PERSONALIZATION)  # a hide holds whatever the consent

    decision = decide(ada)

    assert decision.ad is not None
    assert decision.ad.headline == "Shown headline"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"status": CampaignStatus.PAUSED},
        {"status": CampaignStatus.DRAFT},
        {"starts_at": timezone.now() + timedelta(hours=1)},
        {"ends_at": timezone.now() - timedelta(minutes=1)},
        {"placement": Placement.CHANNELS},
    ],
)
def test_only_active_campaigns_in_their_schedule_and_placement_serve(
    ada: Subject, change: dict[str, Any]
) -> None:
    campaign = make_campaign("Paused", starts_at=timezone.now() - timedelta(days=2))
    Campaign.objects.filter(pk=campaign.pk).update(**change)

    assert decide(ada).reason == DecisionReason.NO_ELIGIBLE_AD


@pytest.mark.django_db
def test_a_campaign_without_an_active_ad_does_not_serve(ada: Subject) -> None:
    campaign = make_campaign("No ads")
    campaign.ads.update(is_active=False)

    assert decide(ada).reason == DecisionReason.NO_ELIGIBLE_AD


@pytest.mark.django_db
def test_every_rule_of_a_campaign_must_match(ada: Subject) -> None:
    make_campaign("Both", rules={Feature.COUNTRY: ["US"], Feature.LANGUAGE: ["fr"]})
    make_campaign("Language family", rules={Feature.LANGUAGE: ["EN"]}, bid=Decimal("0.5"))

    decision = decide(ada)

    assert decision.ad is not None
    assert decision.ad.headline == "Language family headline"


# --- ranking -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ranking_compares_expected_revenue_per_impression(ada: Subject) -> None:
    # CPM 4.00 → 0.004 per impression; CPC 0.50 * 1% → 0.005: the CPC ad wins.
    make_campaign("CPM", bid=Decimal("4"))
    cpc = make_campaign("CPC", pricing=Pricing.CPC, bid=Decimal("0.50"), click_to_chat="b")

    assert decide(ada).campaign_id == cpc.pk


@pytest.mark.django_db
def test_a_past_click_on_the_advertiser_lifts_a_cpc_ad_only_with_ad_interactions_allowed(
    ada: Subject,
) -> None:
    # CPM 6.00 → 0.006; CPC 0.50 → 0.005, or 0.0075 for someone who clicked before.
    cpm = make_campaign("CPM", bid=Decimal("6"))
    cpc = make_campaign("CPC", pricing=Pricing.CPC, bid=Decimal("0.50"), click_to_chat="b")
    SubjectFeatures.objects.create(
        subject=ada, ad_interactions={str(cpc.advertiser_id): {"clicks": 1, "hides": 0}}
    )

    with_sharing = decide(ada)
    revoke(ada, DATA_SHARING)
    without_sharing = decide(ada)

    assert with_sharing.campaign_id == cpc.pk
    assert without_sharing.campaign_id == cpm.pk


@pytest.mark.django_db
def test_ties_go_to_the_older_campaign(ada: Subject) -> None:
    first = make_campaign("First", bid=Decimal("3"))
    make_campaign("Second", bid=Decimal("3"))

    assert {decide(ada).campaign_id for _ in range(3)} == {first.pk}


# --- query count ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("campaigns", [2, 12])
def test_a_decision_takes_a_fixed_number_of_queries(
    ada: Subject, campaigns: int, django_assert_num_queries: Callable[..., Any]
) -> None:
    SubjectFeatures.objects.create(subject=ada, channel_topics={"football": 1})
    for n in range(campaigns):
        make_campaign(f"C{n}", rules={Feature.COUNTRY: ["US"], Feature.AGE_BAND: ["25-34"]})

    # the subject with the consent check of every purpose ads use and, in the same
    # round trip, the eligible campaigns with their spend and stamps; what the catalog
    # keeps of them (read every time inside a transaction, such as this test's:
    # tests/ads/test_catalog.py has the cached case); the features row; the insert.
    with django_assert_num_queries(5):
        decision = decide(ada)

    assert decision.reason == DecisionReason.SERVED


# --- what a decision references ---------------------------------------------------------


@pytest.mark.django_db
def test_an_ad_or_a_campaign_with_decisions_cannot_be_deleted(ada: Subject) -> None:
    """The decision log's references carry no database constraint (a decision's commit
    would lock shared rows); the ORM's PROTECT keeps what they name."""
    campaign = make_campaign("Kept", bid=Decimal("3"))
    decision = decide(ada)
    assert decision.campaign_id == campaign.pk
    assert decision.ad is not None
    ad = decision.ad

    with pytest.raises(ProtectedError):
        Ad.objects.filter(pk=ad.pk).delete()
    with pytest.raises(ProtectedError):
        campaign.delete()

    assert Campaign.objects.filter(pk=campaign.pk).exists()
    assert Ad.objects.filter(pk=ad.pk).exists()
    assert AdDecision.objects.filter(pk=decision.pk, campaign=campaign).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_decision_is_not_held_up_by_a_charge_in_progress_on_its_campaign() -> None:
    """Charging an event locks its campaign's row (`record_event`); a decision for the
    same campaign neither waits for that lock nor takes one at its commit."""
    publish("2025-06", "US")
    SubjectFactory.create(external_id="ada", country="US", language="en-US", birth_year=born(30))
    campaign = make_campaign("Busy", bid=Decimal("3"))
    with second_connection() as charging:
        charging.execute("SELECT id FROM ads_campaign WHERE id = %s FOR UPDATE", [campaign.pk])
        charging.execute("SELECT id FROM ads_ad WHERE campaign_id = %s FOR UPDATE", [campaign.pk])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            decision = decide("ada")  # autocommit: its commit runs here
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")

    assert decision.reason == DecisionReason.SERVED
    assert AdDecision.objects.filter(pk=decision.pk, campaign=campaign).exists()


# --- events --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_event_is_recorded_once_and_charged_once(ad_server: APIClient, ada: Subject) -> None:
    campaign = make_campaign("CPM", bid=Decimal("3"))
    decision = decide(ada)
    body = {"decision_id": str(decision.pk), "type": "impression"}

    first = ad_server.post(f"{API}/ads/events", body, format="json")
    replay = ad_server.post(f"{API}/ads/events", body, format="json")

    assert first.status_code == 201, first.content
    assert replay.status_code == 200, replay.content
    assert first.json() == {"decision_id": str(decision.pk), "type": "impression", "cost": "0.0030"}
    assert replay.json() == first.json()
    campaign.refresh_from_db()
    assert campaign.spent == Decimal("0.003")
    day = CampaignDay.objects.get(campaign=campaign)
    assert (day.impressions, day.clicks, day.spent) == (1, 0, Decimal("0.003"))
    assert AdEvent.objects.count() == 1


@pytest.mark.django_db
def test_cpm_pays_for_impressions_and_cpc_for_clicks(ada: Subject) -> None:
    cpc = make_campaign("CPC", pricing=Pricing.CPC, bid=Decimal("0.40"), click_to_chat="shop")
    decision = decide(ada)

    shown, _ = decisions.record_event(decision_id=decision.pk, type=AdEventType.IMPRESSION)
    clicked, _ = decisions.record_event(decision_id=decision.pk, type=AdEventType.CLICK)

    assert shown.cost == Decimal("0")
    assert clicked.cost == Decimal("0.40")
    cpc.refresh_from_db()
    assert cpc.spent == Decimal("0.40")
    day = CampaignDay.objects.get(campaign=cpc)
    assert (day.impressions, day.clicks) == (1, 1)


@pytest.mark.django_db
def test_a_click_is_accepted_without_an_impression(ada: Subject) -> None:
    make_campaign("CPM", bid=Decimal("3"))
    decision = decide(ada)

    event, created = decisions.record_event(decision_id=decision.pk, type=AdEventType.CLICK)

    assert created is True
    assert event.cost == Decimal("0")  # a CPM campaign pays for impressions only


@pytest.mark.django_db
def test_a_click_to_chat_click_opens_a_72_hour_window(ad_server: APIClient, ada: Subject) -> None:
    make_campaign("Chat", pricing=Pricing.CPC, bid=Decimal("0.40"), click_to_chat="biz-42")
    decision = decide(ada)
    clicked_at = timezone.now() - timedelta(minutes=1)

    response = ad_server.post(
        f"{API}/ads/events",
        {"decision_id": str(decision.pk), "type": "click", "occurred_at": clicked_at.isoformat()},
        format="json",
    )

    assert response.status_code == 201, response.content
    window = ChatEntryWindow.objects.get(decision=decision)
    assert window.subject_id == ada.pk
    assert window.business == "biz-42"
    assert window.expires_at - window.opened_at == timedelta(hours=72)
    found = decisions.open_chat_window(
        external_id="ada", business="biz-42", at=clicked_at + timedelta(hours=71)
    )
    assert found == window
    assert (
        decisions.open_chat_window(
            external_id="ada", business="biz-42", at=clicked_at + timedelta(hours=72)
        )
        is None
    )
    assert decisions.open_chat_window(external_id="ada", business="other", at=clicked_at) is None
    # A replayed click opens nothing more.
    again = ad_server.post(
        f"{API}/ads/events", {"decision_id": str(decision.pk), "type": "click"}, format="json"
    )
    assert again.status_code == 200
    assert ChatEntryWindow.objects.count() == 1


@pytest.mark.django_db
def test_a_click_on_an_ordinary_ad_opens_no_window(ada: Subject) -> None:
    make_campaign("CPM")
    decision = decide(ada)

    decisions.record_event(decision_id=decision.pk, type=AdEventType.CLICK)

    assert not ChatEntryWindow.objects.exists()


@pytest.mark.django_db
def test_events_of_unknown_decisions_and_of_decisions_without_an_ad_are_refused(
    ad_server: APIClient, ada: Subject
) -> None:
    no_ad = decide(ada)
    assert no_ad.ad is None

    unknown = ad_server.post(
        f"{API}/ads/events",
        {"decision_id": "00000000-0000-4000-8000-000000000000", "type": "impression"},
        format="json",
    )
    conflict = ad_server.post(
        f"{API}/ads/events", {"decision_id": str(no_ad.pk), "type": "impression"}, format="json"
    )

    assert_problem(unknown, 404)
    assert_problem(conflict, 409)
    assert not AdEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "hover"}, "type"),
        ({"decision_id": "nope"}, "decision_id"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"cost": "0"}, "cost"),
    ],
)
def test_bad_event_requests_are_refused_naming_the_field(
    ad_server: APIClient, ada: Subject, change: dict[str, Any], field: str
) -> None:
    make_campaign("CPM")
    decision = decide(ada)
    body = {"decision_id": str(decision.pk), "type": "impression", **change}

    problem = assert_problem(ad_server.post(f"{API}/ads/events", body, format="json"), 400)

    assert field in {e["field"] for e in problem["errors"]}
    assert not AdEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("offset", [timedelta(hours=1), timedelta(hours=-1)])
def test_an_event_cannot_be_in_the_future_or_before_its_decision(
    ad_server: APIClient, ada: Subject, offset: timedelta
) -> None:
    make_campaign("CPM")
    decision = decide(ada)
    at = timezone.now() + offset

    response = ad_server.post(
        f"{API}/ads/events",
        {"decision_id": str(decision.pk), "type": "impression", "occurred_at": at.isoformat()},
        format="json",
    )

    problem = assert_problem(response, 400)
    assert {e["field"] for e in problem["errors"]} == {"occurred_at"}
    assert Campaign.objects.get().spent == 0
