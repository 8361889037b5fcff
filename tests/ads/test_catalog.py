"""The campaign catalog: what decisions show and rank of campaigns, kept in each process
by (campaign id, `catalog_stamp`), and the triggers that make every edit invalidate it
(ads/decisions.py, migration 0006).

The catalog keeps only what was read outside a transaction, so these tests run in
autocommit (`transaction=True`), and make their edits from a connection of their own,
as another process would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import transaction

from ads import decisions
from ads.choices import DecisionReason, Feature
from ads.models import Ad, Advertiser, Campaign, TargetingRule
from consent.models import MetadataCategory
from tests.ads.test_decisions import born, decide, make_campaign
from tests.connections import second_connection
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.postgres


@pytest.fixture
def other_process() -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own, in autocommit: its writes are what another process does."""
    with second_connection(autocommit=True) as conn:
        yield conn


def stamp(campaign: Campaign) -> int:
    return Campaign.objects.values_list("catalog_stamp", flat=True).get(pk=campaign.pk)


class Undo(Exception):
    """Rolls the transaction it leaves back."""


def ada_in_us() -> None:
    publish("2025-06", "US")
    SubjectFactory.create(external_id="ada", country="US", language="en-US", birth_year=born(30))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_campaigns_come_from_the_catalog_once_read(
    django_assert_num_queries: Callable[..., Any],
) -> None:
    ada_in_us()
    for n in range(3):
        make_campaign(f"C{n}", rules={Feature.COUNTRY: ["US"]})

    # the check and the eligible campaigns (one round trip); the catalog; the features
    # row; the insert — and the catalog no more once it holds the campaigns
    with django_assert_num_queries(5):
        first = decide("ada")
    with django_assert_num_queries(4):
        second = decide("ada")

    assert first.reason == second.reason == DecisionReason.SERVED
    assert first.ad is not None
    assert second.ad is not None
    assert second.ad.headline == first.ad.headline == "C0 headline"
    assert second.ad.campaign.advertiser.name == "C0 Inc"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_catalog_is_cleared_when_it_outgrows_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada_in_us()
    monkeypatch.setattr(decisions, "_CATALOG_MAX", 2)
    make_campaign("A")
    make_campaign("B")
    decide("ada")
    assert len(decisions._catalog) == 2

    make_campaign("C")
    decide("ada")

    assert len(decisions._catalog) == 1  # cleared, then only the new one read


# Each edit, made by another process behind the ORM's back, and what the next decision
# must show for it.
EDITS: dict[str, tuple[str, Callable[[Campaign], dict[str, Any]]]] = {
    "ad text": (
        "UPDATE ads_ad SET headline = 'New headline' WHERE campaign_id = %(c)s",
        lambda c: {"headline": "New headline"},
    ),
    "ad deactivated, the next ad shown": (
        "INSERT INTO ads_ad (campaign_id, headline, body, image_url, call_to_action,"
        " is_active) VALUES (%(c)s, 'Second ad', '', '', 'Go', true);"
        "UPDATE ads_ad SET is_active = false WHERE campaign_id = %(c)s"
        " AND headline <> 'Second ad'",
        lambda c: {"headline": "Second ad"},
    ),
    "every ad deactivated": (
        "UPDATE ads_ad SET is_active = false WHERE campaign_id = %(c)s",
        lambda c: {"reason": DecisionReason.NO_ELIGIBLE_AD},
    ),
    "a rule added": (
        'INSERT INTO ads_targetingrule (campaign_id, feature, category_id, "values")'
        " SELECT %(c)s, 'country', id, '[\"FR\"]' FROM consent_metadatacategory"
        " WHERE key = 'coarse_location'",
        lambda c: {"reason": DecisionReason.NO_ELIGIBLE_AD},
    ),
    "advertiser renamed": (
        "UPDATE ads_advertiser SET name = 'Renamed' WHERE id = %(a)s",
        lambda c: {"advertiser": "Renamed"},
    ),
    "pricing, bid and chat business changed": (
        "UPDATE ads_campaign SET pricing = 'cpc', bid = 0.50, click_to_chat = 'biz-9'"
        " WHERE id = %(c)s",
        lambda c: {"click_to_chat": "biz-9", "price": Decimal("0.5000")},
    ),
}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("edit", list(EDITS))
def test_every_edit_by_another_process_is_seen_by_the_next_decision(
    edit: str, other_process: psycopg.Connection[Any]
) -> None:
    ada_in_us()
    campaign = make_campaign("Edited")
    before = decide("ada")
    assert before.reason == DecisionReason.SERVED
    assert campaign.pk in decisions._catalog  # the next decision would use it

    statement, expected = EDITS[edit]
    for part in statement.split(";"):
        other_process.execute(part, {"c": campaign.pk, "a": campaign.advertiser_id})
    after = decide("ada")

    want = expected(campaign)
    if "reason" in want:
        assert after.reason == want["reason"]
        assert after.ad is None
        return
    assert after.ad is not None
    seen = {
        "headline": after.ad.headline,
        "advertiser": after.ad.campaign.advertiser.name,
        "click_to_chat": after.ad.campaign.click_to_chat,
        "price": after.price,
    }
    assert {key: seen[key] for key in want} == want


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_edit_rolled_back_leaves_nothing_in_the_catalog() -> None:
    ada_in_us()
    campaign = make_campaign("Kept")
    decide("ada")

    seen_inside: list[str] = []

    def edit_then_roll_back() -> None:
        with transaction.atomic():
            Ad.objects.filter(campaign=campaign).update(headline="Never committed")
            inside = decide("ada")
            seen_inside.append(inside.ad.headline if inside.ad else "")
            raise Undo

    with pytest.raises(Undo):
        edit_then_roll_back()
    assert seen_inside == ["Never committed"]
    # Another edit takes the stamp the rolled-back one had.
    Ad.objects.filter(campaign=campaign).update(body="Committed")
    after = decide("ada")

    assert after.ad is not None
    assert after.ad.headline == "Kept headline"
    assert after.ad.body == "Committed"


@pytest.mark.django_db
def test_the_stamp_counts_every_edit_of_what_decisions_show_and_never_goes_back() -> None:
    campaign = make_campaign("Stamped", rules={Feature.COUNTRY: ["US"]})
    stale = Campaign.objects.get(pk=campaign.pk)
    start = stamp(campaign)

    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("1"))  # spend: read live
    Campaign.objects.filter(pk=campaign.pk).update(frequency_cap=9)  # read live too
    assert stamp(campaign) == start

    edits: list[Callable[[], object]] = [
        lambda: Campaign.objects.filter(pk=campaign.pk).update(bid=Decimal("3")),
        lambda: Campaign.objects.filter(pk=campaign.pk).update(name="Renamed"),
        lambda: Ad.objects.filter(campaign=campaign).update(body="Edited"),
        lambda: Ad.objects.create(campaign=campaign, headline="Another", call_to_action="Go"),
        lambda: Ad.objects.filter(campaign=campaign, headline="Another").delete(),
        lambda: TargetingRule.objects.filter(campaign=campaign).update(values=["GB"]),
        lambda: TargetingRule.objects.create(
            campaign=campaign,
            feature=Feature.LANGUAGE,
            category=MetadataCategory.objects.get(key="device_language"),
            values=["en"],
        ),
        lambda: TargetingRule.objects.filter(campaign=campaign).delete(),
        lambda: Advertiser.objects.filter(pk=campaign.advertiser_id).update(name="New name"),
    ]
    previous = start
    for n, edit in enumerate(edits):
        edit()
        assert stamp(campaign) > previous, n
        previous = stamp(campaign)
    now = previous
    # The same name again is no edit; a save of an instance read long ago keeps the
    # stamp the edits since have made, and its own edit adds one.
    Advertiser.objects.filter(pk=campaign.advertiser_id).update(name="New name")
    stale.save()
    assert stamp(campaign) == now + 1  # its name and bid are the old ones: an edit
    stale.save()
    assert stamp(campaign) == now + 1
