"""Staff permissions and the three staff groups, with least privilege.

- Policy staff: purposes, metadata categories, policy versions, jurisdictions and their
  rules, rollouts (with the controls) and the aggregate consent statistics. No
  permission on subjects, consent events or states: they never see the data of an
  individual person.
- Support: look up a subject, read their consent history and current state, and
  record a staff consent change (which requires a reason and becomes a `staff` event).
- Billing ops: the group exists, with no consent permissions at all. Plans, rate
  cards and invoices are billing models; billing's own migration gives this group
  their permissions once the billing app has them.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

POLICY_STAFF = "Policy staff"
SUPPORT = "Support"
BILLING_OPS = "Billing ops"

GROUP_PERMISSIONS: dict[str, list[str]] = {
    POLICY_STAFF: [
        "view_metadatacategory",
        "add_metadatacategory",
        "change_metadatacategory",
        "view_purpose",
        "add_purpose",
        "change_purpose",
        "view_policyversion",
        "add_policyversion",
        "change_policyversion",
        "view_jurisdiction",
        "add_jurisdiction",
        "change_jurisdiction",
        "view_jurisdictionrule",
        "add_jurisdictionrule",
        "change_jurisdictionrule",
        "view_rollout",
        "add_rollout",
        "change_rollout",
        "control_rollout",
        "view_rolloutphase",
        "add_rolloutphase",
        "change_rolloutphase",
        "delete_rolloutphase",  # only phases of a rollout that has not started (admin)
        "view_rolloutaction",
        "view_consent_statistics",
    ],
    SUPPORT: [
        "view_subject",
        "record_staff_change",
        "view_consentevent",
        "view_consentstate",
    ],
    BILLING_OPS: [],
}


def create_groups(apps, schema_editor):
    # Permissions are normally created after `migrate` (post_migrate); create them
    # now so that the ones declared in this migration exist when groups get them.
    create_permissions(
        global_apps.get_app_config("consent"),
        verbosity=0,
        using=schema_editor.connection.alias,
        apps=apps,
    )
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUP_PERMISSIONS.items():
        permissions = list(
            Permission.objects.filter(content_type__app_label="consent", codename__in=codenames)
        )
        missing = set(codenames) - {p.codename for p in permissions}
        if missing:
            raise RuntimeError(f"Unknown permissions for {name}: {sorted(missing)}")
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions)


def remove_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name__in=GROUP_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0004_rollout_engine_and_webhooks"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="consentstate",
            options={"permissions": [("view_consent_statistics", "Can view consent statistics")]},
        ),
        migrations.AlterModelOptions(
            name="rollout",
            options={
                "permissions": [
                    ("control_rollout", "Can start, pause, resume, cancel and roll back rollouts")
                ]
            },
        ),
        migrations.AlterModelOptions(
            name="subject",
            options={"permissions": [("record_staff_change", "Can record a staff consent change")]},
        ),
        migrations.RunPython(create_groups, remove_groups),
    ]
