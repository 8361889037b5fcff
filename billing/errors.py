"""Billing's refusals, on top of `consent.errors` (each becomes a problem+json answer)."""

from __future__ import annotations

from consent.errors import Conflict


class NoRateCard(Conflict):
    code = "no-rate-card"
    title = "No rate card is in force at that time"


class RatesMissing(Conflict):
    """The market has no rate for the category yet (the rest-of-world row is empty
    until billing ops fill it)."""

    code = "market-rates-missing"
    title = "The market has no rate for this category yet"


class PriceMissing(Conflict):
    code = "plan-price-missing"
    title = "The plan has no price in the account's currency"


class PeriodOpen(Conflict):
    code = "period-open"
    title = "The period has not ended"
