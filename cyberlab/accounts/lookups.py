"""Lookups on every signed-in request: a row and its user in one prebuilt query.

The ORM spends more time compiling and hydrating such a two-table lookup than Postgres
spends answering it, so the query is built once per process from the models' metadata
and its row becomes instances with `from_db`. It still reads Postgres every time: a
revoked session or rotated token stops working at once on every node.
"""

from __future__ import annotations

from functools import cache

from django.db import connection
from django.db.models import Model

from cyberlab.accounts.models import User


@cache
def _query(
    model: type[Model], fields: tuple[str, ...] | None, lookup: str
) -> tuple[str, list[str], list[str]]:
    quote = connection.ops.quote_name
    own = [f for f in model._meta.concrete_fields if fields is None or f.attname in fields]
    users = User._meta.concrete_fields
    columns = [f"r.{quote(f.column)}" for f in own] + [f"u.{quote(f.column)}" for f in users]
    user_column = quote(model._meta.get_field("user").column)
    lookup_column = quote(model._meta.get_field(lookup).column)
    # Identifiers come from the models' metadata, quoted; the value is a parameter.
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(model._meta.db_table)} r "  # noqa: S608
        f"JOIN {quote(User._meta.db_table)} u ON u.{quote(User._meta.pk.column)} = r.{user_column} "
        f"WHERE r.{lookup_column} = %s"
    )
    return sql, [f.attname for f in own], [f.attname for f in users]


def row_with_user(
    model: type[Model], *, lookup: str, value: object, fields: tuple[str, ...] | None = None
) -> Model | None:
    """The `model` row whose `lookup` equals `value`, its `user` fully loaded; None if none.

    `fields` limits what is read of the row itself (all of it by default).
    """
    sql, own_fields, user_fields = _query(model, fields, lookup)
    with connection.cursor() as cursor:
        cursor.execute(sql, [value])
        row = cursor.fetchone()
    if row is None:
        return None
    instance = model.from_db(connection.alias, own_fields, row[: len(own_fields)])
    instance.user = User.from_db(connection.alias, user_fields, row[len(own_fields) :])
    return instance
