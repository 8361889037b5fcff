"""Per-message pricing: every rule of the pricing facts, with the rate card's figures.

Acme Parcels is a US business billed in USD; the rate cards are the two shipped ones
(July 2025, and January 2026 with India marketing 0.0118 and North America utility and
authentication 0.0034).
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from billing import services
from billing.errors import NoRateCard, RatesMissing
from billing.models import BillingAccount, MarketRate, MessageCharge, MessageVolume, VolumeTier
from consent.errors import Conflict, InvalidValue, NotFound
from tests.billing.conftest import JULY, NOW, charge, message_body

pytestmark = pytest.mark.django_db

JANUARY_2026 = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)


# --- the rate card's figures -------------------------------------------------------------


def test_a_thousand_marketing_templates_to_india_cost_exactly_ten_dollars_seventy(
    acme: BillingAccount,
) -> None:
    charges = [charge(acme) for _ in range(1000)]

    assert {c.amount for c in charges} == {Decimal("0.0107")}
    assert sum(c.amount for c in charges) == Decimal("10.7000")
    assert {(c.currency, c.market, c.category, c.free_reason) for c in charges} == {
        ("USD", "India", "marketing", "")
    }


@pytest.mark.parametrize(
    ("country", "category", "rate", "market"),
    [
        ("US", "marketing", "0.0250", "North America"),
        ("CA", "utility", "0.0040", "North America"),
        ("BR", "marketing", "0.0625", "Brazil"),
        ("BR", "authentication", "0.0068", "Brazil"),
        ("IN", "utility", "0.0014", "India"),
        ("GB", "marketing", "0.0529", "United Kingdom"),
        ("DE", "marketing", "0.1365", "Germany"),
        ("DE", "utility", "0.0550", "Germany"),
        ("FR", "marketing", "0.0592", "Rest of Western Europe"),
        ("CH", "authentication", "0.0171", "Rest of Western Europe"),
        ("ID", "marketing", "0.0411", "Indonesia"),
        ("NG", "utility", "0.0067", "Nigeria"),
        ("ZA", "marketing", "0.0379", "South Africa"),
    ],
)
def test_templates_are_priced_by_category_and_the_recipients_market(
    acme: BillingAccount, country: str, category: str, rate: str, market: str
) -> None:
    priced = charge(acme, recipient_country=country, category=category)

    assert (priced.market, priced.category, priced.amount) == (market, category, Decimal(rate))


def test_the_rate_card_in_force_at_delivery_prices_the_message(acme: BillingAccount) -> None:
    eve = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    new_year = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)

    before = charge(acme, delivered_at=eve)
    after = charge(acme, delivered_at=new_year)
    utility_us = charge(acme, delivered_at=JANUARY_2026, recipient_country="US", category="utility")
    auth_ca = charge(
        acme, delivered_at=JANUARY_2026, recipient_country="CA", category="authentication"
    )

    assert before.amount == Decimal("0.0107")
    assert before.rate_card.effective_from == date(2025, 7, 1)
    assert after.amount == Decimal("0.0118")
    assert after.rate_card.effective_from == date(2026, 1, 1)
    assert utility_us.amount == auth_ca.amount == Decimal("0.0034")
    assert services.rate_card_at(JULY).effective_from == date(2025, 7, 1)


def test_a_message_before_the_first_rate_card_is_refused(acme: BillingAccount) -> None:
    with pytest.raises(NoRateCard):
        charge(acme, delivered_at=datetime(2025, 6, 30, 23, 0, tzinfo=UTC))


# --- what is free --------------------------------------------------------------------------


def test_a_free_form_reply_in_the_service_window_is_free(acme: BillingAccount) -> None:
    reply = charge(acme, category="service", service_window_open=True)

    assert (reply.amount, reply.category, reply.free_reason) == (
        Decimal(0),
        "service",
        "service_reply",
    )


def test_a_free_form_reply_outside_every_window_is_refused(acme: BillingAccount) -> None:
    with pytest.raises(Conflict):
        charge(acme, category="service")


def test_a_utility_template_inside_the_service_window_costs_nothing(acme: BillingAccount) -> None:
    inside = charge(acme, category="utility", recipient_country="DE", service_window_open=True)
    outside = charge(acme, category="utility", recipient_country="DE")

    assert (inside.amount, inside.free_reason) == (Decimal(0), "service_window")
    assert (outside.amount, outside.free_reason) == (Decimal("0.0550"), "")


@pytest.mark.parametrize("category", ["marketing", "authentication"])
def test_the_service_window_does_not_make_marketing_or_authentication_free(
    acme: BillingAccount, category: str
) -> None:
    priced = charge(acme, category=category, recipient_country="GB", service_window_open=True)

    assert priced.amount > 0
    assert priced.free_reason == ""


@pytest.mark.parametrize("category", ["marketing", "utility", "authentication", "service"])
def test_everything_is_free_inside_the_entry_point_window(
    acme: BillingAccount, category: str
) -> None:
    priced = charge(acme, category=category, recipient_country="DE", entry_point_window_open=True)

    assert (priced.amount, priced.free_reason) == (Decimal(0), "entry_point_window")


def test_an_app_registered_check_opens_the_entry_point_window(acme: BillingAccount) -> None:
    asked: list[dict[str, Any]] = []

    def clicked_ad(*, recipient: str, business: str, at: datetime) -> bool:
        asked.append({"recipient": recipient, "business": business, "at": at})
        return recipient == "user-who-clicked"

    services.register_entry_window_check(clicked_ad)
    try:
        free = charge(acme, recipient="user-who-clicked")
        paid = charge(acme, recipient="someone-else")
    finally:
        services._entry_window_checks.remove(clicked_ad)

    assert (free.amount, free.free_reason, free.entry_point_window_open) == (
        Decimal(0),
        "entry_point_window",
        True,
    )
    assert paid.amount == Decimal("0.0107")
    assert asked[0] == {"recipient": "user-who-clicked", "business": str(acme.pk), "at": JULY}


# --- authentication-international ----------------------------------------------------------


def _sent_before(account: BillingAccount, market: str, count: int, day: date) -> None:
    MessageVolume.objects.create(
        account=account, market=market, category="authentication", day=day, count=count
    )


def test_authentication_international_applies_above_750000_in_30_days(
    acme: BillingAccount,
) -> None:
    _sent_before(acme, "India", 749_998, JULY.date() - timedelta(days=29))

    the_749_999th = charge(acme, category="authentication")
    the_750_000th = charge(acme, category="authentication")
    the_750_001st = charge(acme, category="authentication")

    assert the_749_999th.amount == the_750_000th.amount == Decimal("0.0014")
    assert the_749_999th.category == the_750_000th.category == "authentication"
    assert the_750_001st.amount == Decimal("0.0280")
    assert the_750_001st.category == "authentication_international"


def test_messages_older_than_30_days_do_not_count_towards_the_threshold(
    acme: BillingAccount,
) -> None:
    _sent_before(acme, "India", 750_000, JULY.date() - timedelta(days=30))

    assert charge(acme, category="authentication").category == "authentication"


def test_a_business_based_in_the_market_never_pays_the_international_rate(db: None) -> None:
    local = services.create_account(
        kind="business", name="Delhi Dispatch", country="IN", currency="INR", now=JULY
    )
    _sent_before(local, "India", 2_000_000, JULY.date())

    priced = charge(local, category="authentication")

    assert (priced.category, priced.amount, priced.currency) == (
        "authentication",
        Decimal("0.0014"),
        "USD",
    )


def test_indonesia_has_an_international_rate_and_the_uk_has_none(acme: BillingAccount) -> None:
    _sent_before(acme, "Indonesia", 750_000, JULY.date())
    _sent_before(acme, "United Kingdom", 750_000, JULY.date())

    indonesia = charge(acme, category="authentication", recipient_country="ID")
    uk = charge(acme, category="authentication", recipient_country="GB")

    assert (indonesia.category, indonesia.amount) == (
        "authentication_international",
        Decimal("0.1360"),
    )
    assert (uk.category, uk.amount) == ("authentication", Decimal("0.0220"))


def test_free_messages_do_not_count_towards_volumes(acme: BillingAccount) -> None:
    charge(acme, category="authentication", entry_point_window_open=True)
    charge(acme, category="authentication")

    assert MessageVolume.objects.get(account=acme, market="India").count == 1


# --- volume tiers ----------------------------------------------------------------------------


def test_there_are_no_volume_tiers_by_default() -> None:
    assert not VolumeTier.objects.exists()


def test_a_volume_tier_prices_the_messages_of_the_month_beyond_its_threshold(
    acme: BillingAccount,
) -> None:
    india = MarketRate.objects.get(rate_card__effective_from=date(2025, 7, 1), name="India")
    VolumeTier.objects.create(market=india, category="utility", above=2, rate=Decimal("0.0010"))
    VolumeTier.objects.create(market=india, category="utility", above=3, rate=Decimal("0.0008"))
    _sent_before(acme, "India", 0, JULY.date())

    amounts = [charge(acme, category="utility").amount for _ in range(4)]
    next_month = charge(acme, category="utility", delivered_at=JULY + timedelta(days=25))
    marketing = charge(acme, category="marketing")

    assert amounts == [Decimal("0.0014"), Decimal("0.0014"), Decimal("0.0010"), Decimal("0.0008")]
    assert next_month.amount == Decimal("0.0014")
    assert marketing.amount == Decimal("0.0107")


# --- rest of world ---------------------------------------------------------------------------


def test_a_country_no_market_lists_falls_into_rest_of_world_refused_until_filled(
    acme: BillingAccount,
) -> None:
    with pytest.raises(RatesMissing) as refused:
        charge(acme, recipient_country="JP")
    assert "Rest of world" in refused.value.detail

    rest = MarketRate.objects.get(rate_card__effective_from=date(2025, 7, 1), is_rest_of_world=True)
    rest.marketing = Decimal("0.0600")
    rest.save()

    priced = charge(acme, recipient_country="JP")
    assert (priced.market, priced.amount) == ("Rest of world", Decimal("0.0600"))
    with pytest.raises(RatesMissing):
        charge(acme, recipient_country="JP", category="utility")


def test_every_card_has_one_rest_of_world_market() -> None:
    assert (
        MarketRate.objects.filter(is_rest_of_world=True).values("rate_card").distinct().count()
        == MarketRate.objects.values("rate_card").distinct().count()
        == 2
    )


def test_free_messages_to_rest_of_world_need_no_rate(acme: BillingAccount) -> None:
    free = charge(acme, recipient_country="JP", category="utility", service_window_open=True)
    assert (free.market, free.amount) == ("Rest of world", Decimal(0))


# --- idempotency -----------------------------------------------------------------------------


def test_a_replay_returns_the_same_charge_and_a_conflicting_replay_is_refused(
    acme: BillingAccount,
) -> None:
    first = charge(acme, message_id="wamid-7")
    again = charge(acme, message_id="wamid-7")

    assert again.pk == first.pk
    assert MessageCharge.objects.filter(message_id="wamid-7").count() == 1
    with pytest.raises(Conflict):
        charge(acme, message_id="wamid-7", recipient_country="BR")
    with pytest.raises(Conflict):
        charge(acme, message_id="wamid-7", service_window_open=True)


def test_bad_values_are_refused(acme: BillingAccount) -> None:
    with pytest.raises(InvalidValue):
        charge(acme, recipient_country="XX")
    with pytest.raises(InvalidValue):
        charge(acme, template="")
    with pytest.raises(InvalidValue):
        charge(acme, category="service", template="promo", service_window_open=True)
    with pytest.raises(InvalidValue):
        charge(acme, delivered_at=NOW + timedelta(hours=1))
    with pytest.raises(NotFound):
        charge(acme, account_id=acme.pk + 1000)


# --- the API ---------------------------------------------------------------------------------


def test_the_api_prices_a_message_and_replays_it(router: APIClient, acme: BillingAccount) -> None:
    body = message_body(acme)

    first = router.post("/api/v1/billing/messages", body, format="json")
    replay = router.post("/api/v1/billing/messages", body, format="json")
    changed = router.post(
        "/api/v1/billing/messages", {**body, "recipient_country": "DE"}, format="json"
    )

    assert first.status_code == 201
    assert first.json() == {
        "charge_id": first.json()["charge_id"],
        "message_id": body["message_id"],
        "amount": "0.010700",
        "currency": "USD",
        "category": "marketing",
        "market": "India",
        "free_reason": None,
        "rate": "0.010700",
        "rate_card": "2025-07-01",
        "delivered_at": "2025-08-12T10:00:00Z",
    }
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert changed.status_code == 409
    assert changed["Content-Type"] == "application/problem+json"


def test_the_api_names_the_free_reason(router: APIClient, acme: BillingAccount) -> None:
    answer = router.post(
        "/api/v1/billing/messages",
        message_body(acme, category="utility", service_window_open=True),
        format="json",
    )

    assert answer.status_code == 201
    assert (answer.json()["amount"], answer.json()["free_reason"]) == ("0.000000", "service_window")


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"colour": "red"}, 400, "colour"),
        ({"category": "sticker"}, 400, "category"),
        ({"recipient_country": "ZZ"}, 400, "recipient_country"),
        ({"delivered_at": "yesterday"}, 400, "delivered_at"),
        ({"service_window_open": None}, 400, "service_window_open"),
        ({"account": 999_999}, 404, "account"),
        ({"recipient_country": "JP"}, 409, "recipient_country"),
        ({"delivered_at": "2025-01-01T00:00:00Z"}, 409, "delivered_at"),
        ({"template": ""}, 400, "template"),
    ],
)
def test_bad_messages_get_a_problem_never_a_500(
    router: APIClient, acme: BillingAccount, change: dict[str, Any], status: int, field: str
) -> None:
    answer = router.post("/api/v1/billing/messages", message_body(acme, **change), format="json")

    assert answer.status_code == status
    assert answer["Content-Type"] == "application/problem+json"
    assert field in {e["field"] for e in answer.json().get("errors", [])}
    assert not MessageCharge.objects.exists()


def test_a_message_without_its_window_flags_is_refused(
    router: APIClient, acme: BillingAccount
) -> None:
    body = message_body(acme)
    del body["entry_point_window_open"]

    answer = router.post("/api/v1/billing/messages", body, format="json")

    assert answer.status_code == 400
    assert answer.json()["errors"] == [
        {"field": "entry_point_window_open", "message": "This field is required."}
    ]


def test_pricing_needs_the_billing_write_scope(api_client: Any, acme: BillingAccount) -> None:
    reader = api_client("billing:read")

    answer = reader.post("/api/v1/billing/messages", message_body(acme), format="json")

    assert answer.status_code == 403


def test_pricing_a_message_takes_a_fixed_number_of_queries(
    router: APIClient, acme: BillingAccount, django_assert_num_queries: Any
) -> None:
    router.post("/api/v1/billing/messages", message_body(acme), format="json")  # token cached

    # savepoints 4; the message id, the account, the card, its markets; the account's
    # share lock; the volume row (get, lock), the tiers; the insert, the count
    body = message_body(acme)
    with django_assert_num_queries(14):
        answer = router.post("/api/v1/billing/messages", body, format="json")
    assert answer.status_code == 201
    # a replay: the service's savepoint (2), the charge by message id, its card
    with django_assert_num_queries(4):
        replay = router.post("/api/v1/billing/messages", body, format="json")
    assert replay.status_code == 200


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_submissions_of_one_message_id_make_exactly_one_charge() -> None:
    account = services.create_account(
        kind="business", name="Race Co", country="US", currency="USD", now=JULY
    )
    workers = 8
    barrier = threading.Barrier(workers)
    results: list[tuple[int, bool]] = []
    failures: list[BaseException] = []

    def submit() -> None:
        try:
            barrier.wait()
            made, created = services.charge_message(
                message_id="wamid-race",
                account_id=account.pk,
                category="authentication",
                template="otp",
                recipient_country="IN",
                delivered_at=JULY,
                service_window_open=False,
                entry_point_window_open=False,
                now=NOW,
            )
            results.append((made.pk, created))
        except BaseException as error:  # reported below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert MessageCharge.objects.filter(message_id="wamid-race").count() == 1
    assert len({pk for pk, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (workers - 1) + [True]
    assert MessageVolume.objects.get(account=account).count == 1
