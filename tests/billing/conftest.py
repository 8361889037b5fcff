"""Billing fixtures: accounts opened through the real services, and message helpers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing import services
from billing.models import BillingAccount, MessageCharge

# Inside the July 2025 card's period (the January 2026 card starts on 1 Jan 2026).
JULY = datetime(2025, 8, 12, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def acme(db: None) -> BillingAccount:
    """A US business on the free plan, billed in USD."""
    return services.create_account(
        kind="business", name="Acme Parcels", country="US", currency="USD", now=JULY
    )


@pytest.fixture
def router(api_client: Callable[..., APIClient]) -> APIClient:
    """The message router: reports delivered messages to be priced."""
    return api_client("billing:write", name="message-router")


@pytest.fixture
def ledger(api_client: Callable[..., APIClient]) -> APIClient:
    """The finance back office: reads accounts and invoices."""
    return api_client("billing:read", name="ledger")


_ids = iter(range(1, 10**9))


def charge(account: BillingAccount, **overrides: Any) -> MessageCharge:
    """Charges one delivered message through the service (a marketing template to
    India in August 2025 unless told otherwise)."""
    values: dict[str, Any] = {
        "message_id": f"wamid-{next(_ids)}",
        "account_id": account.pk,
        "category": "marketing",
        "template": "order_update",
        "recipient_country": "IN",
        "delivered_at": JULY,
        "service_window_open": False,
        "entry_point_window_open": False,
        "now": NOW,
    }
    values.update(overrides)
    if values["category"] == "service":
        values.setdefault("template", "")
        values["template"] = overrides.get("template", "")
    created, _ = services.charge_message(**values)
    return created


def message_body(owner: BillingAccount, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": f"wamid-api-{next(_ids)}",
        "account": owner.pk,
        "category": "marketing",
        "template": "spring_sale",
        "recipient_country": "IN",
        "delivered_at": "2025-08-12T10:00:00Z",
        "service_window_open": False,
        "entry_point_window_open": False,
    }
    body.update(overrides)
    return body
