"""Staff roles as groups: authors edit content, instructors read progress, operators run machines.

Permissions are created by a post_migrate hook, after every migration has run; on a
fresh database they do not exist yet, so they are created here first. Operators get
every machines permission that exists at this point; the machines app grants its own
when it adds models.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

AUTHORS = "authors"
INSTRUCTORS = "instructors"
OPERATORS = "operators"

CONTENT = ["course", "lab", "machinetemplate", "flag", "quiz", "question", "choice"]
PROGRESS = ["solve", "submission", "quizattempt", "enrollment", "cheatingsignal", "issuedflag"]


def _permissions(apps, app_label, models, actions):
    Permission = apps.get_model("auth", "Permission")
    codenames = [f"{action}_{model}" for model in models for action in actions]
    return list(Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))


def create_groups(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    authors, _ = Group.objects.get_or_create(name=AUTHORS)
    authors.permissions.add(
        *_permissions(apps, "labs", CONTENT, ["add", "change", "delete", "view"]),
        *_permissions(apps, "labs", ["enrollment"], ["view"]),
    )

    instructors, _ = Group.objects.get_or_create(name=INSTRUCTORS)
    instructors.permissions.add(
        *_permissions(apps, "labs", CONTENT + PROGRESS, ["view"]),
        *_permissions(apps, "accounts", ["user"], ["view"]),
    )

    operators, _ = Group.objects.get_or_create(name=OPERATORS)
    operators.permissions.add(
        *_permissions(apps, "labs", ["lab", "machinetemplate"], ["view"]),
        *Permission.objects.filter(content_type__app_label="vms"),
    )


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[AUTHORS, INSTRUCTORS, OPERATORS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labs", "0001_initial"),
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
