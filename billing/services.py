"""Every write of the billing app: accounts and plans, message charges, digital goods
and ad spend. Invoices are closed in `billing.invoicing`.

Each function is keyword-only, typed and atomic; it raises a `consent.errors`
ParleyError (a 4xx answer) for anything it refuses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing import gateways, ratecards
from billing.choices import (
    MINOR_UNITS,
    TEMPLATE_CATEGORIES,
    AccountKind,
    FreeReason,
    PayoutStatus,
    PricedCategory,
    ProductType,
    PurchaseStatus,
    SubscriptionStatus,
    TemplateCategory,
)
from billing.errors import NoRateCard, PriceMissing, RatesMissing
from billing.models import (
    AdSpend,
    BillingAccount,
    CommissionRate,
    MarketRate,
    MessageCharge,
    MessageVolume,
    Payout,
    Plan,
    PlanPrice,
    Product,
    Purchase,
    RateCard,
    Refund,
    Subscription,
    SubscriptionCharge,
)
from billing.money import ZERO, exact
from consent import validators
from consent.errors import Conflict, InvalidValue, NotFound

CLOCK_SKEW = timedelta(minutes=5)
THRESHOLD_DAYS = 30
DEFAULT_COMMISSION = Decimal("0.10")


def fingerprint(values: dict[str, Any]) -> str:
    """A stable digest of a request's content, to tell a replay from a conflict."""
    canonical = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) containing `at`: [start, end)."""
    at = at.astimezone(UTC)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    end = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def prorated(amount: Decimal, *, start: datetime, end: datetime, at: datetime) -> Decimal:
    """The share of `amount` for the part of [start, end) from `at` on, exact to the
    microsecond of time and six decimal places of money."""
    whole = Decimal((end - start) // timedelta(microseconds=1))
    left = Decimal(max(timedelta(0), end - max(at, start)) // timedelta(microseconds=1))
    return exact(amount * left / whole)


# --- accounts and plans ----------------------------------------------------------------


def _country(value: str, *, field: str) -> str:
    try:
        return validators.country(value)
    except InvalidValue as error:
        raise InvalidValue(error.detail, field=field) from None


def _currency(value: str) -> str:
    code = value.upper()
    if code not in MINOR_UNITS:
        raise InvalidValue(
            f"'{value}' is not a currency billing supports ({', '.join(MINOR_UNITS)}).",
            field="currency",
        )
    return code


def _plan(code: str | None) -> Plan:
    plan = (
        Plan.objects.filter(is_default=True).first()
        if code is None
        else Plan.objects.filter(code=code).first()
    )
    if plan is None:
        raise InvalidValue(f"No plan '{code}'.", field="plan")
    return plan


def _price(plan: Plan, currency: str) -> Decimal:
    price = PlanPrice.objects.filter(plan=plan, currency=currency).first()
    if price is None:
        raise PriceMissing(
            f"The {plan.name} plan has no monthly price in {currency}; billing ops set one.",
            field="plan",
        )
    return price.monthly_price


def _refresh_badge(account: BillingAccount, subscription: Subscription) -> None:
    # The badge is a paid feature: a plan granting it at no charge does not.
    badge = subscription.plan.verified_badge and subscription.monthly_price > 0
    if account.verified_badge != badge:
        account.verified_badge = badge
        account.save(update_fields=["verified_badge"])


def _start_subscription(
    *, account: BillingAccount, plan: Plan, start: datetime, end: datetime, charge_from: datetime
) -> Subscription:
    price = _price(plan, account.currency)
    subscription = Subscription.objects.create(
        account=account,
        plan=plan,
        monthly_price=price,
        currency=account.currency,
        current_period_start=start,
        current_period_end=end,
        started_at=charge_from,
    )
    amount = prorated(price, start=start, end=end, at=charge_from)
    last_day = end - timedelta(days=1)
    if amount > 0:
        SubscriptionCharge.objects.create(
            account=account,
            subscription=subscription,
            plan=plan,
            description=f"{plan.name} plan from {charge_from:%d %b %Y} to {last_day:%d %b %Y}",
            period_start=charge_from,
            period_end=end,
            amount=amount,
            currency=account.currency,
            charged_at=charge_from,
        )
    _refresh_badge(account, subscription)
    return subscription


@transaction.atomic
def create_account(
    *,
    kind: str,
    name: str,
    country: str,
    currency: str,
    plan: str | None = None,
    now: datetime | None = None,
) -> BillingAccount:
    """Opens a billing account on a plan (the default, Free, unless named). A paid plan
    is charged for the rest of the current month, prorated."""
    now = now or timezone.now()
    if kind not in AccountKind.values:
        raise InvalidValue(f"'{kind}' is not an account kind.", field="kind")
    if not name.strip():
        raise InvalidValue("An account needs a name.", field="name")
    account = BillingAccount.objects.create(
        kind=kind,
        name=name.strip(),
        country=validators.country(country),
        currency=_currency(currency),
        created_at=now,
    )
    start, end = month_bounds(now)
    _start_subscription(account=account, plan=_plan(plan), start=start, end=end, charge_from=now)
    return account


def hold_account(account_id: int) -> None:
    """Holds the account's row in share mode until the transaction ends: writes of
    what an invoice aggregates do, so that closing the account's month (which locks
    the row for update) waits for them and they wait for it, and a close never misses
    or half-takes a charge. (SQLite serialises writers anyway.)"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM billing_billingaccount WHERE id = %s FOR SHARE", [account_id]
            )


def _locked_account(account_id: int) -> BillingAccount:
    account = BillingAccount.objects.select_for_update().filter(pk=account_id).first()
    if account is None:
        raise NotFound(f"No billing account {account_id}.", field="account")
    return account


def _active_subscription(account: BillingAccount) -> Subscription:
    # The account's row is locked already: the subscription's is enough besides.
    return (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("plan", "next_plan")
        .get(account=account, status=SubscriptionStatus.ACTIVE)
    )


def _end(subscription: Subscription, at: datetime) -> None:
    subscription.status = SubscriptionStatus.ENDED
    subscription.ended_at = at
    subscription.save(update_fields=["status", "ended_at"])


@transaction.atomic
def change_plan(*, account_id: int, plan: str, now: datetime | None = None) -> Subscription:
    """Moves an account to another plan.

    A dearer plan starts at once: the current period continues on it and the price
    difference is charged for the rest of the period, prorated to the microsecond. A
    cheaper plan (a downgrade; the default plan: a cancellation) starts at the end of
    the period, and the current plan stays until then. Asking for the current plan
    withdraws a pending downgrade or cancellation.
    """
    now = now or timezone.now()
    account = _locked_account(account_id)
    current = _active_subscription(account)
    target = _plan(plan)
    if target.pk == current.plan_id:
        if current.next_plan_id is not None:
            current.next_plan = None
            current.save(update_fields=["next_plan"])
        return current
    price = _price(target, account.currency)
    if price <= current.monthly_price:
        current.next_plan = target
        current.save(update_fields=["next_plan"])
        return current
    _end(current, now)
    upgraded = Subscription.objects.create(
        account=account,
        plan=target,
        monthly_price=price,
        currency=account.currency,
        current_period_start=current.current_period_start,
        current_period_end=current.current_period_end,
        started_at=now,
    )
    difference = prorated(
        price - current.monthly_price,
        start=current.current_period_start,
        end=current.current_period_end,
        at=now,
    )
    if difference > 0:
        SubscriptionCharge.objects.create(
            account=account,
            subscription=upgraded,
            plan=target,
            description=f"Upgrade from {current.plan.name} to {target.name}, prorated "
            f"from {now:%d %b %Y %H:%M} UTC",
            period_start=now,
            period_end=current.current_period_end,
            amount=difference,
            currency=account.currency,
            charged_at=now,
        )
    _refresh_badge(account, upgraded)
    return upgraded


@transaction.atomic
def cancel_plan(*, account_id: int, now: datetime | None = None) -> Subscription:
    """Cancels a paid plan at the end of the period (the account returns to the
    default plan then); the plan and its badge stay until that moment."""
    account = _locked_account(account_id)
    current = _active_subscription(account)
    if current.plan.is_default:
        raise Conflict("The account is on the default plan: there is nothing to cancel.")
    default = _plan(None)
    return change_plan(account_id=account.pk, plan=default.code, now=now)


def renew_subscriptions(*, now: datetime | None = None) -> int:
    """Starts the next period of every subscription whose period has ended (on its
    pending plan, if any), charging the month in advance; one transaction per account.
    Idempotent; catches up on missed months. Returns how many periods were started."""
    now = now or timezone.now()
    started = 0
    due = Subscription.objects.filter(
        status=SubscriptionStatus.ACTIVE, current_period_end__lte=now
    ).values_list("account_id", flat=True)
    for account_id in list(due):
        started += renew_subscription(account_id=account_id, now=now)
    return started


@transaction.atomic
def renew_subscription(*, account_id: int, now: datetime) -> int:
    """One account's renewal (see `renew_subscriptions`): the periods started."""
    account = _locked_account(account_id)
    current = _active_subscription(account)
    started = 0
    while current.current_period_end <= now:
        plan = current.next_plan or current.plan
        _end(current, current.current_period_end)
        start, end = month_bounds(current.current_period_end)
        current = _start_subscription(
            account=account, plan=plan, start=start, end=end, charge_from=start
        )
        started += 1
    return started


# --- rate cards ---------------------------------------------------------------------------


def _card_rows(card: RateCard) -> list[dict[str, object]]:
    fields = ["name", "countries", "is_rest_of_world", "notes", *ratecards.RATE_COLUMNS]
    return sorted(
        (dict(row) for row in card.markets.values(*fields)), key=lambda row: str(row["name"])
    )


@transaction.atomic
def import_rate_card(
    *, parsed: ratecards.ParsedCard, effective_from: date, name: str, source: str
) -> tuple[RateCard, bool]:
    """Stores a parsed rate card in force from `effective_from`. Idempotent: the same
    card again changes nothing and returns created=False; a different card for a date
    that already has one is refused (billing ops edit it in the admin instead)."""
    rows = sorted((m.as_fields() for m in parsed.markets), key=lambda row: str(row["name"]))
    existing = RateCard.objects.filter(effective_from=effective_from).first()
    if existing is not None:
        same = existing.currency == parsed.currency and _card_rows(existing) == rows
        if not same:
            raise Conflict(
                f"A different rate card is in force from {effective_from} ({existing}); "
                "change it in the admin.",
                field="effective_from",
            )
        return existing, False
    card = RateCard.objects.create(
        effective_from=effective_from, name=name, currency=parsed.currency, source=source
    )
    MarketRate.objects.bulk_create(MarketRate(rate_card=card, **row) for row in rows)
    return card, True


# --- per-message charges -----------------------------------------------------------------

# Other apps answer "is a free entry point window open between this recipient and this
# business at this time?" (the ads app: a click on a click-to-chat ad). Billing imports
# no other app; they register here when Django starts (their AppConfig.ready).
EntryWindowCheck = Callable[..., bool]
_entry_window_checks: list[EntryWindowCheck] = []


def register_entry_window_check(check: EntryWindowCheck) -> None:
    """`check(recipient=…, business=…, at=…)` → True when messages are free; `business`
    is the billing account's id as text."""
    if check not in _entry_window_checks:
        _entry_window_checks.append(check)


def entry_window_open(*, recipient: str, account: BillingAccount, at: datetime) -> bool:
    return bool(recipient) and any(
        check(recipient=recipient, business=str(account.pk), at=at)
        for check in _entry_window_checks
    )


def rate_card_at(at: datetime) -> RateCard:
    """The rate card in force at `at`: the latest to take effect on or before its UTC day."""
    card = (
        RateCard.objects.filter(effective_from__lte=at.astimezone(UTC).date())
        .order_by("-effective_from")
        .first()
    )
    if card is None:
        raise NoRateCard(
            f"No rate card is in force on {at.astimezone(UTC).date()}.", field="delivered_at"
        )
    return card


def market_for(card: RateCard, country: str) -> MarketRate:
    """The card's market listing the country, or its rest-of-world market."""
    markets = list(card.markets.all())
    for market in markets:
        if country in market.country_codes:
            return market
    rest = next((m for m in markets if m.is_rest_of_world), None)
    if rest is None:  # the importer and the admin always keep one
        raise RatesMissing(f"The rate card {card} has no rest-of-world market.")
    return rest


@dataclass(frozen=True)
class Price:
    category: str
    rate: Decimal
    free_reason: str


def _volume(*, account: BillingAccount, market: str, category: str, first: date, last: date) -> int:
    total = MessageVolume.objects.filter(
        account=account, market=market, category=category, day__gte=first, day__lte=last
    ).aggregate(n=Sum("count"))["n"]
    return int(total or 0)


def _priced_rate(
    *,
    account: BillingAccount,
    card: RateCard,
    market: MarketRate,
    category: str,
    recipient_country: str,
    day: date,
) -> Price:
    """The rate of a charged template (the volume row of its day is locked)."""
    if category == TemplateCategory.AUTHENTICATION and (
        market.authentication_international is not None and account.country != recipient_country
    ):
        sent = _volume(
            account=account,
            market=market.name,
            category=category,
            first=day - timedelta(days=THRESHOLD_DAYS - 1),
            last=day,
        )
        if sent >= card.auth_international_threshold:
            return Price(
                PricedCategory.AUTHENTICATION_INTERNATIONAL,
                market.authentication_international,
                "",
            )
    rate: Decimal | None = getattr(market, category)
    if rate is None:
        raise RatesMissing(
            f"The market '{market.name}' of {card} has no {category} rate yet; billing ops "
            "must set it before these messages can be charged.",
            field="recipient_country",
        )
    tiers = [t for t in market.tiers.all() if t.category == category]
    if tiers:
        this_month = _volume(
            account=account,
            market=market.name,
            category=category,
            first=day.replace(day=1),
            last=date(day.year + day.month // 12, day.month % 12 + 1, 1) - timedelta(days=1),
        )
        reached = [t for t in tiers if this_month >= t.above]
        if reached:
            rate = max(reached, key=lambda t: t.above).rate
    return Price(category, rate, "")


def _free_reason(*, category: str, service_window_open: bool, entry_point_window_open: bool) -> str:
    if category == TemplateCategory.SERVICE:
        if service_window_open:
            return FreeReason.SERVICE_REPLY
        if entry_point_window_open:
            return FreeReason.ENTRY_POINT_WINDOW
        raise Conflict(
            "A free-form message is delivered only inside a customer service window or "
            "an entry point window.",
            field="service_window_open",
        )
    if entry_point_window_open:
        return FreeReason.ENTRY_POINT_WINDOW
    if category == TemplateCategory.UTILITY and service_window_open:
        return FreeReason.SERVICE_WINDOW
    return ""


@transaction.atomic
def charge_message(
    *,
    message_id: str,
    account_id: int,
    category: str,
    template: str,
    recipient_country: str,
    delivered_at: datetime,
    service_window_open: bool,
    entry_point_window_open: bool,
    recipient: str = "",
    now: datetime | None = None,
) -> tuple[MessageCharge, bool]:
    """Prices one delivered message from the rate card in force at `delivered_at`.

    Returns (charge, created). Idempotent on `message_id`: a replay with the same
    content returns the first charge; with other content it is refused (409). Two
    concurrent first submissions are settled by the unique message id: one charge is
    stored, the other submission replays it.

    The rules (docs/BILLING.md): only templates are charged; a free-form reply is free
    in the customer service window; a utility template in the service window is free;
    everything is free in an entry point window (the request's flag, or an app that
    registered a check — the ads app's click-to-chat windows); an authentication
    template to a market with an authentication-international rate, from an account
    based in another country, costs that rate once the account has sent the card's
    threshold of authentication templates to that market in the 30 days up to the
    delivery day; monthly volume tiers of the market apply to utility and
    authentication.
    """
    now = now or timezone.now()
    content = {
        "account": account_id,
        "category": category,
        "template": template,
        "recipient_country": recipient_country,
        "recipient": recipient,
        "delivered_at": delivered_at.astimezone(UTC).isoformat(),
        "service_window_open": service_window_open,
        "entry_point_window_open": entry_point_window_open,
    }
    digest = fingerprint(content)
    existing = MessageCharge.objects.filter(message_id=message_id).first()
    if existing is not None:
        return _replayed(existing, digest), False

    if category not in TemplateCategory.values:
        raise InvalidValue(f"'{category}' is not a message category.", field="category")
    if category in TEMPLATE_CATEGORIES and not template:
        raise InvalidValue("A template message names its template.", field="template")
    if category == TemplateCategory.SERVICE and template:
        raise InvalidValue("A free-form reply has no template.", field="template")
    country = _country(recipient_country, field="recipient_country")
    if delivered_at > now + CLOCK_SKEW:
        raise InvalidValue("A message cannot be delivered in the future.", field="delivered_at")
    account = BillingAccount.objects.filter(pk=account_id).first()
    if account is None:
        raise NotFound(f"No billing account {account_id}.", field="account")
    card = rate_card_at(delivered_at)
    market = market_for(card, country)
    in_entry_window = entry_point_window_open or entry_window_open(
        recipient=recipient, account=account, at=delivered_at
    )
    free_reason = _free_reason(
        category=category,
        service_window_open=service_window_open,
        entry_point_window_open=in_entry_window,
    )
    day = delivered_at.astimezone(UTC).date()
    hold_account(account.pk)
    try:
        with transaction.atomic():
            if free_reason:
                priced = (
                    PricedCategory.SERVICE if category == TemplateCategory.SERVICE else category
                )
                price = Price(priced, ZERO, free_reason)
            else:
                # Counting and charging a message of this account, market and category
                # on this day is serialised on its volume row.
                volume, _ = MessageVolume.objects.get_or_create(
                    account=account, market=market.name, category=category, day=day
                )
                MessageVolume.objects.select_for_update().filter(pk=volume.pk).first()
                price = _priced_rate(
                    account=account,
                    card=card,
                    market=market,
                    category=category,
                    recipient_country=country,
                    day=day,
                )
            charge = MessageCharge.objects.create(
                message_id=message_id,
                account=account,
                template_category=category,
                template=template,
                recipient_country=country,
                recipient=recipient,
                delivered_at=delivered_at,
                service_window_open=service_window_open,
                entry_point_window_open=in_entry_window,
                rate_card=card,
                market=market.name,
                category=price.category,
                free_reason=price.free_reason,
                rate=price.rate,
                amount=exact(price.rate),
                currency=card.currency,
                fingerprint=digest,
                created_at=now,
            )
            if not free_reason:
                MessageVolume.objects.filter(pk=volume.pk).update(count=F("count") + 1)
    except IntegrityError:
        existing = MessageCharge.objects.filter(message_id=message_id).first()
        if existing is None:
            raise
        return _replayed(existing, digest), False
    return charge, True


def _replayed(charge: MessageCharge, digest: str) -> MessageCharge:
    if charge.fingerprint != digest:
        raise Conflict(
            f"Message '{charge.message_id}' was already charged with different content.",
            field="message_id",
        )
    return charge


# --- digital goods -----------------------------------------------------------------------


def commission_rate(product_type: str) -> Decimal:
    row = CommissionRate.objects.filter(product_type=product_type).first()
    return row.rate if row is not None else DEFAULT_COMMISSION


@transaction.atomic
def create_product(*, seller_id: int, type: str, title: str, price: Decimal) -> Product:
    """A product a business sells in chat, priced in the seller's currency."""
    if type not in ProductType.values:
        raise InvalidValue(f"'{type}' is not a product type.", field="type")
    if not title.strip():
        raise InvalidValue("A product needs a title.", field="title")
    seller = BillingAccount.objects.filter(pk=seller_id).first()
    if seller is None:
        raise NotFound(f"No billing account {seller_id}.", field="seller")
    if seller.kind != AccountKind.BUSINESS:
        raise Conflict("Only business accounts sell digital goods.", field="seller")
    if not price.is_finite() or price <= 0 or exact(price) != price:
        raise InvalidValue("A price is positive, with at most six decimal places.", field="price")
    return Product.objects.create(
        seller=seller, type=type, title=title.strip(), price=price, currency=seller.currency
    )


@transaction.atomic
def purchase(
    *,
    purchase_id: str,
    product_id: int,
    buyer: str,
    payment_method: str,
    gateway: str = gateways.DEFAULT,
    now: datetime | None = None,
) -> tuple[Purchase, bool]:
    """A buyer pays for a product through the payment gateway: authorised, then
    captured (or left authorised until the gateway reports the capture, or failed).

    The commission (the product type's rate, 10% by default) is fixed on the purchase.
    Idempotent on `purchase_id` like message charges; the gateway is asked with the
    purchase id as its idempotency reference, so a retried call cannot pay twice.
    """
    now = now or timezone.now()
    digest = fingerprint(
        {"product": product_id, "buyer": buyer, "payment_method": payment_method, "g": gateway}
    )
    existing = Purchase.objects.filter(purchase_id=purchase_id).first()
    if existing is not None:
        if existing.fingerprint != digest:
            raise Conflict(
                f"Purchase '{purchase_id}' was already made with different content.",
                field="purchase_id",
            )
        return existing, False
    if not buyer:
        raise InvalidValue("A purchase names its buyer.", field="buyer")
    if not validators.EXTERNAL_ID_RE.fullmatch(buyer):
        raise InvalidValue("The buyer is an opaque account id (1 to 64 characters).", field="buyer")
    product = Product.objects.select_related("seller").filter(pk=product_id).first()
    if product is None:
        raise NotFound(f"No product {product_id}.", field="product")
    if not product.is_active:
        raise Conflict("This product is no longer sold.", field="product")
    client = gateways.get(gateway)
    hold_account(product.seller_id)
    rate = commission_rate(product.type)
    authorisation = client.authorise(
        idempotency_key=purchase_id,
        amount=product.price,
        currency=product.currency,
        payment_method=payment_method,
    )
    status = PurchaseStatus.FAILED
    captured_at = None
    if authorisation.status == gateways.AUTHORISED:
        status = PurchaseStatus.AUTHORISED
        capture = client.capture(reference=authorisation.reference, amount=product.price)
        if capture.status == gateways.CAPTURED:
            status, captured_at = PurchaseStatus.CAPTURED, now
    try:
        with transaction.atomic():
            bought = Purchase.objects.create(
                purchase_id=purchase_id,
                product=product,
                seller=product.seller,
                buyer=buyer,
                amount=product.price,
                currency=product.currency,
                commission_rate=rate,
                commission=exact(product.price * rate),
                status=status,
                gateway=client.name,
                gateway_reference=authorisation.reference,
                fingerprint=digest,
                created_at=now,
                captured_at=captured_at,
            )
    except IntegrityError:
        existing = Purchase.objects.filter(purchase_id=purchase_id).first()
        if existing is None or existing.fingerprint != digest:
            raise Conflict(f"Purchase '{purchase_id}' conflicts.", field="purchase_id") from None
        return existing, False
    return bought, True


@transaction.atomic
def apply_gateway_event(
    *, gateway: str, reference: str, status: str, now: datetime | None = None
) -> Purchase:
    """A status update the gateway sends (webhook-style): an authorised purchase was
    captured or failed. Repeating an update changes nothing; one the purchase's state
    does not allow is refused."""
    now = now or timezone.now()
    client = gateways.get(gateway)
    found = Purchase.objects.filter(gateway=client.name, gateway_reference=reference)
    seller_id = found.values_list("seller_id", flat=True).first()
    if seller_id is None:
        raise NotFound(f"No purchase with {gateway} reference '{reference}'.", field="reference")
    # The account first, then the purchase: the order a month's close takes them in.
    hold_account(seller_id)
    bought = found.select_for_update().get()
    target = {gateways.CAPTURED: PurchaseStatus.CAPTURED, gateways.FAILED: PurchaseStatus.FAILED}
    if status not in target:
        raise InvalidValue(f"'{status}' is not a gateway status update.", field="status")
    if bought.status == target[status]:
        return bought
    if status == gateways.CAPTURED and bought.status in (
        PurchaseStatus.REFUNDED,
        PurchaseStatus.PARTIALLY_REFUNDED,
    ):
        return bought  # captured long ago; a late duplicate
    if bought.status != PurchaseStatus.AUTHORISED:
        raise Conflict(f"A {bought.status} purchase cannot become {status}.", field="status")
    bought.status = target[status]
    if status == gateways.CAPTURED:
        bought.captured_at = now
    bought.save(update_fields=["status", "captured_at"])
    return bought


@transaction.atomic
def refund(
    *,
    refund_id: str,
    purchase_id: str,
    amount: Decimal | None = None,
    now: datetime | None = None,
) -> tuple[Refund, bool]:
    """Gives money back to the buyer (all that is left, unless an amount is named) and
    reverses the commission in proportion; the last refund reverses exactly what is
    left of the commission, so a full refund reverses all of it. Idempotent on
    `refund_id`."""
    now = now or timezone.now()
    seller_id = (
        Purchase.objects.filter(purchase_id=purchase_id).values_list("seller_id", flat=True).first()
    )
    if seller_id is None:
        raise NotFound(f"No purchase '{purchase_id}'.", field="purchase_id")
    # The account first, then the purchase: the order a month's close takes them in.
    hold_account(seller_id)
    bought = Purchase.objects.select_for_update().get(purchase_id=purchase_id)
    existing = Refund.objects.filter(refund_id=refund_id).first()
    if existing is not None:
        if existing.purchase_id != bought.pk or (amount is not None and amount != existing.amount):
            raise Conflict(f"Refund '{refund_id}' was made with other content.", field="refund_id")
        return existing, False
    if bought.status not in (PurchaseStatus.CAPTURED, PurchaseStatus.PARTIALLY_REFUNDED):
        raise Conflict(f"A {bought.status} purchase cannot be refunded.", field="purchase_id")
    left = bought.amount - bought.refunded
    amount = left if amount is None else amount
    if not amount.is_finite() or amount <= 0 or exact(amount) != amount:
        raise InvalidValue("A refund is positive, with at most six decimal places.", field="amount")
    if amount > left:
        raise Conflict(f"At most {left} {bought.currency} is left to refund.", field="amount")
    if amount == left:
        reversed_commission = bought.commission - bought.commission_reversed
    else:
        reversed_commission = exact(bought.commission * amount / bought.amount)
    result = gateways.get(bought.gateway).refund(
        reference=bought.gateway_reference, amount=amount, idempotency_key=refund_id
    )
    if result.status != gateways.REFUNDED:
        raise Conflict("The payment gateway refused the refund.", field="purchase_id")
    made = Refund.objects.create(
        refund_id=refund_id,
        purchase=bought,
        seller_id=bought.seller_id,
        amount=amount,
        commission_reversed=reversed_commission,
        currency=bought.currency,
        gateway_reference=result.reference,
        created_at=now,
    )
    bought.refunded += amount
    bought.commission_reversed += reversed_commission
    bought.status = (
        PurchaseStatus.REFUNDED
        if bought.refunded == bought.amount
        else PurchaseStatus.PARTIALLY_REFUNDED
    )
    bought.save(update_fields=["refunded", "commission_reversed", "status"])
    return made, True


# --- ad spend ----------------------------------------------------------------------------


@transaction.atomic
def record_ad_spend(
    *,
    account_id: int,
    campaign_ref: str,
    campaign_name: str,
    pricing: str,
    day: date,
    impressions: int,
    clicks: int,
    amount: Decimal,
    currency: str,
) -> AdSpend:
    """Adds an ad event's charge to the account's spend for the campaign and day (what
    the ads app reports, in the event's transaction). Once a day has been invoiced, a
    late event starts a new row, billed on the next invoice."""
    if amount < 0 or impressions < 0 or clicks < 0:
        raise InvalidValue("Ad spend cannot be negative.")
    account = BillingAccount.objects.filter(pk=account_id).first()
    if account is None:
        raise NotFound(f"No billing account {account_id}.", field="account")
    hold_account(account.pk)
    row, _ = AdSpend.objects.get_or_create(
        account=account,
        campaign_ref=campaign_ref,
        day=day,
        invoice=None,
        defaults={
            "campaign_name": campaign_name,
            "pricing": pricing,
            "currency": _currency(currency),
        },
    )
    AdSpend.objects.filter(pk=row.pk).update(
        impressions=F("impressions") + impressions,
        clicks=F("clicks") + clicks,
        amount=F("amount") + exact(amount),
    )
    row.refresh_from_db()
    return row


# --- payouts -----------------------------------------------------------------------------


@transaction.atomic
def mark_payouts_paid(*, payout_ids: list[int]) -> int:
    """Billing ops record that owed payouts were paid out; returns how many changed."""
    return Payout.objects.filter(pk__in=payout_ids, status=PayoutStatus.OWED).update(
        status=PayoutStatus.PAID
    )
