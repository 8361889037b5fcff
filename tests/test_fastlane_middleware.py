"""The fast lanes answered ahead of the middleware chain (`config/fastlane.py`) give
what the whole chain gives: the same status, body and headers."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.test import Client

from consent import services
from tests.factories import SubjectFactory, publish

pytestmark = pytest.mark.django_db

LANE = "config.fastlane.FastLaneMiddleware"
CHECK = ("/api/v1/consent-checks", {"purpose": "analytics", "subjects": ["alice", "nobody"]})
DECISION = (
    "/api/v1/ads/decisions",
    {"subject": "alice", "placement": "status", "context": {"country": "DE", "language": "de"}},
)
PER_REQUEST = {"X-Request-ID"}


@pytest.fixture
def token() -> str:
    publish("2025-06")
    SubjectFactory.create(external_id="alice", country="DE", birth_year=1990)
    _, raw = services.create_service_token(name="ad-server", scopes=["consent:read", "ads:decide"])
    return raw


def post(token: str, path: str, body: Any, language: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if language:
        headers["Accept-Language"] = language
    return Client().post(path, body, content_type="application/json", headers=headers)


def headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in PER_REQUEST}


def comparable(response: Any) -> Any:
    body = response.json()
    body.pop("decision_id", None)  # a new decision each time
    return body


@pytest.mark.parametrize(("path", "body"), [CHECK, DECISION], ids=["check", "decision"])
@pytest.mark.parametrize("language", ["", "fr", "pt-BR,pt;q=0.9", "xx-YY"])
def test_a_fast_answer_is_what_the_whole_chain_answers(
    token: str, path: str, body: Any, language: str, settings: Any
) -> None:
    fast = post(token, path, body, language)
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != LANE]
    whole = post(token, path, body, language)

    assert fast.status_code == whole.status_code == 200, (fast.content, whole.content)
    assert headers(fast) == headers(whole)
    assert comparable(fast) == comparable(whole)


def test_an_answered_request_never_reaches_the_rest_of_the_chain(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Any, request: Any) -> None:
        raise AssertionError("the session middleware ran")

    monkeypatch.setattr(SessionMiddleware, "process_request", refuse)

    assert post(token, *CHECK).status_code == 200
    assert post(token, *DECISION).status_code == 200
    with pytest.raises(AssertionError, match="session middleware ran"):
        post(token, CHECK[0], {"purpose": "analytics"})  # declined: down the chain


def test_a_declined_request_is_answered_by_the_view_and_counted_once(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consent import ratelimit

    counted: list[Any] = []
    real = ratelimit.admit_token

    def counting(token: Any) -> Any:
        counted.append(token)
        return real(token)

    monkeypatch.setattr(ratelimit, "admit_token", counting)

    response = post(token, CHECK[0], {"purpose": "analytics", "subjects": []})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/problem+json")
    assert len(counted) == 1


def test_the_request_log_names_the_route_of_a_fast_answer(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="parley.request"):
        post(token, *CHECK)
        post(token, *DECISION)

    routes = [getattr(r, "route", None) for r in caplog.records if r.name == "parley.request"]
    assert routes == ["api/v1/consent-checks", "api/v1/ads/decisions"]
