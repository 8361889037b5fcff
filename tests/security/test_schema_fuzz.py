"""Schemathesis over the OpenAPI schema the app serves: every operation, called
through the real app (WSGI, in-process, against the test database), with a token
holding every scope and with a token of each scope alone.

Each response must: not be a 5xx; have a status the schema documents for the
operation; have a body and content type that conform to it; and, when it is an error,
be problem+json with the documented members. `FUZZ_MAX_EXAMPLES` bounds the examples
per operation with every scope (default 25), `FUZZ_SCOPE_EXAMPLES` with one scope
(default 3); `make fuzz` runs a longer pass for release checks.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from config.wsgi import application
from consent import services
from consent.choices import Scope

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
SCOPE_EXAMPLES = int(os.environ.get("FUZZ_SCOPE_EXAMPLES", "3"))
PROBLEM = "application/problem+json"


# The schema exactly as `GET /api/schema/` serves it (building it reads no data).
schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@schemathesis.check
def problem_details(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx is problem+json with a title and its own status."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type.split(";")[0].strip() != PROBLEM:
        raise AssertionError(f"{response.status_code} answered as {content_type!r}")
    body = json.loads(response.content)
    if body.get("status") != response.status_code or not body.get("title"):
        raise AssertionError(f"not a problem document: {body!r}")
    return None


# Requests sent, per operation ("METHOD /path"), reported at the end of the module.
SENT: Counter[str] = Counter()


@schemathesis.check
def counted(ctx: Any, response: Any, case: Any) -> bool | None:
    SENT[case.operation.label] += 1
    return None


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nschema fuzzing: {len(SENT)} operations, {sum(SENT.values())} requests")


CHECKS = [
    counted,
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    problem_details,
]


@pytest.fixture
def seeded(demo_data: None, db: None) -> Iterator[None]:
    """Requests reach the app as a server would get them, but without Django closing
    the test's connection at the end of each (as its test client does)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _token(scopes: list[str]) -> str:
    _, raw = services.create_service_token(name="fuzz", scopes=scopes)
    return raw


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_with_every_scope(case: Any, seeded: None) -> None:
    token = _token(list(Scope.values))
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@pytest.fixture(params=Scope.values)
def one_scope_token(request: pytest.FixtureRequest, seeded: None) -> str:
    return _token([request.param])


@schema.parametrize()
@settings(
    max_examples=SCOPE_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_with_each_scope_alone(case: Any, one_scope_token: str) -> None:
    token = one_scope_token
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
