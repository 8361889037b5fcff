"""Who may call what: every API operation against every kind of caller.

OPERATIONS is the table of every operation under /api/v1/ with the scope PRODUCT.md
gives it and a valid request. `test_the_table_covers_every_api_operation` walks the
URL configuration, so an endpoint or method added without a row here fails the suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from ads import decisions
from ads.choices import CampaignStatus, Placement, Pricing
from ads.models import Ad, AdDecision, AdEvent, Advertiser, Campaign, Signal
from billing import services as billing_services
from billing.models import BillingAccount, MessageCharge, Product, Purchase, Refund
from consent import auth, rollouts, services, webhooks
from consent.choices import Scope
from consent.models import (
    ConsentEvent,
    DashboardLink,
    PolicyNotice,
    Rollout,
    ServiceAccount,
    ServiceToken,
    Subject,
    WebhookSubscription,
)
from tests.conftest import scopes_except
from tests.factories import SubjectFactory, publish

PROBLEM = "application/problem+json"
API_PREFIX = "api/v1/"
HANDLER_METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str
    route: str  # the Django route below /api/v1/
    scope: str
    success: int
    # Builds valid data for the call; returns the path (below /api/v1/) and the body.
    prepare: Callable[[], tuple[str, Any]]

    @property
    def id(self) -> str:
        return f"{self.method} {self.route}"


def _subject(external_id: str = "alice", **fields: Any) -> str:
    return SubjectFactory.create(external_id=external_id, **fields).external_id


def _with_pending_notice() -> str:
    # The rest of the US asks no fresh decision, so the notice can simply be acknowledged.
    external_id = _subject(country="US")
    assert publish("2025-06", "US") == 1
    return external_id


def _newest_event(external_id: str) -> int:
    return ConsentEvent.objects.filter(subject__external_id=external_id).latest("id").pk


def _own_subscription() -> int:
    """A webhook subscription of "caller", the account the table's tokens belong to."""
    account, _ = ServiceAccount.objects.get_or_create(name="caller")
    return webhooks.subscribe(
        name="crm", url="https://crm.example.com/hooks", events=["consent.changed"], account=account
    ).pk


def _rollout(*controls: str) -> int:
    """The seeded 2025-06 rollout (scheduled, so start, pause and cancel are valid),
    after the given controls (after "pause", resume is valid)."""
    rollout = Rollout.objects.get(version__label="2025-06")
    for control in controls:
        getattr(rollouts, control)(rollout=rollout, actor="staff:tests")
    return rollout.pk


def _served_decision() -> str:
    """A decision that served an ad, for reporting its impression."""
    external_id = _with_pending_notice()
    campaign = Campaign.objects.create(
        advertiser=Advertiser.objects.create(name="Lumen", country="US"),
        name="Autumn",
        placement=Placement.STATUS,
        status=CampaignStatus.ACTIVE,
        starts_at=timezone.now() - timedelta(days=1),
        pricing=Pricing.CPM,
        bid=Decimal("4"),
        daily_budget=Decimal("10"),
        total_budget=Decimal("100"),
    )
    Ad.objects.create(campaign=campaign, headline="Autumn", body="Blend", call_to_action="Shop")
    decision = decisions.decide(
        external_id=external_id,
        placement=Placement.STATUS,
        context={"country": "US", "language": "en"},
    )
    assert decision.ad is not None
    return str(decision.pk)


def _billing_account() -> int:
    return billing_services.create_account(
        kind="business", name="Casa Verde", country="BR", currency="BRL"
    ).pk


def _product() -> int:
    return billing_services.create_product(
        seller_id=_billing_account(), type="guide", title="Guide", price=Decimal("29.00")
    ).pk


def _purchase(method: str = "sandbox_ok") -> Purchase:
    bought, _ = billing_services.purchase(
        purchase_id="p-1", product_id=_product(), buyer="alice", payment_method=method
    )
    return bought


READ = Scope.CONSENT_READ.value
WRITE = Scope.CONSENT_WRITE.value
BILLING_READ = Scope.BILLING_READ.value
BILLING_WRITE = Scope.BILLING_WRITE.value
BILLING_ACCOUNT = "billing/accounts/<int:account_id>"
POLICY_READ = Scope.POLICY_READ.value
POLICY_WRITE = Scope.POLICY_WRITE.value
ADS_DECIDE = Scope.ADS_DECIDE.value
SIGNALS_WRITE = Scope.SIGNALS_WRITE.value
SUBJECT = "subjects/<str:external_id>"
ROLLOUT = "rollouts/<int:rollout_id>"

OPERATIONS = [
    Operation(
        "POST",
        "subjects",
        WRITE,
        201,
        lambda: ("subjects", {"external_id": "newcomer", "country": "DE"}),
    ),
    Operation("GET", SUBJECT, READ, 200, lambda: (f"subjects/{_subject()}", None)),
    Operation("PATCH", SUBJECT, WRITE, 200, lambda: (f"subjects/{_subject()}", {"language": "fr"})),
    Operation("DELETE", SUBJECT, WRITE, 204, lambda: (f"subjects/{_subject()}", None)),
    Operation(
        "GET", f"{SUBJECT}/consents", READ, 200, lambda: (f"subjects/{_subject()}/consents", None)
    ),
    Operation(
        "PUT",
        f"{SUBJECT}/consents/<str:purpose>",
        WRITE,
        200,
        lambda: (f"subjects/{_subject()}/consents/analytics", {"granted": True}),
    ),
    Operation(
        "GET", f"{SUBJECT}/events", READ, 200, lambda: (f"subjects/{_subject()}/events", None)
    ),
    Operation(
        "GET",
        f"{SUBJECT}/events/<int:event_id>/receipt",
        READ,
        200,
        lambda: (f"subjects/alice/events/{_newest_event(_subject())}/receipt", None),
    ),
    Operation(
        "POST",
        f"{SUBJECT}/notice/acknowledge",
        WRITE,
        200,
        lambda: (f"subjects/{_with_pending_notice()}/notice/acknowledge", None),
    ),
    Operation(
        "POST",
        f"{SUBJECT}/dashboard-links",
        WRITE,
        201,
        lambda: (f"subjects/{_subject()}/dashboard-links", None),
    ),
    Operation(
        "POST",
        "consent-checks",
        READ,
        200,
        lambda: ("consent-checks", {"purpose": "analytics", "subjects": [_subject(), "ghost"]}),
    ),
    Operation("GET", "purposes", POLICY_READ, 200, lambda: ("purposes", None)),
    Operation(
        "GET", "jurisdictions/<str:code>", POLICY_READ, 200, lambda: ("jurisdictions/DE", None)
    ),
    Operation("GET", "webhooks", READ, 200, lambda: ("webhooks", None)),
    Operation(
        "POST",
        "webhooks",
        READ,
        201,
        lambda: (
            "webhooks",
            {"name": "crm", "url": "https://crm.example.com/hooks", "events": ["consent.changed"]},
        ),
    ),
    Operation(
        "DELETE",
        "webhooks/<int:subscription_id>",
        READ,
        204,
        lambda: (f"webhooks/{_own_subscription()}", None),
    ),
    Operation("GET", "rollouts", POLICY_READ, 200, lambda: ("rollouts", None)),
    Operation("GET", ROLLOUT, POLICY_READ, 200, lambda: (f"rollouts/{_rollout()}", None)),
    Operation(
        "POST",
        f"{ROLLOUT}/dry-run",
        POLICY_READ,
        200,
        lambda: (f"rollouts/{_rollout()}/dry-run", None),
    ),
    Operation(
        "POST",
        f"{ROLLOUT}/start",
        POLICY_WRITE,
        200,
        lambda: (f"rollouts/{_rollout()}/start", None),
    ),
    Operation(
        "POST",
        f"{ROLLOUT}/pause",
        POLICY_WRITE,
        200,
        lambda: (f"rollouts/{_rollout()}/pause", None),
    ),
    Operation(
        "POST",
        f"{ROLLOUT}/resume",
        POLICY_WRITE,
        200,
        lambda: (f"rollouts/{_rollout('pause')}/resume", None),
    ),
    Operation(
        "POST",
        f"{ROLLOUT}/cancel",
        POLICY_WRITE,
        200,
        lambda: (f"rollouts/{_rollout()}/cancel", None),
    ),
    Operation(
        "POST",
        "signals",
        SIGNALS_WRITE,
        200,
        lambda: (
            "signals",
            {
                "events": [
                    {
                        "type": "app_session",
                        "subject": _with_pending_notice(),
                        "occurred_at": timezone.now().isoformat(),
                    }
                ]
            },
        ),
    ),
    Operation(
        "POST",
        "ads/decisions",
        ADS_DECIDE,
        200,
        lambda: (
            "ads/decisions",
            {
                "subject": _subject(),
                "placement": "status",
                "context": {"country": "DE", "language": "de"},
            },
        ),
    ),
    Operation(
        "POST",
        "ads/events",
        ADS_DECIDE,
        201,
        lambda: ("ads/events", {"decision_id": _served_decision(), "type": "impression"}),
    ),
    Operation("GET", "billing/accounts", BILLING_READ, 200, lambda: ("billing/accounts", None)),
    Operation(
        "POST",
        "billing/accounts",
        BILLING_WRITE,
        201,
        lambda: ("billing/accounts", {"name": "Casa Verde", "country": "BR", "currency": "BRL"}),
    ),
    Operation(
        "GET",
        BILLING_ACCOUNT,
        BILLING_READ,
        200,
        lambda: (f"billing/accounts/{_billing_account()}", None),
    ),
    Operation(
        "PUT",
        f"{BILLING_ACCOUNT}/plan",
        BILLING_WRITE,
        200,
        lambda: (f"billing/accounts/{_billing_account()}/plan", {"plan": "premium"}),
    ),
    Operation(
        "GET",
        f"{BILLING_ACCOUNT}/invoices",
        BILLING_READ,
        200,
        lambda: (f"billing/accounts/{_billing_account()}/invoices", None),
    ),
    Operation(
        "POST",
        "billing/messages",
        BILLING_WRITE,
        201,
        lambda: (
            "billing/messages",
            {
                "message_id": "wamid-1",
                "account": _billing_account(),
                "category": "marketing",
                "template": "spring_sale",
                "recipient_country": "IN",
                "delivered_at": "2025-08-12T10:00:00Z",
                "service_window_open": False,
                "entry_point_window_open": False,
            },
        ),
    ),
    Operation(
        "POST",
        "billing/products",
        BILLING_WRITE,
        201,
        lambda: (
            "billing/products",
            {"seller": _billing_account(), "type": "guide", "title": "Guide", "price": "29.00"},
        ),
    ),
    Operation(
        "POST",
        "billing/purchases",
        BILLING_WRITE,
        201,
        lambda: ("billing/purchases", {"purchase_id": "p-1", "product": _product(), "buyer": "bo"}),
    ),
    Operation(
        "POST",
        "billing/purchases/<str:purchase_id>/refunds",
        BILLING_WRITE,
        201,
        lambda: (f"billing/purchases/{_purchase().purchase_id}/refunds", {"refund_id": "r-1"}),
    ),
    Operation(
        "POST",
        "billing/gateway-events",
        BILLING_WRITE,
        200,
        lambda: (
            "billing/gateway-events",
            {
                "gateway": "sandbox",
                "reference": _purchase("sandbox_pending").gateway_reference,
                "status": "captured",
            },
        ),
    ),
]


# --- the table covers the URL configuration ------------------------------------------------


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def _view_class(callback: Any) -> type:
    return getattr(callback, "cls", None) or callback.view_class


def api_operations() -> set[tuple[str, str]]:
    """(method, route below /api/v1/) for every handler and declared scope in the URLconf."""
    found = set()
    for route, callback in _walk(get_resolver().url_patterns):
        if not route.startswith(API_PREFIX):
            continue
        view = _view_class(callback)
        methods = {m.upper() for m in HANDLER_METHODS if hasattr(view, m)}
        methods |= set(getattr(view, "required_scopes", {}))
        found |= {(method, route.removeprefix(API_PREFIX)) for method in methods}
    return found


def test_the_table_covers_every_api_operation():
    assert len({op.id for op in OPERATIONS}) == len(OPERATIONS)

    assert {(op.method, op.route) for op in OPERATIONS} == api_operations()


def test_every_handler_declares_a_scope():
    """HasScope refuses a method without a scope; a handler without one is unreachable."""
    for route, callback in _walk(get_resolver().url_patterns):
        if route.startswith(API_PREFIX):
            view = _view_class(callback)
            handlers = {m.upper() for m in HANDLER_METHODS if hasattr(view, m)}
            assert handlers == set(getattr(view, "required_scopes")), route  # noqa: B009


def test_the_walk_finds_the_routes():
    """Guards the coverage test against an introspection that silently finds nothing."""
    routes = {route for _, route in api_operations()}
    assert {"subjects", SUBJECT, "purposes", "consent-checks"} <= routes


# --- callers ----------------------------------------------------------------------------


def _client(header: str | None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client


def _token(*scopes: str, name: str = "caller") -> str:
    _, raw = services.create_service_token(name=name, scopes=scopes)
    return raw


def _revoked() -> str:
    token, raw = services.create_service_token(name="former-partner", scopes=Scope.values)
    services.revoke_service_token(token=token)
    return raw


UNAUTHENTICATED: dict[str, Callable[[], str | None]] = {
    "no token": lambda: None,
    "revoked token": lambda: f"Bearer {_revoked()}",
    "unknown token": lambda: "Bearer prl_thisTokenWasNeverIssued0000000000000000000000",
    "scheme only": lambda: "Bearer",
    "two tokens": lambda: f"Bearer {_token(*Scope.values)} {_token(*Scope.values)}",
    "wrong scheme": lambda: f"Token {_token(*Scope.values)}",
    "basic auth": lambda: "Basic YXBwLWJhY2tlbmQ6c2VjcmV0",
    "non-ascii token": lambda: "Bearer prl_caf\u00e9",
}


def _state() -> tuple[Any, ...]:
    """What any operation could change: a refused call must leave all of it alone."""
    return (
        list(Subject.objects.order_by("pk").values_list("pk", "external_id", "updated_at")),
        ConsentEvent.objects.count(),
        DashboardLink.objects.count(),
        PolicyNotice.objects.filter(resolved_at__isnull=True).count(),
        WebhookSubscription.objects.count(),
        AdDecision.objects.count(),
        AdEvent.objects.count(),
        Signal.objects.count(),
        BillingAccount.objects.count(),
        MessageCharge.objects.count(),
        Product.objects.count(),
        list(Purchase.objects.order_by("pk").values_list("pk", "status")),
        Refund.objects.count(),
    )


def _call(client: APIClient, method: str, path: str, body: Any) -> Any:
    url = f"/{API_PREFIX}{path}"
    if body is None:
        return client.generic(method, url)
    return getattr(client, method.lower())(url, body, format="json")


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0].strip() == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("caller", list(UNAUTHENTICATED))
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.id)
def test_a_caller_without_a_valid_token_gets_401(operation, caller):
    path, body = operation.prepare()
    header = UNAUTHENTICATED[caller]()
    before = _state()

    response = _call(_client(header), operation.method, path, body)

    assert_problem(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert _state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.id)
def test_a_token_with_every_scope_but_the_required_one_gets_403(operation):
    path, body = operation.prepare()
    client = _client(f"Bearer {_token(*scopes_except(operation.scope))}")
    before = _state()

    response = _call(client, operation.method, path, body)

    problem = assert_problem(response, 403)
    assert operation.scope in problem["detail"]
    assert _state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.id)
def test_a_token_with_only_the_required_scope_succeeds(operation):
    path, body = operation.prepare()
    client = _client(f"Bearer {_token(operation.scope)}")

    response = _call(client, operation.method, path, body)

    assert response.status_code == operation.success, response.content


@pytest.mark.django_db
def test_the_personas_get_what_their_scopes_allow(app_backend, ad_server, policy_tool, outsider):
    _subject("alice")
    body = {"granted": True}

    assert ad_server.get("/api/v1/subjects/alice").status_code == 200
    put = ad_server.put("/api/v1/subjects/alice/consents/analytics", body, format="json")
    assert_problem(put, 403)
    assert_problem(policy_tool.get("/api/v1/subjects/alice"), 403)
    assert policy_tool.get("/api/v1/purposes").status_code == 200
    assert_problem(app_backend.get("/api/v1/purposes"), 403)
    assert_problem(outsider.get("/api/v1/subjects/alice"), 401)
    put = app_backend.put("/api/v1/subjects/alice/consents/analytics", body, format="json")
    assert put.status_code == 200, put.content


# --- revocation -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_revoking_a_token_refuses_the_next_request():
    token, raw = services.create_service_token(name="ad-server", scopes=[READ])
    client = _client(f"Bearer {raw}")
    _subject("alice")
    assert client.get("/api/v1/subjects/alice").status_code == 200

    services.revoke_service_token(token=token)

    assert_problem(client.get("/api/v1/subjects/alice"), 401)


@pytest.mark.django_db
def test_revoking_one_token_leaves_the_accounts_other_tokens_working():
    old, old_raw = services.create_service_token(name="ad-server", scopes=[READ])
    _, new_raw = services.create_service_token(name="ad-server", scopes=[READ])
    _subject("alice")

    services.revoke_service_token(token=old)

    assert_problem(_client(f"Bearer {old_raw}").get("/api/v1/subjects/alice"), 401)
    assert _client(f"Bearer {new_raw}").get("/api/v1/subjects/alice").status_code == 200


class Clock:
    """Stands in for the monotonic clock of the token cache."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth.time, "monotonic", clock)
    return clock


@pytest.mark.django_db
def test_a_token_revoked_by_another_process_stops_working_within_the_cache_bound(
    clock: Clock, settings: Any
):
    settings.API_TOKEN_CACHE_SECONDS = 10
    token, raw = services.create_service_token(name="ad-server", scopes=[READ])
    client = _client(f"Bearer {raw}")
    _subject("alice")
    assert client.get("/api/v1/subjects/alice").status_code == 200

    # Another web process revokes it: this one learns only from the database.
    ServiceToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    clock.now += 9.9
    assert client.get("/api/v1/subjects/alice").status_code == 200
    clock.now += 0.2

    assert_problem(client.get("/api/v1/subjects/alice"), 401)


@pytest.mark.django_db
def test_a_verified_token_is_not_looked_up_again_while_cached(
    clock: Clock, django_assert_num_queries: Any
):
    _, raw = services.create_service_token(name="ad-server", scopes=[READ])
    client = _client(f"Bearer {raw}")
    body = {"purpose": "analytics", "subjects": ["nobody"]}
    assert client.post("/api/v1/consent-checks", body, format="json").status_code == 200

    with django_assert_num_queries(1):  # the check itself, nothing for the token
        assert client.post("/api/v1/consent-checks", body, format="json").status_code == 200


@pytest.mark.django_db
def test_a_deactivated_service_accounts_tokens_are_refused(clock: Clock, settings: Any):
    _, first = services.create_service_token(name="ad-server", scopes=[READ])
    _, second = services.create_service_token(name="ad-server", scopes=[READ, WRITE])
    _subject("alice")
    assert _client(f"Bearer {first}").get("/api/v1/subjects/alice").status_code == 200

    ServiceAccount.objects.filter(name="ad-server").update(is_active=False)
    clock.now += settings.API_TOKEN_CACHE_SECONDS + 1

    for raw in (first, second):
        response = _client(f"Bearer {raw}").get("/api/v1/subjects/alice")
        assert_problem(response, 401)
        assert "WWW-Authenticate" in response
    assert ServiceToken.objects.filter(revoked_at__isnull=True).count() == 2


@pytest.mark.django_db
def test_tokens_are_stored_hashed():
    _, raw = services.create_service_token(name="ad-server", scopes=[READ])

    row = ServiceToken.objects.values().get()

    assert not any(raw in str(value) for value in row.values())
    assert re.fullmatch(r"[0-9a-f]{64}", row["token_hash"])


# --- methods without a handler or without a scope ------------------------------------------------


@pytest.mark.django_db
def test_a_method_the_endpoint_does_not_have_is_a_405_with_allow():
    client = _client(f"Bearer {_token(*Scope.values)}")

    response = client.post("/api/v1/purposes", {}, format="json")

    assert_problem(response, 405)
    assert {m.strip() for m in response["Allow"].split(",")} >= {"GET"}
    assert "POST" not in response["Allow"]


@pytest.mark.django_db
def test_a_method_the_endpoint_does_not_have_still_needs_a_token():
    response = _client(None).post("/api/v1/purposes", {}, format="json")

    assert_problem(response, 401)


@pytest.mark.django_db
def test_options_is_not_answered_without_a_scope():
    client = _client(f"Bearer {_token(*Scope.values)}")

    assert_problem(client.options("/api/v1/subjects"), 403)


@pytest.mark.django_db
def test_a_handler_without_a_declared_scope_is_refused_whatever_the_token():
    class Unscoped(APIView):
        required_scopes = {"GET": READ}

        def get(self, request):
            return Response({"ok": True})

        def post(self, request):  # forgot to declare a scope
            return Response({"ok": True})

    raw = _token(*Scope.values)
    factory = APIRequestFactory()
    view = Unscoped.as_view()

    allowed = view(factory.get("/x", HTTP_AUTHORIZATION=f"Bearer {raw}"))
    refused = view(factory.post("/x", {}, format="json", HTTP_AUTHORIZATION=f"Bearer {raw}"))

    assert allowed.status_code == 200
    assert refused.status_code == 403
