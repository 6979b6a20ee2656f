"""A machine session's change reaches the gateway's cache the way a credential's does.

After an update that changes what the gateway decides by (status, expiry, name, where the
machine is) or a delete, `NOTIFY cyberlab_credentials, '<user id>'` (the function of
accounts migration 0003); see cyberlab/accounts/credentials.py.
"""

from django.db import migrations

COLUMNS = ("status", "expires_at", "gateway_name", "connection")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    old = ", ".join(f"OLD.{column}::text" for column in COLUMNS)
    new = ", ".join(f"NEW.{column}::text" for column in COLUMNS)
    schema_editor.execute(
        "CREATE TRIGGER vms_vmsession_gateway_updated AFTER UPDATE ON vms_vmsession FOR EACH ROW "
        f"WHEN (({old}) IS DISTINCT FROM ({new})) EXECUTE FUNCTION cyberlab_credentials_changed('user_id')"
    )
    schema_editor.execute(
        "CREATE TRIGGER vms_vmsession_gateway_deleted AFTER DELETE ON vms_vmsession FOR EACH ROW "
        "EXECUTE FUNCTION cyberlab_credentials_changed('user_id')"
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP TRIGGER IF EXISTS vms_vmsession_gateway_updated ON vms_vmsession")
    schema_editor.execute("DROP TRIGGER IF EXISTS vms_vmsession_gateway_deleted ON vms_vmsession")


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0004_gateway_name"),
        ("accounts", "0003_credential_triggers"),
    ]

    operations = [migrations.RunPython(create, drop)]
