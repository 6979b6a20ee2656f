"""Token authentication for scripts, checked against Postgres on every request."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from cyberlab.accounts.lookups import row_with_user
from cyberlab.accounts.models import User


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, with the same checks, in one prebuilt query.

    A token is looked up in Postgres on every request, never cached, so a rotated or
    deleted token stops working at once on every node (cyberlab.accounts.lookups).
    """

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        token = row_with_user(Token, lookup="key", value=key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token
