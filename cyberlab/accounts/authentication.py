"""Token authentication for scripts, checked against Postgres on every request."""

from __future__ import annotations

from functools import cache

from django.db import connection
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from cyberlab.accounts.models import User


@cache
def _token_user_query() -> tuple[str, list[str], list[str]]:
    """One SELECT of the token and its user, built once per process from the models."""
    quote = connection.ops.quote_name
    token_fields = [f.attname for f in Token._meta.concrete_fields]
    user_fields = [f.attname for f in User._meta.concrete_fields]
    columns = [f"t.{quote(f.column)}" for f in Token._meta.concrete_fields]
    columns += [f"u.{quote(f.column)}" for f in User._meta.concrete_fields]
    user_column = quote(Token._meta.get_field("user").column)
    # Identifiers come from the models' metadata, quoted; the key is a parameter.
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(Token._meta.db_table)} t "  # noqa: S608
        f"JOIN {quote(User._meta.db_table)} u ON u.{quote(User._meta.pk.column)} = t.{user_column} "
        f"WHERE t.{quote(Token._meta.pk.column)} = %s"
    )
    return sql, token_fields, user_fields


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, with the same checks, in one prepared-shape query.

    A token is looked up in Postgres on every request, never cached, so a rotated or
    deleted token stops working at once on every node. The ORM spends more time
    compiling and hydrating this one lookup than Postgres spends answering it, so the
    query is built once from the models and the rows become instances with `from_db`.
    """

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        sql, token_fields, user_fields = _token_user_query()
        with connection.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        token = Token.from_db(connection.alias, token_fields, row[: len(token_fields)])
        user = User.from_db(connection.alias, user_fields, row[len(token_fields) :])
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        token.user = user
        return user, token
