"""Rate cards as files: the CSV format, its parsing and validation.

The format is the one of `billing/data/rate_card_2025-07.csv`: one row per market,
`market,countries,currency,marketing,utility,authentication,authentication_international,notes`,
countries separated by spaces, rates in the card's currency per delivered message, an
empty rate meaning "not priced". A card always has a rest-of-world market
(`REST_OF_WORLD`) for the countries no row lists; a file may give it as a row with no
countries, otherwise it is added with no rates, for billing ops to fill.

Pure functions (no database), so that the data migration can use them too.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pycountry

from billing.choices import MINOR_UNITS

REST_OF_WORLD = "Rest of world"
COLUMNS = [
    "market",
    "countries",
    "currency",
    "marketing",
    "utility",
    "authentication",
    "authentication_international",
    "notes",
]
RATE_COLUMNS = ["marketing", "utility", "authentication", "authentication_international"]
DATA_DIR = Path(__file__).resolve().parent / "data"
# The cards shipped with Parley, imported by migration 0002.
SHIPPED_CARDS = [
    ("2025-07-01", "July 2025", DATA_DIR / "rate_card_2025-07.csv"),
    ("2026-01-01", "January 2026", DATA_DIR / "rate_card_2026-01.csv"),
]


class RateCardError(ValueError):
    """The file is not a valid rate card; the message says where."""


@dataclass(frozen=True)
class MarketRow:
    name: str
    countries: tuple[str, ...]
    is_rest_of_world: bool
    rates: dict[str, Decimal | None]
    notes: str

    def as_fields(self) -> dict[str, object]:
        return {
            "name": self.name,
            "countries": " ".join(self.countries),
            "is_rest_of_world": self.is_rest_of_world,
            "notes": self.notes,
            **self.rates,
        }


@dataclass(frozen=True)
class ParsedCard:
    currency: str
    markets: tuple[MarketRow, ...]


def valid_country(code: str) -> bool:
    return len(code) == 2 and code.isupper() and pycountry.countries.get(alpha_2=code) is not None


def parse_rate(value: str, *, where: str) -> Decimal | None:
    value = value.strip()
    if not value:
        return None
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise RateCardError(f"{where}: '{value}' is not a decimal number.") from None
    if not rate.is_finite() or rate < 0:
        raise RateCardError(f"{where}: a rate must be a number of zero or more.")
    if rate.as_tuple().exponent < -6:  # type: ignore[operator]
        raise RateCardError(f"{where}: a rate has at most six decimal places.")
    return rate


def check_countries(markets: list[tuple[str, list[str]]]) -> None:
    """Every code is ISO 3166-1 alpha-2 and in one market only."""
    seen: dict[str, str] = {}
    for name, codes in markets:
        for code in codes:
            if not valid_country(code):
                raise RateCardError(f"{name}: '{code}' is not an ISO 3166-1 alpha-2 code.")
            if code in seen:
                raise RateCardError(f"{code} is in both {seen[code]} and {name}.")
            seen[code] = name


def parse(text: str) -> ParsedCard:
    """Parses and validates a rate card; raises RateCardError naming the problem."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != COLUMNS:
        raise RateCardError(f"The header must be: {','.join(COLUMNS)}")
    rows: list[MarketRow] = []
    currencies: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        if None in raw or any(v is None for v in raw.values()):
            raise RateCardError(f"line {line}: expected {len(COLUMNS)} columns.")
        name = raw["market"].strip()
        if not name:
            raise RateCardError(f"line {line}: the market has no name.")
        currencies.add(raw["currency"].strip())
        codes = raw["countries"].split()
        rates = {c: parse_rate(raw[c], where=f"line {line} ({name}, {c})") for c in RATE_COLUMNS}
        rows.append(
            MarketRow(
                name=name,
                countries=tuple(codes),
                is_rest_of_world=not codes,
                rates=rates,
                notes=raw["notes"].strip(),
            )
        )
    if not rows:
        raise RateCardError("The card has no markets.")
    if len(currencies) != 1 or not currencies <= set(MINOR_UNITS):
        raise RateCardError(f"Every row needs one currency of {', '.join(MINOR_UNITS)}.")
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise RateCardError("Each market is named once.")
    if sum(r.is_rest_of_world for r in rows) > 1:
        raise RateCardError("Only the rest-of-world market has no countries.")
    check_countries([(r.name, list(r.countries)) for r in rows])
    if not any(r.is_rest_of_world for r in rows):
        rows.append(
            MarketRow(
                name=REST_OF_WORLD,
                countries=(),
                is_rest_of_world=True,
                rates=dict.fromkeys(RATE_COLUMNS),
                notes="Countries no other market lists; billing ops set these rates "
                "before messages there can be charged.",
            )
        )
    return ParsedCard(currency=currencies.pop(), markets=tuple(rows))


def read(path: Path) -> ParsedCard:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RateCardError(f"Cannot read {path}: {exc}") from None
    return parse(text)
