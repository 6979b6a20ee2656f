"""Actions on accounts: registration, login, logout, tokens, password change, sessions."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate, login, logout, update_session_auth_hash
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.backends.cached_db import KEY_PREFIX as SESSION_CACHE_PREFIX
from django.core.cache import caches
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotFound, ValidationError

from cyberlab import redis_client
from cyberlab.accounts import credentials
from cyberlab.accounts.models import SessionData, SessionEndReason, User, UserSession
from cyberlab.accounts.selectors import (
    session_key_digest,
    user_profile_invalidate,
    user_session_live_queryset,
    user_sessions_key,
)
from cyberlab.accounts.session_store import USER_SESSION_ID
from cyberlab.events import services as events
from cyberlab.throttling import client_address

INVALID_CREDENTIALS = "Invalid username or password."


def _validated_password(password: str, user: User, *, field: str = "password") -> str:
    try:
        validate_password(password, user)
    except DjangoValidationError as error:
        raise ValidationError({field: list(error.messages)}) from error
    return password


@transaction.atomic
def user_register(*, request: HttpRequest, username: str, email: str, password: str) -> User:
    """Creates a learner and logs them in."""
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": ["This username is taken."]})
    user = User(username=username, email=email)
    user.set_password(_validated_password(password, user))
    user.save()
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return user


def user_authenticate(*, request: HttpRequest | None, username: str, password: str) -> User:
    """The user with these credentials; one answer for unknown user and bad password."""
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise ValidationError(INVALID_CREDENTIALS, code="invalid_credentials")
    return user


def user_login(*, request: HttpRequest, username: str, password: str) -> User:
    user = user_authenticate(request=request, username=username, password=password)
    login(request, user)
    return user


def user_logout(*, request: HttpRequest) -> None:
    logout(request)


def token_for(*, user: User) -> str:
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


def token_rotate(*, user: User) -> str | None:
    """Replaces the user's API token, if they have one; returns the new key."""
    deleted, _ = Token.objects.filter(user=user).delete()
    if not deleted:
        return None
    _credentials_changed(user_id=user.pk)
    return Token.objects.create(user=user).key


@transaction.atomic
def password_change(*, request: HttpRequest, user: User, old_password: str, new_password: str) -> str | None:
    """Changes the password, keeps this session, revokes the others, rotates the API token.

    Other sessions stop authenticating at once (Django ties each to a hash of the
    password); they are also ended for good and deleted. Returns the new token when the
    user had one.
    """
    if not user.check_password(old_password):
        raise ValidationError({"old_password": ["The current password is wrong."]})
    user.set_password(_validated_password(new_password, user, field="new_password"))
    user.save(update_fields=["password"])
    update_session_auth_hash(request, user)
    _sessions_end(
        sessions=_other_sessions(user=user, request=request), reason=SessionEndReason.PASSWORD_CHANGED
    )
    user_profile_invalidate(user_id=user.pk)
    return token_rotate(user=user)


# --- sessions -----------------------------------------------------------------------
#
# Every sign-in has a `UserSession` row (its durable record) and an entry in the live
# index `user:sessions:{user_id}`. Revoking ends the row, deletes the Django session
# from Postgres (found through `SessionData.user_session`, so Redis is not needed) and,
# after commit, from the Redis cache and the index. If Redis is down then, or comes back
# with an old copy of the session, the copy is harmless: `SessionGuardMiddleware` checks
# every signed-in request against the row in Postgres.


def user_session_record(*, request: HttpRequest, user: User) -> UserSession:
    """Records the sign-in that just happened on `request.session` (on `user_logged_in`)."""
    session = request.session
    if session.session_key is None:
        session.cycle_key()
    digest = session_key_digest(session.session_key)
    existing = UserSession.objects.filter(key_hash=digest, user=user, ended_at__isnull=True).first()
    if existing is not None:
        # Signing in again on a signed-in browser keeps its key (rotated) and its record.
        existing.last_seen_at = timezone.now()
        existing.save(update_fields=["last_seen_at"])
        row = existing
    else:
        user_agent_length = UserSession._meta.get_field("user_agent").max_length
        row = UserSession.objects.create(
            user=user,
            key_hash=digest,
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:user_agent_length],
            ip=client_address(request),
        )
    session[USER_SESSION_ID] = str(row.id)
    transaction.on_commit(lambda: _index_rebuild(user=user))
    return row


def user_session_rekey(*, old_key: str, new_key: str) -> None:
    """Follows a session whose key changed (login and password change rotate it)."""
    rows = UserSession.objects.filter(key_hash=session_key_digest(old_key), ended_at__isnull=True)
    rows.update(key_hash=session_key_digest(new_key))


def user_session_end_by_key(*, session_key: str, reason: SessionEndReason = SessionEndReason.LOGOUT) -> None:
    """Ends the record of the session with this key (sign-out, or a session flushed)."""
    rows = UserSession.objects.filter(key_hash=session_key_digest(session_key), ended_at__isnull=True)
    ended = list(rows.values_list("id", "user_id"))
    if not ended:
        return
    rows.update(ended_at=timezone.now(), end_reason=reason)
    transaction.on_commit(lambda: _index_remove(ended))
    _streams_recheck(ended)


def user_session_touch(*, session: UserSession) -> None:
    """Moves `last_seen_at` on, at most once per `SESSION_TOUCH_INTERVAL`."""
    now = timezone.now()
    if now - session.last_seen_at < timedelta(seconds=settings.SESSION_TOUCH_INTERVAL):
        return
    UserSession.objects.filter(pk=session.pk).update(last_seen_at=now)
    session.last_seen_at = now  # the record the credential cache keeps moves on too


def user_session_revoke(*, request: HttpRequest, user: User, session_id: uuid.UUID) -> None:
    """Ends one of the user's sessions; revoking the one asking signs it out."""
    row = user_session_live_queryset(user=user).filter(pk=session_id).first()
    if row is None:
        raise NotFound("No such session.", code="session_not_found")
    _sessions_end(sessions=UserSession.objects.filter(pk=row.pk), reason=SessionEndReason.REVOKED)
    current_key = request.session.session_key
    if current_key and row.key_hash == session_key_digest(current_key):
        logout(request)


@transaction.atomic
def user_sessions_revoke_others(*, request: HttpRequest, user: User) -> tuple[int, str | None]:
    """Ends every session of the user but this one and rotates the API token.

    Returns how many sessions ended and the new token (None when the user had none).
    """
    ended = _sessions_end(
        sessions=_other_sessions(user=user, request=request), reason=SessionEndReason.OTHERS_REVOKED
    )
    return ended, token_rotate(user=user)


@transaction.atomic
def user_sessions_revoke_all(*, user: User) -> tuple[int, str | None]:
    """Staff: ends every session of the user and rotates their API token."""
    ended = _sessions_end(sessions=user.user_sessions.all(), reason=SessionEndReason.STAFF)
    return ended, token_rotate(user=user)


def _other_sessions(*, user: User, request: HttpRequest) -> QuerySet[UserSession]:
    sessions = user.user_sessions.all()
    current_key = request.session.session_key
    if current_key:
        sessions = sessions.exclude(key_hash=session_key_digest(current_key))
    return sessions


@transaction.atomic
def _sessions_end(*, sessions: QuerySet[UserSession], reason: SessionEndReason) -> int:
    live = sessions.filter(ended_at__isnull=True)
    ended = list(live.values_list("id", "user_id"))
    if not ended:
        return 0
    ids = [session_id for session_id, _ in ended]
    UserSession.objects.filter(pk__in=ids, ended_at__isnull=True).update(
        ended_at=timezone.now(), end_reason=reason
    )
    stored = SessionData.objects.filter(user_session_id__in=ids)
    session_keys = list(stored.values_list("session_key", flat=True))
    stored.delete()

    def forget_live_copies() -> None:
        # The session cache ignores Redis errors: a copy it could not delete now is
        # refused by the session guard whenever it shows up.
        caches[settings.SESSION_CACHE_ALIAS].delete_many([SESSION_CACHE_PREFIX + key for key in session_keys])
        _index_remove(ended)

    transaction.on_commit(forget_live_copies)
    _streams_recheck(ended)
    return len(ended)


def _streams_recheck(ended: list[tuple[uuid.UUID, int]]) -> None:
    for user_id in {user_id for _, user_id in ended}:
        _credentials_changed(user_id=user_id)


def _credentials_changed(*, user_id: int) -> None:
    # This process forgets its copies now; Postgres tells the others at commit. Open
    # event streams are checked again within a second, on whichever node serves them.
    credentials.cache.forget(user_id=user_id)
    events.streams_recheck(user_id=user_id)


def _index_rebuild(*, user: User) -> None:
    """Rewrites the user's live index from Postgres, healing whatever an outage left."""
    ids = [str(pk) for pk in user_session_live_queryset(user=user).values_list("id", flat=True)]
    key = user_sessions_key(user_id=user.pk)

    def write() -> None:
        with redis_client.connection() as client:
            pipe = client.pipeline(transaction=True)
            pipe.delete(key)
            if ids:
                pipe.sadd(key, *ids)
                pipe.expire(key, settings.SESSION_COOKIE_AGE)
            pipe.execute()

    redis_client.fallback(write, None)


def _index_remove(ended: list[tuple[uuid.UUID, int]]) -> None:
    by_user: dict[int, list[str]] = {}
    for session_id, user_id in ended:
        by_user.setdefault(user_id, []).append(str(session_id))

    def write() -> None:
        with redis_client.connection() as client:
            pipe = client.pipeline(transaction=False)
            for user_id, ids in by_user.items():
                pipe.srem(user_sessions_key(user_id=user_id), *ids)
            pipe.execute()

    redis_client.fallback(write, None)
