"""The ad decision's fast lane: `POST /api/v1/ads/decisions` without DRF's machinery
when the request is plainly valid (the consent check has the same, see
`consent/fastlane.py`, whose checks this one reuses).

A plainly valid request: a token with `ads:decide`, and a JSON object with exactly a
`subject` (a trimmed external id), a `placement` of `status` or `channels`, and a
`context` of exactly `country` and `language`, each taken by the same validators the
DRF view runs. Anything else — a chat placement, a bad token, any doubt — goes to the
DRF view, which decides and words the error. The answer is the body the view renders
(`tests/ads/test_fastlane.py` compares them).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse

from ads import decisions
from ads.choices import PLACEMENTS
from ads.models import AdDecision
from consent import fastlane, ratelimit, validators
from consent.choices import Scope
from consent.errors import InvalidValue

DECIDE = Scope.ADS_DECIDE.value
MAX_ID_LENGTH = 64
MAX_COUNTRY_LENGTH = 2
MAX_LANGUAGE_LENGTH = 35


def _request(request: HttpRequest) -> tuple[str, str, dict[str, str]] | None:
    data = fastlane.json_object(request, {"subject", "placement", "context"})
    if data is None:
        return None
    subject, placement, context = data["subject"], data["placement"], data["context"]
    if (
        not fastlane.plain_text(subject, MAX_ID_LENGTH)
        or type(placement) is not str
        or placement not in PLACEMENTS
        or type(context) is not dict
        or context.keys() != {"country", "language"}
        or not fastlane.plain_text(context["country"], MAX_COUNTRY_LENGTH)
        or not fastlane.plain_text(context["language"], MAX_LANGUAGE_LENGTH)
    ):
        return None
    try:
        return (
            validators.external_id(subject),
            placement,
            {
                "country": validators.country(context["country"]),
                "language": validators.language(context["language"]),
            },
        )
    except InvalidValue:
        return None


def answer(decision: AdDecision) -> dict[str, Any]:
    """What `AdDecisionOut` renders for a decision."""
    ad = decision.ad
    served = None
    if ad is not None:
        campaign = ad.campaign
        served = {
            "id": ad.pk,
            "headline": ad.headline,
            "body": ad.body,
            "image_url": ad.image_url,
            "call_to_action": ad.call_to_action,
            "advertiser": campaign.advertiser.name,
            "click_to_chat": campaign.click_to_chat or None,
        }
    return {
        "decision_id": str(decision.pk),
        "ad": served,
        "personalized": decision.personalized,
        "reason": decision.reason,
    }


def decide(request: HttpRequest) -> HttpResponse | None:
    """The answer to a plainly valid decision request, or None for the DRF view."""
    if request.method != "POST" or (verified := fastlane.token(request, DECIDE)) is None:
        return None
    throttled = ratelimit.fast_lane_refusal(request, verified)
    if throttled is not None:
        return throttled
    parsed = _request(request)
    if parsed is None:
        return None
    subject, placement, context = parsed
    decision = decisions.decide(external_id=subject, placement=placement, context=context)
    return fastlane.json_response(answer(decision), allow="POST, OPTIONS")
