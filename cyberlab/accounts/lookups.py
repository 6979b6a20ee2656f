"""Lookups on every signed-in request: a row and its user in one prebuilt query.

The ORM spends more time compiling and hydrating such a two-table lookup than Postgres
spends answering it, so the query is built once per process from the models' metadata
and its row becomes instances with `from_db`.

The row may be kept in the process's near cache (cyberlab.nearcache), filled from
Postgres only, never from a copy in Redis. Every write to a user, their token or their
session records announces the change through Redis after it commits (the signals in
`cyberlab.accounts.signals`, and `announce_change` after queryset updates), and every
node drops its copy before serving another request: a revoked session or rotated token
stops working at once on every node. When a node loses Redis it drops every copy and
reads Postgres until Redis answers again, so a revoke made during an outage holds too.
"""

from __future__ import annotations

from functools import cache

from django.db import connection, transaction
from django.db.models import Model
from django.db.models.base import ModelState

from cyberlab import nearcache
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


def auth_dep(user_id: int) -> str:
    """The near-cache name every cached lookup of this user's credentials depends on."""
    return f"auth:user:{user_id}"


def row_with_user(
    model: type[Model],
    *,
    lookup: str,
    value: object,
    fields: tuple[str, ...] | None = None,
    near_cache_as: str | None = None,
) -> Model | None:
    """The `model` row whose `lookup` equals `value`, its `user` fully loaded; None if none.

    `fields` limits what is read of the row itself (all of it by default). With
    `near_cache_as`, the loaded instances are kept in the process's near cache under that
    name until `announce_change()` names their user (cyberlab.nearcache), and each call
    returns copies of them; a missing row is never kept.
    """
    sql, own_fields, user_fields = _query(model, fields, lookup)

    def load() -> Model | None:
        with connection.cursor() as cursor:
            cursor.execute(sql, [value])
            row = cursor.fetchone()
        if row is None:
            return None
        instance = model.from_db(connection.alias, own_fields, row[: len(own_fields)])
        instance.user = User.from_db(connection.alias, user_fields, row[len(own_fields) :])
        return instance

    if near_cache_as is None:
        return load()
    found = nearcache.read(
        near_cache_as,
        load,
        deps=lambda instance: [auth_dep(instance.user_id)],
        keep=lambda instance: instance is not None,
    )
    if found is None:
        return None
    # The cached instances are shared; a request gets copies of its own.
    copy = _copy(found)
    copy._state.fields_cache["user"] = _copy(found.user)
    return copy


def _copy(instance: Model) -> Model:
    """A new instance with the same field values, as loaded (post_init ran for the
    original): a fifth of the cost of building it from the row again. The values are
    strings, numbers and dates, which are never changed in place."""
    cls = type(instance)
    copy = cls.__new__(cls)
    copy.__dict__.update(instance.__dict__)
    state = copy._state = ModelState()
    state.db = instance._state.db
    state.adding = False
    return copy


def announce_change(*user_ids: int) -> None:
    """Drops every process's cached credentials of these users, after the transaction commits."""
    names = [auth_dep(user_id) for user_id in user_ids]
    if names:
        transaction.on_commit(lambda: nearcache.invalidate(*names))
