"""The payment-gateway interface, and the local sandbox gateway.

A gateway authorises an amount on the buyer's payment method, captures it, and
refunds (part of) it; asynchronous outcomes arrive later as status updates
(`billing.services.apply_gateway_event`, `POST /api/v1/billing/gateway-events`).
Every call carries an idempotency key or reference, so a retried call never moves
money twice. A real provider is a class with the same methods, added to `GATEWAYS`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from consent.errors import InvalidValue

AUTHORISED, CAPTURED, PENDING, DECLINED, REFUNDED, FAILED = (
    "authorised",
    "captured",
    "pending",
    "declined",
    "refunded",
    "failed",
)
DEFAULT = "sandbox"


@dataclass(frozen=True)
class GatewayResult:
    status: str
    reference: str


class PaymentGateway(Protocol):
    name: str

    def authorise(
        self, *, idempotency_key: str, amount: Decimal, currency: str, payment_method: str
    ) -> GatewayResult:
        """Reserves the amount: `authorised` (with the gateway's reference) or `declined`."""
        ...

    def capture(self, *, reference: str, amount: Decimal) -> GatewayResult:
        """Takes an authorised amount: `captured`, or `pending` (a status update follows)."""
        ...

    def refund(self, *, reference: str, amount: Decimal, idempotency_key: str) -> GatewayResult:
        """Gives (part of) a captured amount back: `refunded` or `declined`."""
        ...


class SandboxGateway:
    """A gateway that moves no money and calls no network, for development and tests.

    The payment method decides the outcome: `sandbox_ok` (or anything else) is
    authorised and captured at once, `sandbox_declined` is declined, `sandbox_pending`
    is authorised and its capture stays pending until a status update arrives.
    References are derived from the idempotency key, so a retry gets the same one.
    """

    name = "sandbox"

    @staticmethod
    def _reference(prefix: str, key: str) -> str:
        return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"

    def authorise(
        self, *, idempotency_key: str, amount: Decimal, currency: str, payment_method: str
    ) -> GatewayResult:
        reference = self._reference("sbx_pay", idempotency_key)
        if payment_method == "sandbox_declined":
            return GatewayResult(DECLINED, reference)
        if payment_method == "sandbox_pending":
            return GatewayResult(AUTHORISED, reference + "_p")
        return GatewayResult(AUTHORISED, reference)

    def capture(self, *, reference: str, amount: Decimal) -> GatewayResult:
        return GatewayResult(PENDING if reference.endswith("_p") else CAPTURED, reference)

    def refund(self, *, reference: str, amount: Decimal, idempotency_key: str) -> GatewayResult:
        return GatewayResult(REFUNDED, self._reference("sbx_ref", idempotency_key))


GATEWAYS: dict[str, PaymentGateway] = {SandboxGateway.name: SandboxGateway()}


def get(name: str) -> PaymentGateway:
    gateway = GATEWAYS.get(name)
    if gateway is None:
        raise InvalidValue(f"No payment gateway '{name}'.", field="gateway")
    return gateway
