"""The ad decision's fast lane answers what the DRF view answers, and steps aside for
everything that is not a plainly valid request."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.views import APIView

from ads import decisions_api, fastlane
from ads.choices import CampaignStatus, Placement, Pricing
from ads.models import Ad, AdDecision, Advertiser, Campaign
from consent import services
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

PATH = "/api/v1/ads/decisions"


@pytest.fixture
def tokens() -> dict[str, str]:
    publish("2025-06", "US")
    SubjectFactory.create(external_id="ada", country="US", language="en-US", birth_year=1990)
    SubjectFactory.create(external_id="early", country="DE")  # 2025-06 not live there
    advertiser = Advertiser.objects.create(name="Lumen Coffee", country="US")
    campaign = Campaign.objects.create(
        advertiser=advertiser,
        name="Chat with us",
        placement=Placement.STATUS,
        status=CampaignStatus.ACTIVE,
        starts_at=timezone.now() - timedelta(days=1),
        pricing=Pricing.CPC,
        bid=Decimal("0.50"),
        daily_budget=Decimal("100"),
        total_budget=Decimal("1000"),
        click_to_chat="1234",
    )
    Ad.objects.create(campaign=campaign, headline="Hello", body="Körper", call_to_action="Chat")
    _, decider = services.create_service_token(name="ad-server", scopes=["ads:decide"])
    _, reader = services.create_service_token(name="reader", scopes=["consent:read"])
    return {"decider": decider, "reader": reader}


def body(**changes: Any) -> bytes:
    value: dict[str, Any] = {
        "subject": "ada",
        "placement": "status",
        "context": {"country": "US", "language": "en"},
    }
    value.update(changes)
    return json.dumps(value).encode()


OK, DEFER = True, False
CASES: list[tuple[str, str, bytes, bool]] = [
    ("served", "decider", body(), OK),
    ("channels, nothing there", "decider", body(placement="channels"), OK),
    ("a lower-case country", "decider", body(context={"country": "us", "language": "en"}), OK),
    ("an unknown subject", "decider", body(subject="nobody"), OK),
    ("not live yet", "decider", body(subject="early"), OK),
    ("a chat", "decider", body(placement="chat"), DEFER),
    ("an unknown placement", "decider", body(placement="stories"), DEFER),
    ("a placement that is not text", "decider", body(placement=["status"]), DEFER),
    ("spaces around the subject", "decider", body(subject=" ada"), DEFER),
    ("a subject of other characters", "decider", body(subject="a d a"), DEFER),
    ("an unknown country", "decider", body(context={"country": "XX", "language": "en"}), DEFER),
    ("a bad language", "decider", body(context={"country": "US", "language": "e n"}), DEFER),
    (
        "a context field too many",
        "decider",
        body(context={"country": "US", "language": "en", "city": "x"}),
        DEFER,
    ),
    (
        "no context",
        "decider",
        json.dumps({"subject": "ada", "placement": "status"}).encode(),
        DEFER,
    ),
    ("a field too many", "decider", body(mood=1), DEFER),
    ("broken JSON", "decider", b'{"subject":', DEFER),
    ("no token", "", body(), DEFER),
    ("a token without ads:decide", "reader", body(), DEFER),
]


def _request(tokens: dict[str, str], token: str, content: bytes) -> Any:
    headers = {"Authorization": f"Bearer {tokens[token]}"} if token else {}
    return RequestFactory().post(
        PATH, data=content, content_type="application/json", headers=headers
    )


def _rendered(response: Any) -> tuple[int, str, dict[str, Any]]:
    if hasattr(response, "render"):
        response.render()
    data = json.loads(response.content)
    if "decision_id" in data:  # each answer logs a decision of its own
        assert AdDecision.objects.filter(pk=uuid.UUID(data.pop("decision_id"))).exists()
    return response.status_code, response["Content-Type"], data


@pytest.mark.parametrize(
    ("token", "content", "fast"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_the_fast_lane_answers_as_the_view_does_or_steps_aside(
    tokens: dict[str, str], token: str, content: bytes, fast: bool
) -> None:
    drf_view = APIView.as_view.__func__(decisions_api.DecisionsView)  # type: ignore[attr-defined]

    lane = fastlane.decide(_request(tokens, token, content))

    assert (lane is not None) is fast
    expected = _rendered(drf_view(_request(tokens, token, content)))
    served = decisions_api.DecisionsView.as_view()(_request(tokens, token, content))
    assert _rendered(served) == expected
    if lane is not None:
        assert _rendered(lane) == expected
        assert lane["Allow"] == "POST, OPTIONS"


def test_a_served_answer_names_the_ad_and_the_chat(tokens: dict[str, str]) -> None:
    lane = fastlane.decide(_request(tokens, "decider", body()))

    assert lane is not None
    data = json.loads(lane.content)
    assert data["reason"] == "served"
    assert data["ad"]["advertiser"] == "Lumen Coffee"
    assert data["ad"]["click_to_chat"] == "1234"
    assert data["ad"]["body"] == "Körper"
