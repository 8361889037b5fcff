"""Digital goods: products in the seller's currency, purchases through the sandbox
gateway, status updates, commission, and full and partial refunds that reverse it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from billing import gateways, services
from billing.models import BillingAccount, CommissionRate, Product, Purchase, Refund
from consent.errors import Conflict, InvalidValue, NotFound

pytestmark = pytest.mark.django_db


@pytest.fixture
def casa(db: None) -> BillingAccount:
    return services.create_account(kind="business", name="Casa Verde", country="BR", currency="BRL")


@pytest.fixture
def letter(casa: BillingAccount) -> Product:
    return services.create_product(
        seller_id=casa.pk, type="newsletter", title="Coffee letter", price=Decimal("19.90")
    )


@pytest.fixture
def shop(api_client: Callable[..., APIClient]) -> APIClient:
    return api_client("billing:write", name="chat-shop")


def buy(product: Product, purchase_id: str = "p-1", method: str = "sandbox_ok") -> Purchase:
    bought, _ = services.purchase(
        purchase_id=purchase_id, product_id=product.pk, buyer="user-42", payment_method=method
    )
    return bought


def test_a_product_is_priced_in_the_sellers_currency(letter: Product) -> None:
    assert (letter.price, letter.currency) == (Decimal("19.90"), "BRL")


def test_advertisers_do_not_sell_goods(db: None) -> None:
    advertiser = services.create_account(
        kind="advertiser", name="Lumen", country="US", currency="USD"
    )
    with pytest.raises(Conflict):
        services.create_product(
            seller_id=advertiser.pk, type="guide", title="G", price=Decimal("5")
        )


def test_a_purchase_is_captured_with_a_ten_percent_commission(letter: Product) -> None:
    bought = buy(letter)

    assert (bought.status, bought.amount, bought.currency) == ("captured", Decimal("19.90"), "BRL")
    assert (bought.commission_rate, bought.commission) == (Decimal("0.1000"), Decimal("1.990000"))
    assert bought.captured_at is not None
    assert bought.gateway_reference.startswith("sbx_pay_")


def test_the_commission_is_configurable_per_product_type(casa: BillingAccount) -> None:
    CommissionRate.objects.filter(product_type="consultation").update(rate=Decimal("0.15"))
    call = services.create_product(
        seller_id=casa.pk, type="consultation", title="Call", price=Decimal("200.00")
    )
    guide = services.create_product(
        seller_id=casa.pk, type="guide", title="Guide", price=Decimal("200.00")
    )

    assert buy(call, "p-call").commission == Decimal("30.000000")
    assert buy(guide, "p-guide").commission == Decimal("20.000000")


def test_a_declined_payment_fails_and_takes_no_commission_later(letter: Product) -> None:
    bought = buy(letter, method="sandbox_declined")

    assert bought.status == "failed"
    with pytest.raises(Conflict):
        services.refund(refund_id="r-1", purchase_id=bought.purchase_id)


def test_a_pending_capture_is_completed_by_the_gateways_status_update(letter: Product) -> None:
    bought = buy(letter, method="sandbox_pending")
    assert (bought.status, bought.captured_at) == ("authorised", None)

    captured = services.apply_gateway_event(
        gateway="sandbox", reference=bought.gateway_reference, status="captured"
    )
    again = services.apply_gateway_event(
        gateway="sandbox", reference=bought.gateway_reference, status="captured"
    )

    assert captured.status == again.status == "captured"
    assert captured.captured_at is not None
    with pytest.raises(Conflict):
        services.apply_gateway_event(
            gateway="sandbox", reference=bought.gateway_reference, status="failed"
        )
    with pytest.raises(NotFound):
        services.apply_gateway_event(gateway="sandbox", reference="nope", status="captured")


def test_a_purchase_is_idempotent_on_its_id(letter: Product) -> None:
    first = buy(letter)
    again = buy(letter)

    assert again.pk == first.pk
    with pytest.raises(Conflict):
        buy(letter, method="sandbox_pending")
    assert Purchase.objects.count() == 1


def test_a_partial_then_a_full_refund_reverse_the_commission_in_proportion(
    letter: Product,
) -> None:
    bought = buy(letter)

    part, _ = services.refund(refund_id="r-1", purchase_id="p-1", amount=Decimal("5.00"))
    rest, _ = services.refund(refund_id="r-2", purchase_id="p-1")
    bought.refresh_from_db()

    assert (part.amount, part.commission_reversed) == (Decimal("5.00"), Decimal("0.500000"))
    assert (rest.amount, rest.commission_reversed) == (Decimal("14.90"), Decimal("1.490000"))
    assert (bought.status, bought.refunded, bought.commission_reversed) == (
        "refunded",
        Decimal("19.90"),
        bought.commission,
    )
    with pytest.raises(Conflict):
        services.refund(refund_id="r-3", purchase_id="p-1", amount=Decimal("0.01"))


def test_refunds_that_do_not_divide_evenly_still_reverse_all_the_commission(
    casa: BillingAccount,
) -> None:
    odd = services.create_product(
        seller_id=casa.pk, type="guide", title="Odd", price=Decimal("10.00")
    )
    bought = buy(odd, "p-odd")
    for n in range(3):
        services.refund(refund_id=f"r-odd-{n}", purchase_id="p-odd", amount=Decimal("3.33"))
    services.refund(refund_id="r-odd-last", purchase_id="p-odd")
    bought.refresh_from_db()

    reversals = [r.commission_reversed for r in Refund.objects.filter(purchase=bought)]
    assert reversals == [Decimal("0.333000")] * 3 + [Decimal("0.001000")]
    assert sum(reversals) == bought.commission == Decimal("1.000000")


def test_a_refund_is_idempotent_and_never_exceeds_what_is_left(letter: Product) -> None:
    buy(letter)

    first, created = services.refund(refund_id="r-1", purchase_id="p-1", amount=Decimal("3"))
    again, created_again = services.refund(refund_id="r-1", purchase_id="p-1", amount=Decimal("3"))

    assert (created, created_again, again.pk) == (True, False, first.pk)
    with pytest.raises(Conflict):
        services.refund(refund_id="r-1", purchase_id="p-1", amount=Decimal("4"))
    with pytest.raises(Conflict):
        services.refund(refund_id="r-2", purchase_id="p-1", amount=Decimal("17"))
    with pytest.raises(InvalidValue):
        services.refund(refund_id="r-3", purchase_id="p-1", amount=Decimal("-1"))


def test_the_sandbox_gateway_never_calls_out_and_is_deterministic() -> None:
    sandbox = gateways.get("sandbox")
    one = sandbox.authorise(
        idempotency_key="k", amount=Decimal(1), currency="USD", payment_method="sandbox_ok"
    )
    two = sandbox.authorise(
        idempotency_key="k", amount=Decimal(1), currency="USD", payment_method="sandbox_ok"
    )

    assert one == two
    assert sandbox.capture(reference=one.reference, amount=Decimal(1)).status == "captured"
    with pytest.raises(InvalidValue):
        gateways.get("paypal")


# --- the API ---------------------------------------------------------------------------------


def test_the_api_sells_refunds_and_reports_gateway_updates(
    shop: APIClient, casa: BillingAccount
) -> None:
    product = shop.post(
        "/api/v1/billing/products",
        {"seller": casa.pk, "type": "community", "title": "Run club", "price": "49.90"},
        format="json",
    )
    body = {
        "purchase_id": "p-api",
        "product": product.json()["id"],
        "buyer": "user-7",
        "payment_method": "sandbox_pending",
    }
    bought = shop.post("/api/v1/billing/purchases", body, format="json")
    replay = shop.post("/api/v1/billing/purchases", body, format="json")
    update = shop.post(
        "/api/v1/billing/gateway-events",
        {
            "gateway": "sandbox",
            "reference": bought.json()["gateway_reference"],
            "status": "captured",
        },
        format="json",
    )
    refunded = shop.post(
        "/api/v1/billing/purchases/p-api/refunds",
        {"refund_id": "r-api", "amount": "9.98"},
        format="json",
    )

    assert product.status_code == 201
    assert product.json()["currency"] == "BRL"
    assert (bought.status_code, bought.json()["status"]) == (201, "authorised")
    assert bought.json()["commission"] == "4.990000"
    assert replay.status_code == 200
    assert (update.status_code, update.json()["status"]) == (200, "captured")
    assert refunded.status_code == 201
    assert refunded.json()["commission_reversed"] == "0.998000"


PRODUCTS, PURCHASES = "/api/v1/billing/products", "/api/v1/billing/purchases"
EVENTS, REFUNDS = "/api/v1/billing/gateway-events", "/api/v1/billing/purchases/none/refunds"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (PRODUCTS, {"seller": 1, "type": "course", "title": "x", "price": "1"}, 400),
        (PRODUCTS, {"seller": 999999, "type": "guide", "title": "x", "price": "1"}, 404),
        (PRODUCTS, {"seller": 1, "type": "guide", "title": "x", "price": "NaN"}, 400),
        (PURCHASES, {"purchase_id": "p", "product": 999999, "buyer": "u"}, 404),
        (PURCHASES, {"purchase_id": "p", "product": 1, "buyer": "a b"}, 400),
        (PURCHASES, {"purchase_id": "p", "product": 1, "buyer": "u", "x": 1}, 400),
        (REFUNDS, {"refund_id": "r"}, 404),
        (REFUNDS, {"refund_id": "r", "amount": "abc"}, 400),
        (EVENTS, {"gateway": "sandbox", "reference": "r", "status": "x"}, 400),
        (EVENTS, {"gateway": "visa", "reference": "r", "status": "failed"}, 400),
    ],
)
def test_bad_goods_requests_get_a_problem_never_a_500(
    shop: APIClient, casa: BillingAccount, path: str, body: dict[str, Any], status: int
) -> None:
    answer = shop.post(path, body, format="json")

    assert answer.status_code == status
    assert answer["Content-Type"] == "application/problem+json"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999.99"), places=2),
    cuts=st.lists(st.integers(min_value=1, max_value=99), max_size=5),
)
def test_refunds_in_any_parts_reverse_exactly_the_commission(
    casa: BillingAccount, price: Decimal, cuts: list[int]
) -> None:
    with transaction.atomic():
        product = services.create_product(seller_id=casa.pk, type="guide", title="G", price=price)
        bought = buy(product, f"p-{price}-{len(cuts)}")
        for n, percent in enumerate(cuts):
            left = bought.amount - bought.refunded
            part = (left * percent / 100).quantize(Decimal("0.01"))
            if Decimal(0) < part < left:
                services.refund(
                    refund_id=f"r-{bought.pk}-{n}", purchase_id=bought.purchase_id, amount=part
                )
            bought.refresh_from_db()
        services.refund(refund_id=f"r-{bought.pk}-last", purchase_id=bought.purchase_id)
        bought.refresh_from_db()
        reversed_total = sum((r.commission_reversed for r in bought.refunds.all()), Decimal(0))

        assert bought.status == "refunded"
        assert bought.refunded == price
        assert reversed_total == bought.commission_reversed == bought.commission
        transaction.set_rollback(True)
