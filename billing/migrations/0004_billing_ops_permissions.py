"""Billing ops run billing (the group comes from consent 0005): view, add and change
accounts, plans and their prices, rate cards with their markets and volume tiers,
commission rates and products; view subscriptions, purchases, invoices and payouts,
and mark payouts paid. Invoices and their lines cannot be changed by anyone.

No permission on message charges or their volumes: a charge names the recipient of a
message, and staff see those only as invoice lines.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

BILLING_OPS = "Billing ops"
MANAGED = [
    "billingaccount",
    "plan",
    "planprice",
    "ratecard",
    "marketrate",
    "volumetier",
    "commissionrate",
    "product",
]
VIEWED = ["subscription", "subscriptioncharge", "purchase", "refund", "invoice", "invoiceline"]
CODENAMES = [
    *(f"{action}_{model}" for model in MANAGED for action in ("view", "add", "change")),
    *(f"view_{model}" for model in VIEWED),
    "view_payout",
    "change_payout",
]


def _permissions(apps):
    Permission = apps.get_model("auth", "Permission")
    return list(
        Permission.objects.filter(content_type__app_label="billing", codename__in=CODENAMES)
    )


def grant(apps, schema_editor):
    create_permissions(
        global_apps.get_app_config("billing"),
        verbosity=0,
        using=schema_editor.connection.alias,
        apps=apps,
    )
    permissions = _permissions(apps)
    missing = set(CODENAMES) - {p.codename for p in permissions}
    if missing:
        raise RuntimeError(f"Unknown permissions for {BILLING_OPS}: {sorted(missing)}")
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name=BILLING_OPS)
    group.permissions.add(*permissions)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    group = Group.objects.filter(name=BILLING_OPS).first()
    if group is not None:
        group.permissions.remove(*_permissions(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_invoices_immutable"),
        ("consent", "0005_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
