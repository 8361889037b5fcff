"""python manage.py import_rate_card PATH --effective 2025-07-01 [--name "July 2025"]

Imports a per-message rate card (the CSV format of `billing/data/`, see
`billing.ratecards`) in force from a date. Running it again with the same file changes
nothing; a different file for a date that already has a card is refused.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import ratecards, services
from consent.errors import ParleyError


def iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"'{value}' is not a date (YYYY-MM-DD).") from None


class Command(BaseCommand):
    help = "Import a per-message rate card from CSV, in force from --effective (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--effective", required=True, type=iso_date, help="YYYY-MM-DD")
        parser.add_argument("--name", default="", help="Default: the month, e.g. July 2025.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        effective: date = options["effective"]
        try:
            parsed = ratecards.read(path)
        except ratecards.RateCardError as error:
            raise CommandError(str(error)) from None
        try:
            card, created = services.import_rate_card(
                parsed=parsed,
                effective_from=effective,
                name=options["name"] or effective.strftime("%B %Y"),
                source=path.name,
            )
        except ParleyError as error:
            raise CommandError(error.detail) from None
        markets = len(parsed.markets)
        if created:
            self.stdout.write(f"Imported {card} with {markets} markets.")
        else:
            self.stdout.write(f"{card} is already imported with the same rates: unchanged.")
