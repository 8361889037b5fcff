"""python manage.py seed_demo_billing: demo billing accounts on their plans, and
products sold in chat. Run by `seed_demo`. Safe to run again: accounts and products
are found by name, and only what is missing is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from billing import services
from billing.choices import AccountKind, ProductType
from billing.models import BillingAccount, Product


@dataclass(frozen=True)
class DemoAccount:
    name: str
    kind: str
    country: str
    currency: str
    plan: str
    products: tuple[tuple[str, str, str], ...] = ()


DEMO_ACCOUNTS = [
    DemoAccount(
        name="Casa Verde Café",
        kind=AccountKind.BUSINESS,
        country="BR",
        currency="BRL",
        plan="premium",
        products=(
            (ProductType.NEWSLETTER, "Casa Verde coffee letter (monthly)", "19.90"),
            (ProductType.GUIDE, "Brewing at home: the guide", "29.00"),
        ),
    ),
    DemoAccount(
        name="Nova Fitness",
        kind=AccountKind.BUSINESS,
        country="IN",
        currency="INR",
        plan="free",
        products=(
            (ProductType.CONSULTATION, "One-to-one training plan call", "999.00"),
            (ProductType.COMMUNITY, "Morning run club", "249.00"),
        ),
    ),
    DemoAccount(
        name="Lumen Coffee (ads)",
        kind=AccountKind.ADVERTISER,
        country="US",
        currency="USD",
        plan="free",
    ),
]


class Command(BaseCommand):
    help = "Demo billing accounts and digital-goods products (DEBUG only, or --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off (never on a production database).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError("Demo billing accounts are not real: run with DEBUG on, or --force.")
        accounts = products = 0
        with transaction.atomic():
            for demo in DEMO_ACCOUNTS:
                account = BillingAccount.objects.filter(name=demo.name).first()
                if account is None:
                    account = services.create_account(
                        kind=demo.kind,
                        name=demo.name,
                        country=demo.country,
                        currency=demo.currency,
                        plan=demo.plan,
                    )
                    accounts += 1
                for product_type, title, price in demo.products:
                    if not Product.objects.filter(seller=account, title=title).exists():
                        services.create_product(
                            seller_id=account.pk,
                            type=product_type,
                            title=title,
                            price=Decimal(price),
                        )
                        products += 1
        self.stdout.write(f"Demo billing: {accounts} accounts and {products} products added.")
