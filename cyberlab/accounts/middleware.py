"""The session guard: a signed-in session counts only while its record is live."""

from __future__ import annotations

import copy

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare

from cyberlab.accounts import credentials, selectors, services
from cyberlab.accounts.models import User


class SessionGuardMiddleware:
    """Signs out a session whose `UserSession` is ended, missing or another user's.

    The record is read from Postgres (one lookup by a unique index, kept in process while
    Postgres reports no change: `credentials`), never trusted from a copy in Redis: Redis
    may come back from an outage holding an old copy of a revoked session, and no copy
    there can prove it was not revoked meanwhile. The same lookup
    loads the user, who becomes
    `request.user` after the checks `django.contrib.auth.get_user` makes, so a signed-in
    request costs one query at most; and it moves `last_seen_at`, which is written at
    most once per `SESSION_TOUCH_INTERVAL`.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and session.session_key is not None:
            user_id = session.get(SESSION_KEY)
            if user_id is not None:
                self._check(request, user_id)
        return self.get_response(request)

    @staticmethod
    def _check(request: HttpRequest, user_id: str) -> None:
        key = request.session.session_key
        record = credentials.cache.get(
            ("session", key),
            lambda: selectors.user_session_for_key(session_key=key),
            user_id=lambda found: found.user_id,
        )
        # Django keeps the user's primary key in the session as a string.
        if record is None or record.ended_at is not None or str(record.user_id) != str(user_id):
            request.session.flush()
            request.user = AnonymousUser()
            return
        path = request.session.get(BACKEND_SESSION_KEY)
        if path not in settings.AUTHENTICATION_BACKENDS:
            # As `get_user`: a backend no longer configured signs nobody in, session kept.
            request.user = AnonymousUser()
            return
        backend = load_backend(path)
        if type(backend).get_user is ModelBackend.get_user:
            # The user loaded with the record is the one this backend's `get_user` returns.
            request.user = _verified_user(request, backend, copy.copy(record.user))
            if not request.user.is_authenticated:
                return
        # Otherwise the backend loads users its own way, and AuthenticationMiddleware's
        # lazy `request.user` asks it, as Django does.
        services.user_session_touch(session=record)


def _verified_user(request: HttpRequest, backend: ModelBackend, user: User) -> User | AnonymousUser:
    """`django.contrib.auth.get_user`'s checks on a user loaded with the session's record.

    An inactive user is refused and the session kept; a session auth hash that matches
    neither the current secret nor a fallback (the password changed) flushes the
    session; one matching a fallback secret is re-signed under a new key.
    """
    if not backend.user_can_authenticate(user):
        return AnonymousUser()
    session_hash = request.session.get(HASH_SESSION_KEY)
    if not session_hash:
        request.session.flush()
        return AnonymousUser()
    session_auth_hash = user.get_session_auth_hash()
    if constant_time_compare(session_hash, session_auth_hash):
        return user
    if any(
        constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash()
    ):
        request.session.cycle_key()
        request.session[HASH_SESSION_KEY] = session_auth_hash
        return user
    request.session.flush()
    return AnonymousUser()
