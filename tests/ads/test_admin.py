"""The ads admin: billing ops run advertisers and campaigns, targeting rules are
validated against the consent model, and staff see aggregates only.

The cast (staff users put in their group by name, never superusers): Bo from billing
ops, Pat from policy staff, Sam from support; and a superuser, to show that what is
about individual people is not in the admin at all.
"""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from ads.choices import CampaignStatus, Feature, Placement, Pricing
from ads.forms import AdForm, CampaignForm, TargetingRuleForm
from ads.management.commands.seed_demo_ads import DEMO_CAMPAIGNS
from ads.models import (
    Ad,
    AdDecision,
    AdEvent,
    Advertiser,
    Campaign,
    CampaignDay,
    ChatEntryWindow,
    HiddenAdvertiser,
    Signal,
    SubjectFeatures,
    TargetingRule,
)
from billing.models import BillingAccount
from consent.models import MetadataCategory
from tests.conftest import BILLING_OPS, logged_in
from tests.factories import SubjectFactory

pytestmark = pytest.mark.django_db

ADS_MODELS = ["advertiser", "campaign", "ad", "targetingrule"]


# --- personas (Pat, Sam and Bo come from tests/conftest.py) ---------------------------


@pytest.fixture
def root() -> Client:
    return logged_in(User.objects.create_superuser("root", password="pw-for-tests-only"))


@pytest.fixture
def advertiser() -> Advertiser:
    return Advertiser.objects.create(name="Lumen Coffee", country="US")


@pytest.fixture
def campaign(advertiser: Advertiser) -> Campaign:
    campaign = Campaign.objects.create(
        advertiser=advertiser,
        name="Autumn",
        placement=Placement.STATUS,
        status=CampaignStatus.ACTIVE,
        starts_at=timezone.now() - timedelta(days=3),
        pricing=Pricing.CPM,
        bid=Decimal("4"),
        daily_budget=Decimal("50"),
        total_budget=Decimal("500"),
    )
    Ad.objects.create(campaign=campaign, headline="Autumn", body="Blend", call_to_action="Shop")
    return campaign


# --- permissions ---------------------------------------------------------------------------


def test_billing_ops_may_view_add_and_change_advertisers_campaigns_ads_and_rules() -> None:
    granted = set(
        Group.objects.get(name=BILLING_OPS)
        .permissions.filter(content_type__app_label="ads")
        .values_list("codename", flat=True)
    )

    assert granted == {f"{a}_{m}" for m in ADS_MODELS for a in ("view", "add", "change")}


def test_no_staff_group_has_a_permission_on_data_about_individuals() -> None:
    individual = {
        "addecision",
        "adevent",
        "signal",
        "subjectfeatures",
        "hiddenadvertiser",
        "chatentrywindow",
    }
    for group in Group.objects.all():
        models = set(
            group.permissions.filter(content_type__app_label="ads").values_list(
                "content_type__model", flat=True
            )
        )
        assert not models & individual, group.name


def test_billing_ops_reach_the_campaign_pages(bo: Client, campaign: Campaign) -> None:
    for path in [
        "/admin/ads/",
        "/admin/ads/advertiser/",
        "/admin/ads/advertiser/add/",
        f"/admin/ads/advertiser/{campaign.advertiser_id}/change/",
        "/admin/ads/campaign/",
        "/admin/ads/campaign/add/",
        f"/admin/ads/campaign/{campaign.pk}/change/",
    ]:
        assert bo.get(path).status_code == 200, path

    assert bo.get(f"/admin/ads/campaign/{campaign.pk}/delete/").status_code == 403


@pytest.mark.parametrize("persona", ["pat", "sam"])
def test_policy_staff_and_support_do_not_see_campaigns(
    persona: str, request: pytest.FixtureRequest, campaign: Campaign
) -> None:
    client: Client = request.getfixturevalue(persona)

    assert client.get("/admin/ads/campaign/").status_code == 403
    assert client.get(f"/admin/ads/campaign/{campaign.pk}/change/").status_code == 403
    assert client.get("/admin/ads/advertiser/").status_code == 403


@pytest.mark.parametrize(
    "model",
    [
        AdDecision,
        AdEvent,
        Signal,
        SubjectFeatures,
        HiddenAdvertiser,
        ChatEntryWindow,
        CampaignDay,
    ],
)
def test_data_about_individuals_is_not_in_the_admin(root: Client, model: type[Any]) -> None:
    assert not admin.site.is_registered(model)
    assert root.get(f"/admin/ads/{model._meta.model_name}/").status_code == 404


def test_the_campaign_report_shows_daily_aggregates_only(bo: Client, campaign: Campaign) -> None:
    subject = SubjectFactory.create(external_id="person-in-report", country="US")
    AdDecision.objects.create(
        subject=subject,
        placement=Placement.STATUS,
        ad=campaign.ads.get(),
        campaign=campaign,
        reason="served",
    )
    today = timezone.now().date()
    CampaignDay.objects.create(
        campaign=campaign, day=today, spent=Decimal("0.012"), impressions=3, clicks=1
    )
    CampaignDay.objects.create(
        campaign=campaign,
        day=today - timedelta(days=1),
        spent=Decimal("0.008"),
        impressions=2,
        clicks=0,
    )

    page = bo.get(f"/admin/ads/campaign/{campaign.pk}/change/").content.decode()

    assert today.isoformat() in page
    assert "0.0120" in page
    assert "0.0200" in page  # the total
    assert "person-in-report" not in page
    listing = bo.get("/admin/ads/campaign/").content.decode()
    assert "0.00 / 500.00 USD" in listing


# --- campaigns through the admin -------------------------------------------------------------


def campaign_post(advertiser: Advertiser, **overrides: Any) -> dict[str, Any]:
    """The add form's POST: a campaign with one ad and the given targeting rules."""
    rules: list[tuple[str, str]] = overrides.pop("rules", [])
    data: dict[str, Any] = {
        "advertiser": advertiser.pk,
        "name": "Spring",
        "placement": Placement.STATUS,
        "status": CampaignStatus.ACTIVE,
        "starts_at_0": "2026-03-01",
        "starts_at_1": "00:00:00",
        "ends_at_0": "",
        "ends_at_1": "",
        "pricing": Pricing.CPM,
        "bid": "4.00",
        "daily_budget": "10",
        "total_budget": "100",
        "frequency_cap": "3",
        "click_to_chat": "",
        "ads-TOTAL_FORMS": "1",
        "ads-INITIAL_FORMS": "0",
        "ads-MIN_NUM_FORMS": "0",
        "ads-MAX_NUM_FORMS": "1000",
        "ads-0-headline": "Spring is here",
        "ads-0-body": "New season, new blend.",
        "ads-0-image_url": "",
        "ads-0-call_to_action": "Shop",
        "ads-0-is_active": "on",
        "rules-TOTAL_FORMS": str(len(rules)),
        "rules-INITIAL_FORMS": "0",
        "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "1000",
        **overrides,
    }
    for index, (feature, values) in enumerate(rules):
        data[f"rules-{index}-feature"] = feature
        data[f"rules-{index}-values"] = values
    return data


def test_billing_ops_create_a_campaign_whose_rules_get_their_category_from_the_feature(
    bo: Client, advertiser: Advertiser
) -> None:
    data = campaign_post(
        advertiser, rules=[(Feature.COUNTRY, "us, BR, us"), (Feature.AGE_BAND, "18-24, 25-34")]
    )

    response = bo.post("/admin/ads/campaign/add/", data)

    assert response.status_code == 302, response.content.decode()[:3000]
    campaign = Campaign.objects.get(name="Spring")
    rules = {r.feature: r for r in campaign.rules.select_related("category")}
    assert rules[Feature.COUNTRY].values == ["US", "BR"]
    assert rules[Feature.COUNTRY].category.key == "coarse_location"
    assert rules[Feature.AGE_BAND].values == ["18-24", "25-34"]
    assert rules[Feature.AGE_BAND].category.key == "age_band"
    assert campaign.ads.get().headline == "Spring is here"


def test_a_rule_whose_metadata_category_does_not_exist_is_refused(
    bo: Client, advertiser: Advertiser
) -> None:
    MetadataCategory.objects.filter(key="age_band").delete()
    data = campaign_post(advertiser, rules=[(Feature.AGE_BAND, "18-24")])

    response = bo.post("/admin/ads/campaign/add/", data)

    assert response.status_code == 200
    assert "needs the metadata category" in response.content.decode()
    assert "age_band" in response.content.decode()
    assert not Campaign.objects.exists()
    assert not TargetingRule.objects.exists()


def test_a_cpc_campaign_without_click_to_chat_is_refused_through_the_admin(
    bo: Client, advertiser: Advertiser
) -> None:
    response = bo.post("/admin/ads/campaign/add/", campaign_post(advertiser, pricing=Pricing.CPC))

    assert response.status_code == 200
    assert "CPC pricing is only for click-to-chat ads" in response.content.decode()
    assert not Campaign.objects.exists()


def test_billing_ops_edit_a_rule_and_see_its_values(bo: Client, campaign: Campaign) -> None:
    TargetingRule.objects.create(
        campaign=campaign,
        feature=Feature.LANGUAGE,
        category=MetadataCategory.objects.get(key="device_language"),
        values=["en", "pt-BR"],
    )

    page = bo.get(f"/admin/ads/campaign/{campaign.pk}/change/").content.decode()

    assert "en, pt-BR" in page
    assert "device_language" in page


# --- form validation -------------------------------------------------------------------------


def rule_form(feature: str, values: str) -> TargetingRuleForm:
    return TargetingRuleForm(data={"feature": feature, "values": values})


@pytest.mark.parametrize(
    ("feature", "values", "message"),
    [
        (Feature.COUNTRY, "", "This field is required."),
        (Feature.COUNTRY, " , ,", "at least one value"),
        (Feature.COUNTRY, "US, Atlantis", "not an ISO 3166-1"),
        (Feature.LANGUAGE, "english please", "not a BCP 47"),
        (Feature.AGE_BAND, "18-24, 30-40", "not an age band"),
        (Feature.AGE_BAND, "adults", "not an age band"),
        (Feature.AD_INTERACTION, "lumen", "not an advertiser id"),
        (Feature.CITY, "x" * 65, "longer than 64"),
        (Feature.CHANNEL_TOPIC, ", ".join(f"t{n}" for n in range(101)), "At most 100"),
    ],
)
def test_rule_values_must_be_a_non_empty_list_of_short_valid_strings(
    feature: str, values: str, message: str
) -> None:
    form = rule_form(feature, values)

    assert not form.is_valid()
    assert message in " ".join(str(e) for e in form.errors["values"])


def test_rule_values_are_normalised_and_the_category_set() -> None:
    form = rule_form(Feature.CITY, " Austin, São Paulo ,Austin")

    assert form.is_valid(), form.errors
    assert form.cleaned_data["values"] == ["Austin", "São Paulo"]
    assert form.instance.category.key == "coarse_location"


def test_rule_values_may_be_given_one_per_line() -> None:
    form = rule_form(Feature.CITY, "Washington, D.C.\r\nAustin\n")

    assert form.is_valid(), form.errors
    assert form.cleaned_data["values"] == ["Washington, D.C.", "Austin"]


def test_an_unknown_feature_is_refused() -> None:
    form = rule_form("message_text", "hello")

    assert not form.is_valid()
    assert "feature" in form.errors


def campaign_form(advertiser: Advertiser, instance: Campaign | None = None, **changes: Any):
    data: dict[str, Any] = {
        "advertiser": advertiser.pk,
        "name": "Form",
        "placement": Placement.STATUS,
        "status": CampaignStatus.DRAFT,
        "starts_at": "2026-03-01T00:00:00Z",
        "ends_at": "",
        "pricing": Pricing.CPM,
        "bid": "4",
        "daily_budget": "10",
        "total_budget": "100",
        "frequency_cap": "3",
        "click_to_chat": "",
        **changes,
    }
    return CampaignForm(data=data, instance=instance)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"pricing": Pricing.CPC}, "pricing", "only for click-to-chat"),
        ({"click_to_chat": "biz-1"}, "click_to_chat", "priced per click"),
        ({"click_to_chat": "biz/1", "pricing": Pricing.CPC}, "click_to_chat", "business"),
        ({"daily_budget": "101"}, "daily_budget", "cannot exceed the total"),
        ({"ends_at": "2026-03-01T00:00:00Z"}, "ends_at", "must end after it starts"),
        ({"ends_at": "2026-02-01T00:00:00Z"}, "ends_at", "must end after it starts"),
        ({"bid": "0"}, "bid", "greater than or equal to 0.0001"),
    ],
)
def test_campaign_validation_says_what_is_wrong(
    advertiser: Advertiser, changes: dict[str, Any], field: str, message: str
) -> None:
    form = campaign_form(advertiser, **changes)

    assert not form.is_valid()
    assert message in " ".join(form.errors[field]), form.errors


def test_a_click_to_chat_campaign_priced_per_click_is_valid(advertiser: Advertiser) -> None:
    form = campaign_form(advertiser, pricing=Pricing.CPC, click_to_chat="biz-1")

    assert form.is_valid(), form.errors


def test_the_total_budget_cannot_go_below_what_was_spent(
    advertiser: Advertiser, campaign: Campaign
) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("60"))
    campaign.refresh_from_db()

    form = campaign_form(advertiser, instance=campaign, total_budget="50", daily_budget="5")

    assert not form.is_valid()
    assert "already spent" in " ".join(form.errors["total_budget"])


# --- demo data -------------------------------------------------------------------------------


def test_seed_demo_ads_is_idempotent_and_its_campaigns_are_valid(settings: Any) -> None:
    settings.DEBUG = True

    call_command("seed_demo_ads")
    first = (Advertiser.objects.count(), Campaign.objects.count(), TargetingRule.objects.count())
    call_command("seed_demo_ads")

    assert (Advertiser.objects.count(), Campaign.objects.count()) == (3, len(DEMO_CAMPAIGNS))
    assert Ad.objects.count() == len(DEMO_CAMPAIGNS)
    assert first == (
        Advertiser.objects.count(),
        Campaign.objects.count(),
        TargetingRule.objects.count(),
    )
    kinds = {(c.placement, c.pricing, bool(c.click_to_chat)) for c in Campaign.objects.all()}
    assert (Placement.STATUS, Pricing.CPM, False) in kinds
    assert (Placement.STATUS, Pricing.CPC, True) in kinds
    assert any(placement == Placement.CHANNELS for placement, _, _ in kinds)
    for campaign in Campaign.objects.all():
        data = {
            **{f: getattr(campaign, f) for f in CampaignForm.Meta.fields},
            "advertiser": campaign.advertiser_id,
            "ends_at": "",
        }
        assert CampaignForm(data=data, instance=campaign).is_valid()


@pytest.mark.parametrize(
    ("url", "valid"),
    [("", True), ("https://cdn.example.com/a.png", True), ("http://cdn.example.com/a.png", False)],
)
def test_ad_images_are_https_only(url: str, valid: bool) -> None:
    form = AdForm(data={"headline": "H", "body": "B", "image_url": url, "call_to_action": "Go"})

    assert form.is_valid() is valid, form.errors


def test_pricing_is_read_only_once_a_campaign_has_spent(bo: Client, campaign: Campaign) -> None:
    page = f"/admin/ads/campaign/{campaign.pk}/change/"
    assert 'name="pricing"' in bo.get(page).content.decode()

    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("0.004"))

    assert 'name="pricing"' not in bo.get(page).content.decode()


def test_the_demo_advertisers_are_billed_and_the_demo_chat_ad_opens_a_real_business(
    settings: Any,
) -> None:
    settings.DEBUG = True

    call_command("seed_demo_ads", stdout=io.StringIO())
    call_command("seed_demo_billing", stdout=io.StringIO())

    for advertiser in Advertiser.objects.select_related("billing_account"):
        assert advertiser.billing_account is not None
        assert advertiser.billing_account.currency == advertiser.currency
    business = BillingAccount.objects.get(name="Casa Verde Café")  # made once, not twice
    assert Campaign.objects.get(name="Ask a plant doctor").click_to_chat == str(business.pk)
    assert business.products.count() == 2  # the billing seed completed what ads began
