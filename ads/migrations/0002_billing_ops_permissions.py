"""Billing ops run advertisers and campaigns: view, add and change advertisers,
campaigns, their ads and targeting rules (the group comes from consent 0005).

No permission on decisions, events, signals, subject features, hidden advertisers or
chat windows: those are about individual people, and no staff group gets them.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

BILLING_OPS = "Billing ops"
MODELS = ["advertiser", "campaign", "ad", "targetingrule"]
CODENAMES = [f"{action}_{model}" for model in MODELS for action in ("view", "add", "change")]


def _permissions(apps):
    Permission = apps.get_model("auth", "Permission")
    return list(Permission.objects.filter(content_type__app_label="ads", codename__in=CODENAMES))


def grant(apps, schema_editor):
    # Permissions are normally created after `migrate` (post_migrate); create them now.
    create_permissions(
        global_apps.get_app_config("ads"),
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
        ("ads", "0001_initial"),
        ("consent", "0005_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
