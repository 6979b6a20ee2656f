"""Operators run machines: they see the live machines and the history, and may stop them.

Permissions are normally created after all migrations ran; on a fresh database they do
not exist yet, so they are created here first.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

OPERATORS = "operators"
CODENAMES = ["view_vmsession", "stop_vmsession", "view_livemachine"]


def grant(apps, schema_editor):
    app_config = apps.get_app_config("vms")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    operators, _ = Group.objects.get_or_create(name=OPERATORS)
    operators.permissions.add(*Permission.objects.filter(content_type__app_label="vms", codename__in=CODENAMES))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name=OPERATORS):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="vms", codename__in=CODENAMES))


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
