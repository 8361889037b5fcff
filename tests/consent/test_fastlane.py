"""The consent check's fast lane answers exactly what the DRF view answers, and steps
aside for everything that is not a plainly valid request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from rest_framework.views import APIView

from consent import api, fastlane, services
from consent.choices import DenialReason
from consent.models import ServiceToken
from consent.selectors import CheckResult
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

PATH = "/api/v1/consent-checks"


@pytest.fixture
def tokens() -> dict[str, str]:
    publish("2025-06")
    SubjectFactory.create(external_id="alice", country="DE", birth_year=1990)
    SubjectFactory.create(external_id="teen", country="BR", birth_year=2012)
    _, reader = services.create_service_token(name="ad-server", scopes=["consent:read"])
    _, writer = services.create_service_token(name="app", scopes=["consent:write"])
    revoked, revoked_raw = services.create_service_token(name="old", scopes=["consent:read"])
    services.revoke_service_token(token=ServiceToken.objects.get(pk=revoked.pk))
    return {"reader": reader, "writer": writer, "revoked": revoked_raw}


def body(purpose: Any = "analytics", subjects: Any = ("alice",), **extra: Any) -> bytes:
    subject_list = list(subjects) if isinstance(subjects, tuple) else subjects
    return json.dumps({"purpose": purpose, "subjects": subject_list, **extra}).encode()


OK, DEFER = True, False
CASES: list[tuple[str, str, bytes, str, bool]] = [
    # (name, token, body, content type, the fast lane answers)
    ("one subject", "reader", body(), "application/json", OK),
    (
        "several, repeated, unknown",
        "reader",
        body("ads_personalization", ("alice", "teen", "x", "alice")),
        "application/json",
        OK,
    ),
    ("a charset parameter", "reader", body(), "application/json; charset=utf-8", OK),
    ("unicode ids", "reader", body(subjects=("ação", "用户")), "application/json", OK),
    (
        "1,000 subjects",
        "reader",
        body(subjects=tuple(f"s{i}" for i in range(1000))),
        "application/json",
        OK,
    ),
    (
        "1,001 subjects",
        "reader",
        body(subjects=tuple(f"s{i}" for i in range(1001))),
        "application/json",
        DEFER,
    ),
    ("no subjects", "reader", body(subjects=()), "application/json", DEFER),
    ("unknown purpose", "reader", body("nothing"), "application/json", DEFER),
    ("purpose not a slug", "reader", body("ads personalization"), "application/json", DEFER),
    ("purpose too long", "reader", body("a" * 65), "application/json", DEFER),
    ("an id with spaces around", "reader", body(subjects=(" alice",)), "application/json", DEFER),
    ("an id too long", "reader", body(subjects=("a" * 65,)), "application/json", DEFER),
    ("an empty id", "reader", body(subjects=("",)), "application/json", DEFER),
    ("a NUL in an id", "reader", body(subjects=("al\x00ice",)), "application/json", DEFER),
    (
        "a lone surrogate",
        "reader",
        b'{"purpose": "analytics", "subjects": ["\\ud800"]}',
        "application/json",
        DEFER,
    ),
    ("a number for an id", "reader", body(subjects=[7]), "application/json", DEFER),
    ("subjects not a list", "reader", body(subjects="alice"), "application/json", DEFER),
    ("an unknown field", "reader", body(mood=1), "application/json", DEFER),
    ("a missing field", "reader", b'{"purpose": "analytics"}', "application/json", DEFER),
    ("not an object", "reader", b'["analytics"]', "application/json", DEFER),
    ("broken JSON", "reader", b'{"purpose": ', "application/json", DEFER),
    (
        "NaN",
        "reader",
        b'{"purpose": "analytics", "subjects": ["a"], "x": NaN}',
        "application/json",
        DEFER,
    ),
    (
        "not UTF-8",
        "reader",
        '{"purpose": "analytics", "subjects": ["é"]}'.encode("latin-1"),
        "application/json",
        DEFER,
    ),
    (
        "form data",
        "reader",
        b"purpose=analytics&subjects=alice",
        "application/x-www-form-urlencoded",
        DEFER,
    ),
    ("no token", "", body(), "application/json", DEFER),
    ("a revoked token", "revoked", body(), "application/json", DEFER),
    ("a token without consent:read", "writer", body(), "application/json", DEFER),
]


def _request(tokens: dict[str, str], token: str, content: bytes, content_type: str) -> Any:
    headers = {"Authorization": f"Bearer {tokens[token]}"} if token else {}
    return RequestFactory().post(PATH, data=content, content_type=content_type, headers=headers)


def _rendered(response: HttpResponse) -> tuple[int, str, bytes]:
    if hasattr(response, "render"):
        response.render()
    return response.status_code, response["Content-Type"], response.content


@pytest.mark.parametrize(
    ("token", "content", "content_type", "fast"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_fast_lane_answers_as_the_view_does_or_steps_aside(
    tokens: dict[str, str], token: str, content: bytes, content_type: str, fast: bool
) -> None:
    drf_view = APIView.as_view.__func__(api.ConsentChecksView)  # type: ignore[attr-defined]
    lane = fastlane.consent_check(_request(tokens, token, content, content_type))

    assert (lane is not None) is fast
    expected = _rendered(drf_view(_request(tokens, token, content, content_type)))
    served = _rendered(
        api.ConsentChecksView.as_view()(_request(tokens, token, content, content_type))
    )
    assert served == expected
    if lane is not None:
        assert _rendered(lane) == expected
        assert lane["Allow"] == "POST, OPTIONS"


def test_the_lane_is_what_the_url_serves(client: Any, tokens: dict[str, str]) -> None:
    response = client.post(
        PATH,
        data=body(),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tokens['reader']}",
    )

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"subject": "alice", "allowed": False, "reason": "denied"}
    ]
    assert not hasattr(response, "renderer_context")  # answered without DRF


@pytest.mark.parametrize(
    "subject",
    ["alice", 'a "quoted" \\ id', "ação", "用户", "tab\there", "line\u2028sep", "emoji 🙂"],
)
def test_the_answer_is_put_together_as_the_json_encoder_writes_it(subject: str) -> None:
    results = [CheckResult(subject, True, None)] + [
        CheckResult(subject, False, reason) for reason in DenialReason
    ]
    payload = {
        "purpose": "ads_personalization",
        "results": [
            {"subject": r.subject, "allowed": r.allowed, "reason": r.reason} for r in results
        ],
    }

    built = fastlane._check_response("ads_personalization", results)

    assert built.content == fastlane.json_response(payload, allow="POST, OPTIONS").content
    assert built["Content-Type"] == "application/json"
    assert built["Allow"] == "POST, OPTIONS"
    assert json.loads(built.content)["results"][1:] == [
        {"subject": subject, "allowed": False, "reason": reason.value} for reason in DenialReason
    ]
