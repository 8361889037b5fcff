"""The ads pages: why am I seeing this ad, hiding advertisers (and undoing it), and
erasing ad data after a confirmation."""

from __future__ import annotations

import pytest
from django.test import Client

from ads.choices import DecisionReason
from ads.decisions import record_event
from ads.models import AdDecision, AdEvent, HiddenAdvertiser, Signal, SubjectFeatures
from consent.models import ConsentEvent, ConsentState, Subject
from tests.dashboard.conftest import advertiser_with_ad, allow, send_signals, show_ads

pytestmark = pytest.mark.django_db


def test_a_personalised_ad_says_what_it_used_and_which_choice_allowed_it(
    anna: Subject, annas_browser: Client, ads_live: None
) -> None:
    advertiser_with_ad()
    allow(anna, "ads_personalization")
    send_signals(anna)
    [decision] = show_ads(anna)
    assert decision.personalized is True
    body = annas_browser.get("/dashboard/ads/").content.decode()
    assert "The autumn blend" in body
    assert "From Lumen Coffee" in body
    assert "Personalised: chosen with this information" in body
    assert "Followed-channel topics" in body
    assert "coffee, football" in body
    assert "Allowed by: Personalised ads in Updates" in body


def test_an_ad_without_personalisation_says_so(
    anna: Subject, annas_browser: Client, ads_live: None
) -> None:
    advertiser_with_ad()
    [decision] = show_ads(anna)
    assert decision.reason == DecisionReason.SERVED
    assert decision.personalized is False
    body = annas_browser.get("/dashboard/ads/").content.decode()
    assert "Not personalised: chosen only from the country and language" in body


def test_decisions_that_showed_no_ad_are_not_listed(
    anna: Subject, annas_browser: Client, ads_live: None
) -> None:
    [decision] = show_ads(anna)  # no campaign exists
    assert decision.reason == DecisionReason.NO_ELIGIBLE_AD
    assert (
        "No ads have been chosen for you recently."
        in annas_browser.get("/dashboard/ads/").content.decode()
    )


def test_hiding_an_advertiser_stops_its_ads_and_can_be_undone(
    anna: Subject, annas_browser: Client, ads_live: None
) -> None:
    ad = advertiser_with_ad()
    advertiser = ad.campaign.advertiser
    [decision] = show_ads(anna)
    response = annas_browser.post("/dashboard/ads/hide", {"decision": str(decision.pk)})
    assert response.status_code == 302
    assert HiddenAdvertiser.objects.filter(subject=anna, advertiser=advertiser).exists()
    body = annas_browser.get("/dashboard/ads/").content.decode()
    assert "You will not see ads from Lumen Coffee again." in body
    assert "Show ads from Lumen Coffee again" in body
    [next_decision] = show_ads(anna)
    assert next_decision.reason == DecisionReason.NO_ELIGIBLE_AD

    # Hiding twice changes nothing; undoing brings the ads back.
    annas_browser.post("/dashboard/ads/hide", {"decision": str(decision.pk)})
    assert HiddenAdvertiser.objects.filter(subject=anna).count() == 1
    response = annas_browser.post(f"/dashboard/ads/hidden/{advertiser.pk}/show")
    assert response.status_code == 302
    assert not HiddenAdvertiser.objects.filter(subject=anna).exists()
    assert (
        "The advertiser is no longer hidden."
        in annas_browser.get("/dashboard/ads/").content.decode()
    )
    [again] = show_ads(anna)
    assert again.reason == DecisionReason.SERVED


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"decision": "not-a-uuid"}, 400),
        ({}, 400),
        ({"decision": "00000000-0000-0000-0000-000000000000"}, 404),
    ],
)
def test_a_bad_hide_request_gets_a_readable_page(
    annas_browser: Client, data: dict, status: int
) -> None:
    response = annas_browser.post("/dashboard/ads/hide", data)
    assert response.status_code == status
    assert "<h1>" in response.content.decode()
    assert not HiddenAdvertiser.objects.exists()


def test_undoing_a_hide_that_does_not_exist_is_a_readable_404(annas_browser: Client) -> None:
    response = annas_browser.post("/dashboard/ads/hidden/999999/show")
    assert response.status_code == 404
    assert "Not found" in response.content.decode()


def test_erasing_ad_data_needs_a_confirmation(
    anna: Subject, annas_browser: Client, ads_live: None
) -> None:
    advertiser_with_ad()
    allow(anna, "ads_personalization", "analytics")
    send_signals(anna)
    show_ads(anna)
    page = annas_browser.get("/dashboard/ads/erase")
    assert page.status_code == 200
    assert "Erase your ad data?" in page.content.decode()
    assert Signal.objects.filter(subject=anna).exists()
    assert AdDecision.objects.filter(subject=anna).exists()


def test_erasing_ad_data_removes_signals_features_and_decisions_and_keeps_consent(
    anna: Subject, bob: Subject, annas_browser: Client, ads_live: None
) -> None:
    ad = advertiser_with_ad()
    allow(anna, "ads_personalization", "analytics")
    allow(bob, "ads_personalization", "analytics")
    send_signals(anna)
    send_signals(bob)
    [decision] = show_ads(anna)
    record_event(decision_id=decision.pk, type="impression")
    show_ads(bob)
    HiddenAdvertiser.objects.create(subject=anna, advertiser=ad.campaign.advertiser)
    events = ConsentEvent.objects.filter(subject=anna).count()
    states = list(ConsentState.objects.filter(subject=anna).values_list("purpose_id", "granted"))

    response = annas_browser.post("/dashboard/ads/erase")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/data"
    assert not Signal.objects.filter(subject=anna).exists()
    assert not SubjectFeatures.objects.filter(subject=anna).exists()
    assert not AdDecision.objects.filter(subject=anna).exists()
    assert not AdEvent.objects.filter(decision__subject=anna).exists()
    # Consent records and the wish not to see an advertiser are kept.
    assert ConsentEvent.objects.filter(subject=anna).count() == events
    assert list(ConsentState.objects.filter(subject=anna).values_list("purpose_id", "granted")) == (
        states
    )
    assert HiddenAdvertiser.objects.filter(subject=anna).exists()
    # Nobody else's data is touched.
    assert Signal.objects.filter(subject=bob).exists()
    assert SubjectFeatures.objects.filter(subject=bob).exists()
    assert AdDecision.objects.filter(subject=bob).exists()
    assert "Your ad data has been erased." in annas_browser.get("/dashboard/data").content.decode()
