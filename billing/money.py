"""Exact amounts and the one rounding of an invoice line.

Amounts before invoicing are exact to six decimal places (`exact`): message rates
have four, prorations and commissions more. An invoice line rounds the exact sum of
what it aggregates to the currency's minor unit once, half to even (`ROUND_HALF_EVEN`,
"banker's rounding", so that halves do not bias totals upwards); the total is the
sum of the rounded lines, with no further rounding.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from billing.choices import MINOR_UNITS

EXACT = Decimal("0.000001")
ZERO = Decimal(0)


def exact(amount: Decimal) -> Decimal:
    """An amount as stored before invoicing: six decimal places, half to even."""
    return amount.quantize(EXACT, rounding=ROUND_HALF_EVEN)


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS[currency])


def round_line(amount: Decimal, currency: str) -> Decimal:
    """The rounding of an invoice line to the currency's minor unit, half to even."""
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_EVEN)


def shown(amount: Decimal, currency: str) -> str:
    """An amount as people read it: in the currency's minor unit when that is exact
    (19.90, not 19.900000), otherwise every stored decimal place."""
    in_minor_units = amount.quantize(minor_unit(currency))
    return str(in_minor_units if in_minor_units == amount else amount)
