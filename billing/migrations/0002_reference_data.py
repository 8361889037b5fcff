"""Reference data: the Free and Premium plans with monthly prices per currency, the
10% commission per product type, and the rate cards shipped in `billing/data/`
(July 2025, and January 2026 with its changes). Billing ops change all of it in the
admin; no price for Premium was published, so its prices here are a starting point.
"""

from datetime import date
from decimal import Decimal

from django.db import migrations

from billing import ratecards

PREMIUM = {
    "USD": "29.00",
    "EUR": "27.00",
    "GBP": "23.00",
    "CHF": "26.00",
    "CAD": "39.00",
    "BRL": "149.00",
    "INR": "2400.00",
    "IDR": "449000.00",
    "NGN": "45000.00",
    "ZAR": "529.00",
    "JPY": "4400",
}
PRODUCT_TYPES = ["newsletter", "community", "consultation", "guide"]


def forward(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    PlanPrice = apps.get_model("billing", "PlanPrice")
    CommissionRate = apps.get_model("billing", "CommissionRate")
    RateCard = apps.get_model("billing", "RateCard")
    MarketRate = apps.get_model("billing", "MarketRate")

    free = Plan.objects.create(code="free", name="Free", is_default=True)
    premium = Plan.objects.create(
        code="premium",
        name="Premium",
        advanced_analytics=True,
        automation_workflows=True,
        crm_integration=True,
        dedicated_support=True,
        verified_badge=True,
    )
    for currency, price in PREMIUM.items():
        PlanPrice.objects.create(plan=free, currency=currency, monthly_price=Decimal(0))
        PlanPrice.objects.create(plan=premium, currency=currency, monthly_price=Decimal(price))
    for product_type in PRODUCT_TYPES:
        CommissionRate.objects.create(product_type=product_type, rate=Decimal("0.10"))

    for effective, name, path in ratecards.SHIPPED_CARDS:
        parsed = ratecards.read(path)
        card = RateCard.objects.create(
            effective_from=date.fromisoformat(effective),
            name=name,
            currency=parsed.currency,
            source=f"billing/data/{path.name}",
        )
        for market in parsed.markets:
            MarketRate.objects.create(rate_card=card, **market.as_fields())


def backward(apps, schema_editor):
    for model in ["MarketRate", "RateCard", "CommissionRate", "PlanPrice", "Plan"]:
        apps.get_model("billing", model).objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
