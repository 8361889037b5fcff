"""The API's authorization matrix: the one place the tests read who may call what.

`ENDPOINTS` holds every operation under `/api/v1/` — method, Django route, the scope
it needs, its success status, a valid request, and (where the documented behaviour is
"not found") a request for a resource that does not exist. `expected()` turns a row
and a caller into the status the caller must get. `tests/security/test_api_matrix.py`
checks every cell, that the URL resolver and the OpenAPI schema hold exactly these
operations, and that the table in docs/API.md ("Authorization matrix") says the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from ads import decisions
from ads.choices import CampaignStatus, Placement, Pricing
from ads.models import Ad, Advertiser, Campaign
from billing import services as billing_services
from billing.models import Purchase
from consent import rollouts, services, webhooks
from consent.choices import Scope
from consent.models import ConsentEvent, Rollout, ServiceAccount
from tests.factories import SubjectFactory, publish
from tests.security import dbstate

API_PREFIX = "/api/v1/"
CALLER = "caller"  # the service account of the matrix's tokens

READ = Scope.CONSENT_READ.value
WRITE = Scope.CONSENT_WRITE.value
POLICY_READ = Scope.POLICY_READ.value
POLICY_WRITE = Scope.POLICY_WRITE.value
SIGNALS_WRITE = Scope.SIGNALS_WRITE.value
ADS_DECIDE = Scope.ADS_DECIDE.value
BILLING_READ = Scope.BILLING_READ.value
BILLING_WRITE = Scope.BILLING_WRITE.value

Request = tuple[str, Any]  # (path below /api/v1/, JSON body or None)


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str  # the Django route below /api/v1/
    scope: str
    success: int
    valid: Callable[[], Request]
    # A request for something that does not exist, answered 404 ("not found").
    missing: Callable[[], Request] | None = None
    fast_lane: bool = False  # answered before DRF when plainly valid

    @property
    def id(self) -> str:
        return f"{self.method} {self.route}"

    @property
    def openapi_path(self) -> str:
        """`subjects/<str:external_id>` → `/api/v1/subjects/{external_id}`."""
        parts = []
        for part in self.route.split("/"):
            if part.startswith("<"):
                part = "{" + part.strip("<>").split(":")[-1] + "}"
            parts.append(part)
        return API_PREFIX + "/".join(parts)


# --- what a valid request needs ------------------------------------------------------------


def subject(external_id: str = "alice", **fields: Any) -> str:
    return SubjectFactory.create(external_id=external_id, **fields).external_id


def subject_with_notice() -> str:
    """A US subject with a pending 2025-06 notice that can simply be acknowledged
    (the rest of the US asks no fresh decision); ads are live for them."""
    external_id = subject("us-alice", country="US")
    assert publish("2025-06", "US") == 1
    return external_id


def newest_event(external_id: str) -> int:
    return ConsentEvent.objects.filter(subject__external_id=external_id).latest("id").pk


def own_subscription() -> int:
    account, _ = ServiceAccount.objects.get_or_create(name=CALLER)
    return webhooks.subscribe(
        name="crm", url="https://crm.example.com/hooks", events=["consent.changed"], account=account
    ).pk


def rollout(*controls: str) -> int:
    """The seeded 2025-06 rollout (scheduled: start, pause and cancel are valid), after
    the given controls (after "pause", resume is valid)."""
    planned = Rollout.objects.get(version__label="2025-06")
    for control in controls:
        getattr(rollouts, control)(rollout=planned, actor="staff:tests")
    return planned.pk


def served_decision() -> str:
    external_id = subject_with_notice()
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


def billing_account() -> int:
    return billing_services.create_account(
        kind="business", name="Casa Verde", country="BR", currency="BRL"
    ).pk


def product() -> int:
    return billing_services.create_product(
        seller_id=billing_account(), type="guide", title="Guide", price=Decimal("29.00")
    ).pk


def purchase(method: str = "sandbox_ok") -> Purchase:
    bought, _ = billing_services.purchase(
        purchase_id="p-1", product_id=product(), buyer="alice", payment_method=method
    )
    return bought


def message(account: int) -> dict[str, Any]:
    return {
        "message_id": "wamid-1",
        "account": account,
        "category": "marketing",
        "template": "spring_sale",
        "recipient_country": "IN",
        "delivered_at": "2025-08-12T10:00:00Z",
        "service_window_open": False,
        "entry_point_window_open": False,
    }


NO_ROW = 987_654_321  # an id no row has
SUBJECT = "subjects/<str:external_id>"
ROLLOUT = "rollouts/<int:rollout_id>"
ACCOUNT = "billing/accounts/<int:account_id>"
WEBHOOK = {"name": "crm", "url": "https://crm.example.com/hooks", "events": ["consent.changed"]}
DECISION = {"placement": "status", "context": {"country": "DE", "language": "de"}}


def control(action: str, *before: str) -> Endpoint:
    return Endpoint(
        "POST",
        f"{ROLLOUT}/{action}",
        POLICY_WRITE,
        200,
        lambda: (f"rollouts/{rollout(*before)}/{action}", None),
        lambda: (f"rollouts/{NO_ROW}/{action}", None),
    )


ENDPOINTS: list[Endpoint] = [
    # --- consent
    Endpoint(
        "POST",
        "subjects",
        WRITE,
        201,
        lambda: ("subjects", {"external_id": "newcomer", "country": "DE"}),
    ),
    Endpoint(
        "GET",
        SUBJECT,
        READ,
        200,
        lambda: (f"subjects/{subject()}", None),
        lambda: ("subjects/ghost", None),
    ),
    Endpoint(
        "PATCH",
        SUBJECT,
        WRITE,
        200,
        lambda: (f"subjects/{subject()}", {"language": "fr"}),
        lambda: ("subjects/ghost", {"language": "fr"}),
    ),
    Endpoint(
        "DELETE",
        SUBJECT,
        WRITE,
        204,
        lambda: (f"subjects/{subject()}", None),
        lambda: ("subjects/ghost", None),
    ),
    Endpoint(
        "GET",
        f"{SUBJECT}/consents",
        READ,
        200,
        lambda: (f"subjects/{subject()}/consents", None),
        lambda: ("subjects/ghost/consents", None),
    ),
    Endpoint(
        "PUT",
        f"{SUBJECT}/consents/<str:purpose>",
        WRITE,
        200,
        lambda: (f"subjects/{subject()}/consents/analytics", {"granted": True}),
        lambda: (f"subjects/{subject()}/consents/no_such_purpose", {"granted": True}),
    ),
    Endpoint(
        "GET",
        f"{SUBJECT}/events",
        READ,
        200,
        lambda: (f"subjects/{subject()}/events", None),
        lambda: ("subjects/ghost/events", None),
    ),
    Endpoint(
        "GET",
        f"{SUBJECT}/events/<int:event_id>/receipt",
        READ,
        200,
        lambda: (f"subjects/alice/events/{newest_event(subject())}/receipt", None),
        lambda: (f"subjects/{subject()}/events/{NO_ROW}/receipt", None),
    ),
    Endpoint(
        "POST",
        f"{SUBJECT}/notice/acknowledge",
        WRITE,
        200,
        lambda: (f"subjects/{subject_with_notice()}/notice/acknowledge", None),
        lambda: ("subjects/ghost/notice/acknowledge", None),
    ),
    Endpoint(
        "POST",
        f"{SUBJECT}/dashboard-links",
        WRITE,
        201,
        lambda: (f"subjects/{subject()}/dashboard-links", None),
        lambda: ("subjects/ghost/dashboard-links", None),
    ),
    Endpoint(
        "POST",
        "consent-checks",
        READ,
        200,
        lambda: ("consent-checks", {"purpose": "analytics", "subjects": [subject(), "ghost"]}),
        lambda: ("consent-checks", {"purpose": "no_such_purpose", "subjects": ["alice"]}),
        fast_lane=True,
    ),
    Endpoint("GET", "purposes", POLICY_READ, 200, lambda: ("purposes", None)),
    Endpoint(
        "GET",
        "jurisdictions/<str:code>",
        POLICY_READ,
        200,
        lambda: ("jurisdictions/DE", None),
        lambda: ("jurisdictions/XX", None),
    ),
    Endpoint("GET", "webhooks", READ, 200, lambda: ("webhooks", None)),
    Endpoint("POST", "webhooks", READ, 201, lambda: ("webhooks", WEBHOOK)),
    Endpoint(
        "DELETE",
        "webhooks/<int:subscription_id>",
        READ,
        204,
        lambda: (f"webhooks/{own_subscription()}", None),
        lambda: (f"webhooks/{NO_ROW}", None),
    ),
    Endpoint("GET", "rollouts", POLICY_READ, 200, lambda: ("rollouts", None)),
    Endpoint(
        "GET",
        ROLLOUT,
        POLICY_READ,
        200,
        lambda: (f"rollouts/{rollout()}", None),
        lambda: (f"rollouts/{NO_ROW}", None),
    ),
    Endpoint(
        "POST",
        f"{ROLLOUT}/dry-run",
        POLICY_READ,
        200,
        lambda: (f"rollouts/{rollout()}/dry-run", None),
        lambda: (f"rollouts/{NO_ROW}/dry-run", None),
    ),
    control("start"),
    control("pause"),
    control("resume", "pause"),
    control("cancel"),
    # --- ads
    Endpoint(
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
                        "subject": subject_with_notice(),
                        "occurred_at": timezone.now().isoformat(),
                    }
                ]
            },
        ),
    ),
    Endpoint(
        "POST",
        "ads/decisions",
        ADS_DECIDE,
        200,
        lambda: ("ads/decisions", {"subject": subject(), **DECISION}),
        fast_lane=True,
    ),
    Endpoint(
        "POST",
        "ads/events",
        ADS_DECIDE,
        201,
        lambda: ("ads/events", {"decision_id": served_decision(), "type": "impression"}),
        lambda: (
            "ads/events",
            {"decision_id": "00000000-0000-4000-8000-000000000000", "type": "impression"},
        ),
    ),
    # --- billing
    Endpoint("GET", "billing/accounts", BILLING_READ, 200, lambda: ("billing/accounts", None)),
    Endpoint(
        "POST",
        "billing/accounts",
        BILLING_WRITE,
        201,
        lambda: ("billing/accounts", {"name": "Casa Verde", "country": "BR", "currency": "BRL"}),
    ),
    Endpoint(
        "GET",
        ACCOUNT,
        BILLING_READ,
        200,
        lambda: (f"billing/accounts/{billing_account()}", None),
        lambda: (f"billing/accounts/{NO_ROW}", None),
    ),
    Endpoint(
        "PUT",
        f"{ACCOUNT}/plan",
        BILLING_WRITE,
        200,
        lambda: (f"billing/accounts/{billing_account()}/plan", {"plan": "premium"}),
        lambda: (f"billing/accounts/{NO_ROW}/plan", {"plan": "premium"}),
    ),
    Endpoint(
        "GET",
        f"{ACCOUNT}/invoices",
        BILLING_READ,
        200,
        lambda: (f"billing/accounts/{billing_account()}/invoices", None),
        lambda: (f"billing/accounts/{NO_ROW}/invoices", None),
    ),
    Endpoint(
        "POST",
        "billing/messages",
        BILLING_WRITE,
        201,
        lambda: ("billing/messages", message(billing_account())),
        lambda: ("billing/messages", message(NO_ROW)),
    ),
    Endpoint(
        "POST",
        "billing/products",
        BILLING_WRITE,
        201,
        lambda: (
            "billing/products",
            {"seller": billing_account(), "type": "guide", "title": "Guide", "price": "29.00"},
        ),
        lambda: (
            "billing/products",
            {"seller": NO_ROW, "type": "guide", "title": "Guide", "price": "29.00"},
        ),
    ),
    Endpoint(
        "POST",
        "billing/purchases",
        BILLING_WRITE,
        201,
        lambda: ("billing/purchases", {"purchase_id": "p-1", "product": product(), "buyer": "bo"}),
        lambda: ("billing/purchases", {"purchase_id": "p-1", "product": NO_ROW, "buyer": "bo"}),
    ),
    Endpoint(
        "POST",
        "billing/purchases/<str:purchase_id>/refunds",
        BILLING_WRITE,
        201,
        lambda: (f"billing/purchases/{purchase().purchase_id}/refunds", {"refund_id": "r-1"}),
        lambda: ("billing/purchases/ghost/refunds", {"refund_id": "r-1"}),
    ),
    Endpoint(
        "POST",
        "billing/gateway-events",
        BILLING_WRITE,
        200,
        lambda: (
            "billing/gateway-events",
            {
                "gateway": "sandbox",
                "reference": purchase("sandbox_pending").gateway_reference,
                "status": "captured",
            },
        ),
        lambda: (
            "billing/gateway-events",
            {"gateway": "sandbox", "reference": "no-such-reference", "status": "captured"},
        ),
    ),
]

BY_ID = {endpoint.id: endpoint for endpoint in ENDPOINTS}


# --- the callers (the matrix's columns) and what each must get ------------------------------------


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: tuple[str, ...] | None  # the token's scopes; None: no valid token at all
    header: Callable[[], str | None]

    @property
    def authenticated(self) -> bool:
        return self.scopes is not None


def token(*scopes: str, name: str = CALLER) -> str:
    _, raw = services.create_service_token(name=name, scopes=scopes)
    return raw


def revoked() -> str:
    issued, raw = services.create_service_token(name="former-partner", scopes=Scope.values)
    services.revoke_service_token(token=issued)
    return raw


def deactivated() -> str:
    raw = token(*Scope.values, name="dormant")
    ServiceAccount.objects.filter(name="dormant").update(is_active=False)
    return raw


UNAUTHENTICATED = [
    Caller("no token", None, lambda: None),
    Caller("malformed: scheme only", None, lambda: "Bearer"),
    Caller("malformed: two tokens", None, lambda: f"Bearer {token(READ)} {token(READ)}"),
    Caller("malformed: wrong scheme", None, lambda: f"Token {token(*Scope.values)}"),
    Caller("malformed: non-ascii", None, lambda: "Bearer prl_caf\u00e9"),
    Caller("unknown token", None, lambda: "Bearer prl_" + "A" * 43),
    Caller("revoked token", None, lambda: f"Bearer {revoked()}"),
    Caller("deactivated account", None, lambda: f"Bearer {deactivated()}"),
]


def _only(scope: str) -> Caller:
    return Caller(f"only {scope}", (scope,), lambda: f"Bearer {token(scope)}")


SINGLE_SCOPES = [_only(scope) for scope in Scope.values]
ALL_SCOPES = Caller("all scopes", tuple(Scope.values), lambda: f"Bearer {token(*Scope.values)}")
CALLERS = [*UNAUTHENTICATED, *SINGLE_SCOPES, ALL_SCOPES]


def expected(endpoint: Endpoint, caller: Caller, *, resource_exists: bool = True) -> int:
    """The status `caller` must get for `endpoint`: 401 without a valid token, 403 when
    the token lacks the scope (whether or not the resource exists), else the success
    status, or 404 for a resource that does not exist."""
    if caller.scopes is None:
        return 401
    if endpoint.scope not in caller.scopes:
        return 403
    return endpoint.success if resource_exists else 404


# --- what must not change when a call is refused ------------------------------------------------


def fingerprint(apps: tuple[str, ...] = ("consent", "ads", "billing")) -> dict[str, Any]:
    """Every row of every table of these apps: a refused call must leave all of them
    exactly as they were."""
    return dbstate.fingerprint(apps)
