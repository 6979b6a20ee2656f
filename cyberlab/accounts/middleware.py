"""The session guard: a signed-in session counts only while its record is live."""

from __future__ import annotations

from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

from cyberlab.accounts import selectors, services


class SessionGuardMiddleware:
    """Signs out a session whose `UserSession` is ended, missing or another user's.

    The check reads Postgres on every signed-in request (one lookup by a unique index)
    rather than trusting a cached "still valid" bit: Redis may come back from an outage
    holding an old copy of a revoked session, and no copy in Redis, the session's or a
    bit's, can prove it was not revoked meanwhile. The same lookup moves `last_seen_at`,
    which is written at most once per `SESSION_TOUCH_INTERVAL`.
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
        record = selectors.user_session_for_key(session_key=request.session.session_key)
        if record is None or record.ended_at is not None or str(record.user_id) != str(user_id):
            request.session.flush()
            request.user = AnonymousUser()
            return
        services.user_session_touch(session=record)
