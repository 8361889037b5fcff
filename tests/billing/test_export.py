"""A subject's data export includes the digital goods they bought, with refunds, and
nobody else's."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import services
from consent import selectors
from tests.factories import SubjectFactory

pytestmark = pytest.mark.django_db


def test_the_export_lists_the_subjects_purchases_and_refunds_only() -> None:
    subject = SubjectFactory.create(external_id="user-42", country="BR")
    casa = services.create_account(kind="business", name="Casa Verde", country="BR", currency="BRL")
    letter = services.create_product(
        seller_id=casa.pk, type="newsletter", title="Coffee letter", price=Decimal("19.90")
    )
    services.purchase(
        purchase_id="p-1", product_id=letter.pk, buyer="user-42", payment_method="sandbox_ok"
    )
    services.purchase(
        purchase_id="p-2", product_id=letter.pk, buyer="someone-else", payment_method="sandbox_ok"
    )
    services.refund(refund_id="r-1", purchase_id="p-1", amount=Decimal("5.00"))

    exported = selectors.subject_export(subject=subject)["billing"]

    assert [p["purchase_id"] for p in exported["purchases"]] == ["p-1"]
    [bought] = exported["purchases"]
    assert (bought["product"], bought["product_type"], bought["seller"]) == (
        "Coffee letter",
        "newsletter",
        "Casa Verde",
    )
    assert (bought["amount"], bought["currency"]) == ("19.90", "BRL")
    assert [(r["refund_id"], r["amount"]) for r in bought["refunds"]] == [("r-1", "5.00")]


def test_the_billing_part_takes_two_queries_however_many_purchases() -> None:
    subject = SubjectFactory.create(external_id="user-7", country="BR")
    casa = services.create_account(kind="business", name="Casa Verde", country="BR", currency="BRL")
    letter = services.create_product(
        seller_id=casa.pk, type="newsletter", title="Coffee letter", price=Decimal("19.90")
    )
    for n in range(5):
        services.purchase(
            purchase_id=f"p-{n}", product_id=letter.pk, buyer="user-7", payment_method="sandbox_ok"
        )

    from billing.selectors import export_subject_purchases

    with CaptureQueriesContext(connection) as queries:
        assert len(export_subject_purchases(subject)["purchases"]) == 5

    assert len(queries) == 2  # purchases with product and seller; their refunds
