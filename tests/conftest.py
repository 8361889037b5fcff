"""Fixtures and personas.

Personas are services holding tokens with different scopes:
- the app back end (consent:read, consent:write), which registers people and records
  their choices;
- the ad server (consent:read only), which asks whether it may use data;
- the policy tool (policy:read, policy:write);
- an outsider with a revoked token.

Staff personas are admin users put in their group by name, never superusers: Pat
(policy staff), Sam (support) and Bo (billing ops).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from consent import services
from consent.models import ServiceToken

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if connection.vendor == "postgresql":
        return
    if IN_CI:
        raise pytest.UsageError("CI must run the suite against PostgreSQL, not SQLite.")
    skip = pytest.mark.skip(reason="needs PostgreSQL (running on the SQLite fallback)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterable[None]:
    """Each test starts with no verified tokens, and no campaigns, cached in the process."""
    from ads.decisions import forget_catalog
    from consent.auth import forget_token

    forget_token()
    forget_catalog()
    yield
    forget_token()
    forget_catalog()


def _client(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def api_client(db: None) -> Callable[..., APIClient]:
    """api_client("consent:read", "consent:write") → a client with such a token."""

    def make(*scopes: str, name: str = "tests") -> APIClient:
        _, raw = services.create_service_token(name=name, scopes=scopes)
        return _client(raw)

    return make


@pytest.fixture
def app_backend(api_client: Callable[..., APIClient]) -> APIClient:
    return api_client("consent:read", "consent:write", name="app-backend")


@pytest.fixture
def ad_server(api_client: Callable[..., APIClient]) -> APIClient:
    return api_client("consent:read", name="ad-server")


@pytest.fixture
def policy_tool(api_client: Callable[..., APIClient]) -> APIClient:
    return api_client("policy:read", "policy:write", name="policy-tool")


@pytest.fixture
def outsider(db: None) -> APIClient:
    token, raw = services.create_service_token(
        name="former-partner", scopes=["consent:read", "consent:write"]
    )
    services.revoke_service_token(token=ServiceToken.objects.get(pk=token.pk))
    return _client(raw)


@pytest.fixture
def anonymous() -> APIClient:
    return _client(None)


def scopes_except(*keep: str) -> Iterable[str]:
    from consent.choices import Scope

    return [s for s in Scope.values if s not in keep]


# --- staff personas (the admin) ---------------------------------------------------------

POLICY_STAFF, SUPPORT, BILLING_OPS = "Policy staff", "Support", "Billing ops"


def staff_member(username: str, group: str | None) -> User:
    user = User.objects.create_user(username, password="pw-for-tests-only", is_staff=True)
    if group is not None:
        user.groups.add(Group.objects.get(name=group))
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def pat(db: None) -> Client:
    return logged_in(staff_member("policy-pat", POLICY_STAFF))


@pytest.fixture
def sam(db: None) -> Client:
    return logged_in(staff_member("support-sam", SUPPORT))


@pytest.fixture
def bo(db: None) -> Client:
    return logged_in(staff_member("billing-bo", BILLING_OPS))
