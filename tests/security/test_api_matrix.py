"""Who may call what on the API: every operation x every kind of caller, exactly.

The expectations come from one place, `tests/security/api_matrix.py`; the tests below
check that it covers every operation the URL resolver routes and the OpenAPI schema
documents (a new endpoint without a row fails here), that docs/API.md's matrix says
the same, and then every cell:

- each operation x 17 callers (no token, four malformed headers, an unknown token, a
  revoked token, a deactivated account, each of the 8 scopes alone, all scopes):
  401 / 403 / the success status, errors as problem+json, nothing changed when refused;
- each operation with a "not found" behaviour x 4 callers: 404 only with the scope,
  403 without it (a token cannot learn what exists), 401 without a token;
- each method a route does not have: 405 with Allow for a token, 401 without;
- HEAD like GET, OPTIONS refused for every token;
- the fast lanes answer the cells they may take and refuse nothing themselves; a
  token revoked elsewhere stops working there within API_TOKEN_CACHE_SECONDS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from ads import fastlane as ads_fastlane
from consent import auth, fastlane, services
from consent.choices import Scope
from consent.models import ServiceAccount, ServiceToken
from tests.security.api_matrix import (
    ALL_SCOPES,
    API_PREFIX,
    BY_ID,
    CALLER,
    CALLERS,
    ENDPOINTS,
    SINGLE_SCOPES,
    UNAUTHENTICATED,
    Caller,
    Endpoint,
    expected,
    fingerprint,
    token,
)

PROBLEM = "application/problem+json"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DOCS = Path(django_settings.BASE_DIR) / "docs" / "API.md"


# --- the matrix covers the API ---------------------------------------------------------------


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def routed_operations() -> dict[str, set[str]]:
    """Route below /api/v1/ → the methods its view handles or declares a scope for."""
    found: dict[str, set[str]] = {}
    for route, callback in _walk(get_resolver().url_patterns):
        if not route.startswith(API_PREFIX.lstrip("/")):
            continue
        view = getattr(callback, "cls", None) or callback.view_class
        methods = {m for m in METHODS if hasattr(view, m.lower())}
        methods |= set(getattr(view, "required_scopes", {}))
        found.setdefault(route.removeprefix(API_PREFIX.lstrip("/")), set()).update(methods)
    return found


ROUTES = routed_operations()


def test_the_matrix_has_one_row_per_operation_the_url_resolver_routes() -> None:
    assert len(BY_ID) == len(ENDPOINTS)
    routed = {(method, route) for route, methods in ROUTES.items() for method in methods}

    assert {(e.method, e.route) for e in ENDPOINTS} == routed
    assert len(routed) > 30  # the walk found the API, not nothing


def test_the_matrix_has_one_row_per_operation_of_the_openapi_schema() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented = {
        (method.upper(), path): operation
        for path, operations in schema["paths"].items()
        if path.startswith(API_PREFIX)
        for method, operation in operations.items()
    }

    assert set(documented) == {(e.method, e.openapi_path) for e in ENDPOINTS}
    for endpoint in ENDPOINTS:
        operation = documented[endpoint.method, endpoint.openapi_path]
        responses = operation["responses"]
        codes = {"401", "403", str(endpoint.success)} | ({"404"} if endpoint.missing else set())
        assert codes <= set(responses), (endpoint.id, sorted(responses))
        for code in codes - {str(endpoint.success)}:
            assert PROBLEM in responses[code]["content"], (endpoint.id, code)
        assert {"bearerAuth": []} in operation["security"], endpoint.id


def docs_matrix() -> dict[str, list[str]]:
    """docs/API.md's "Authorization matrix": `METHOD /path` → the row's other cells."""
    text = DOCS.read_text()
    section = text.split("## Authorization matrix", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(GET|POST|PUT|PATCH|DELETE) (/\S*)`", cells[0])
        if match:
            rows[f"{match[1]} {API_PREFIX.rstrip('/')}{match[2]}"] = cells[1:]
    return rows


def test_the_documented_matrix_says_what_the_tests_check() -> None:
    documented = docs_matrix()

    assert set(documented) == {f"{e.method} {e.openapi_path}" for e in ENDPOINTS}
    for endpoint in ENDPOINTS:
        success = str(endpoint.success)
        assert documented[f"{endpoint.method} {endpoint.openapi_path}"] == [
            endpoint.scope,
            "401",
            success,
            "403",
            success,
            "404" if endpoint.missing else "—",
        ], endpoint.id


def test_the_older_access_table_agrees_with_the_matrix() -> None:
    """tests/consent/test_api_access.py keeps a table of its own; it must not drift."""
    from tests.consent.test_api_access import OPERATIONS

    assert {op.id: (op.scope, op.success) for op in OPERATIONS} == {
        e.id: (e.scope, e.success) for e in ENDPOINTS
    }


def test_every_scope_is_needed_by_some_operation() -> None:
    assert {e.scope for e in ENDPOINTS} == set(Scope.values)


# --- calling ----------------------------------------------------------------------------------


def call(header: str | None, method: str, path: str, body: Any) -> Any:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    url = f"{API_PREFIX}{path}"
    if body is None:
        return client.generic(method, url)
    return getattr(client, method.lower())(url, body, format="json")


def assert_status(response: Any, status: int, endpoint: Endpoint | None = None) -> None:
    assert response.status_code == status, response.content
    if status < 400:
        return
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= body.keys()
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")
    if status == 403 and endpoint is not None:
        assert endpoint.scope in body["detail"]


# --- every operation x every caller -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c.name)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_cell(endpoint: Endpoint, caller: Caller, fast_lane_answers: list[str]) -> None:
    path, body = endpoint.valid()
    header = caller.header()
    status = expected(endpoint, caller)
    before = fingerprint() if status >= 400 else None

    response = call(header, endpoint.method, path, body)

    assert_status(response, status, endpoint)
    if before is not None:
        assert fingerprint() == before, "a refused call changed something"
    lane_took_it = endpoint.fast_lane and status < 400
    assert fast_lane_answers == ([f"{API_PREFIX}{path}"] if lane_took_it else [])


NOT_FOUND_CALLERS = ["the scope alone", "all scopes", "every other scope", "no token"]


@pytest.mark.django_db
@pytest.mark.parametrize("who", NOT_FOUND_CALLERS)
@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.missing], ids=lambda e: e.id)
def test_not_found_cell(endpoint: Endpoint, who: str) -> None:
    assert endpoint.missing is not None
    path, body = endpoint.missing()
    scopes: tuple[str, ...] | None = {
        "the scope alone": (endpoint.scope,),
        "all scopes": tuple(Scope.values),
        "every other scope": tuple(s for s in Scope.values if s != endpoint.scope),
        "no token": None,
    }[who]
    caller = Caller(who, scopes, lambda: None)
    header = None if scopes is None else f"Bearer {token(*scopes)}"
    before = fingerprint()

    response = call(header, endpoint.method, path, body)

    assert_status(response, expected(endpoint, caller, resource_exists=False), endpoint)
    assert fingerprint() == before


# --- methods, HEAD and OPTIONS -------------------------------------------------------------


def sample_path(route: str) -> str:
    """A concrete path for a route: any value will do where only the method matters."""
    return re.sub(r"<(?:int|str|slug):\w+>", "1", route)


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_method_the_route_does_not_have(route: str) -> None:
    lacking = [m for m in METHODS if m not in ROUTES[route]]
    header = f"Bearer {token(*Scope.values)}"
    for method in lacking:
        body: dict[str, Any] | None = None if method in ("GET", "DELETE") else {}
        refused = call(header, method, sample_path(route), body)
        assert_status(refused, 405)
        allowed = {m.strip() for m in refused["Allow"].split(",")}
        assert allowed & set(METHODS) == ROUTES[route], (route, method)
        assert_status(call(None, method, sample_path(route), body), 401)


GETS = [e for e in ENDPOINTS if e.method == "GET"]


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", GETS, ids=lambda e: e.id)
def test_head_is_answered_like_get(endpoint: Endpoint) -> None:
    path, _ = endpoint.valid()
    for caller in (ALL_SCOPES, *SINGLE_SCOPES, UNAUTHENTICATED[0]):
        response = call(caller.header(), "HEAD", path, None)
        assert response.status_code == expected(endpoint, caller), (caller.name, response)
        assert response.content == b""


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_options_is_refused_to_every_token(route: str) -> None:
    assert_status(call(f"Bearer {token(*Scope.values)}", "OPTIONS", sample_path(route), None), 403)
    assert_status(call(None, "OPTIONS", sample_path(route), None), 401)


# --- tokens across accounts ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_service_never_sees_or_deletes_another_services_webhooks() -> None:
    other, _ = ServiceAccount.objects.get_or_create(name="crm-service")
    from consent import webhooks

    theirs = webhooks.subscribe(
        name="theirs", url="https://crm.example.com/h", events=["consent.changed"], account=other
    )
    header = f"Bearer {token(*Scope.values)}"

    assert call(header, "GET", "webhooks", None).json() == []
    before = fingerprint()
    assert_status(call(header, "DELETE", f"webhooks/{theirs.pk}", None), 404)
    assert fingerprint() == before


# --- the fast lanes: revocation within the cache bound -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth.time, "monotonic", clock)
    return clock


LANES = [e for e in ENDPOINTS if e.fast_lane]
LANE_FUNCTIONS = {"consent-checks": fastlane.consent_check, "ads/decisions": ads_fastlane.decide}


def lane_request(endpoint: Endpoint, raw: str, request_: tuple[str, Any]) -> tuple[Any, Any]:
    """A request, straight to the endpoint's fast lane and then over HTTP."""
    path, body = request_
    request = RequestFactory().post(
        f"{API_PREFIX}{path}",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    lane = LANE_FUNCTIONS[endpoint.route](request)
    return lane, call(f"Bearer {raw}", endpoint.method, path, body)


def test_every_fast_lane_is_known() -> None:
    assert {e.route for e in LANES} == set(LANE_FUNCTIONS)


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", LANES, ids=lambda e: e.id)
@pytest.mark.parametrize("change", ["revoked", "account deactivated", "scope removed"])
def test_a_token_changed_by_another_process_stops_working_in_the_lane_within_the_cache_bound(
    endpoint: Endpoint, change: str, clock: Clock, settings: Any
) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 10
    issued, raw = services.create_service_token(name=CALLER, scopes=[endpoint.scope])
    valid = endpoint.valid()
    lane, response = lane_request(endpoint, raw, valid)
    assert lane is not None
    assert response.status_code == 200

    # Another web process changes the token: this one learns only from the database.
    if change == "revoked":
        ServiceToken.objects.filter(pk=issued.pk).update(revoked_at=timezone.now())
    elif change == "account deactivated":
        ServiceAccount.objects.filter(pk=issued.account_id).update(is_active=False)
    else:
        ServiceToken.objects.filter(pk=issued.pk).update(scopes=[Scope.POLICY_READ.value])
    clock.now += 9.9
    lane, response = lane_request(endpoint, raw, valid)
    assert lane is not None  # the documented bound: still trusted for these seconds
    assert response.status_code == 200

    clock.now += 0.2
    lane, response = lane_request(endpoint, raw, valid)

    assert lane is None
    assert_status(response, 403 if change == "scope removed" else 401, endpoint)


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", LANES, ids=lambda e: e.id)
def test_a_token_revoked_in_this_process_is_refused_by_the_lane_at_once(
    endpoint: Endpoint, clock: Clock
) -> None:
    issued, raw = services.create_service_token(name=CALLER, scopes=[endpoint.scope])
    valid = endpoint.valid()
    lane, _ = lane_request(endpoint, raw, valid)
    assert lane is not None

    services.revoke_service_token(token=issued)
    lane, response = lane_request(endpoint, raw, valid)

    assert lane is None
    assert_status(response, 401)
