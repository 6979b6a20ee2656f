"""Token authentication for scripts and the SPA's API clients."""

from __future__ import annotations

import hashlib

from django.conf import settings
from drf_spectacular.authentication import SessionScheme
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from cyberlab.accounts.lookups import row_with_user
from cyberlab.accounts.models import User


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication, skipped at once for a request without a session cookie.

    Without the cookie there is no session to sign anyone in; DRF would still load the
    session and an anonymous user to find that out, on every token request.
    """

    def authenticate(self, request):
        if settings.SESSION_COOKIE_NAME not in request._request.COOKIES:
            return None
        return super().authenticate(request)


class SessionAuthenticationScheme(SessionScheme):
    """The schema describes it as DRF's: the session cookie."""

    target_class = SessionAuthentication


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, with the same checks, in one prebuilt query.

    The row is kept in the near cache until its user's credentials change: a rotated or
    deleted token, or a changed user, is dropped from every node's memory before the
    change is answered (cyberlab.accounts.lookups).
    """

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        digest = hashlib.sha256(key.encode()).hexdigest()
        token = row_with_user(Token, lookup="key", value=key, near_cache_as=f"auth:token:{digest}")
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token
