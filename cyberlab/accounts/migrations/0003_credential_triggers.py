"""Postgres tells every process when a credential changes (see cyberlab/accounts/credentials.py).

After an update or a delete of a token, a session record or a user, a row trigger sends
`NOTIFY cyberlab_credentials, '<user id>'`; Postgres delivers it when the transaction
commits, and not at all when it rolls back. Updates that leave what signs a user in as it
was (`last_login`, a session's `last_seen_at`) send nothing.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION cyberlab_credentials_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('cyberlab_credentials', to_jsonb(OLD) ->> TG_ARGV[0]);
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

TRIGGERS = [
    # (table, user id column, column whose change alone is not a credential change)
    ("authtoken_token", "user_id", None),
    ("accounts_usersession", "user_id", "last_seen_at"),
    ("accounts_user", "id", "last_login"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION)
    for table, owner, ignored in TRIGGERS:
        changed = f"(to_jsonb(OLD) - '{ignored}') IS DISTINCT FROM (to_jsonb(NEW) - '{ignored}')" if ignored else "TRUE"
        schema_editor.execute(
            f"CREATE TRIGGER {table}_credentials_updated AFTER UPDATE ON {table} FOR EACH ROW "
            f"WHEN ({changed}) EXECUTE FUNCTION cyberlab_credentials_changed('{owner}')"
        )
        schema_editor.execute(
            f"CREATE TRIGGER {table}_credentials_deleted AFTER DELETE ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION cyberlab_credentials_changed('{owner}')"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, _, _ in TRIGGERS:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_credentials_updated ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_credentials_deleted ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS cyberlab_credentials_changed()")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_user_sessions"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [migrations.RunPython(create, drop)]
