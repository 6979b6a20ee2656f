"""Reads about users: the profile `auth/me/` serves, and their sessions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework.authtoken.models import Token

from cyberlab import redis_client
from cyberlab.accounts.models import User, UserSession

ProfileContributor = Callable[[User], dict]
_contributors: list[ProfileContributor] = []


def profile_contributor(func: ProfileContributor) -> ProfileContributor:
    """Registers a function adding fields to the profile (apps call it in `ready()`).

    `cyberlab` cannot import the apps built on it; an app that owns profile data
    (points live in `labs`) contributes it here instead.
    """
    if func not in _contributors:
        _contributors.append(func)
    return func


def user_profile_key(*, user_id: int) -> str:
    return f"user:profile:{user_id}"


def user_profile(*, user: User) -> dict:
    """The user's own profile, cached for `PROFILE_CACHE_TTL` and dropped when it changes."""
    key = user_profile_key(user_id=user.pk)
    cached = redis_client.fallback(lambda: redis_client.json_get(key), None)
    if cached is not None:
        return cached
    profile = {
        "id": user.pk,
        "username": user.username,
        "email": user.email,
        "display_name": user.public_name,
        "is_staff": user.is_staff,
        "points": 0,
    }
    for contribute in _contributors:
        profile.update(contribute(user))
    redis_client.fallback(lambda: redis_client.json_set(key, profile, settings.PROFILE_CACHE_TTL), False)
    return profile


def user_profile_invalidate(*, user_id: int) -> None:
    redis_client.fallback(lambda: redis_client.delete(user_profile_key(user_id=user_id)), 0)


# --- sessions ---------------------------------------------------------------------


def session_key_digest(session_key: str) -> str:
    """What a `UserSession` stores instead of the session key."""
    return hashlib.sha256(session_key.encode()).hexdigest()


def user_sessions_key(*, user_id: int) -> str:
    """The live index of a user's sessions: a set of `UserSession` ids."""
    return f"user:sessions:{user_id}"


def user_session_live_queryset(*, user: User) -> QuerySet[UserSession]:
    """The user's sessions that are neither ended nor idle past the session age.

    A session unused for `SESSION_COOKIE_AGE` has certainly expired; one that expired
    sooner (its age runs from its last save) may still be listed until then, and its
    cookie no longer signs anyone in.
    """
    idle_since = timezone.now() - timedelta(seconds=settings.SESSION_COOKIE_AGE)
    return UserSession.objects.filter(user=user, ended_at__isnull=True, last_seen_at__gte=idle_since)


def user_session_list(*, user: User, session_key: str | None) -> list[dict]:
    """The user's live sessions, most recently used first, marking the one asking."""
    current = session_key_digest(session_key) if session_key else None
    return [
        {
            "id": row.id,
            "user_agent": row.user_agent,
            "ip": row.ip,
            "created_at": row.created_at,
            "last_seen_at": row.last_seen_at,
            "current": row.key_hash == current,
        }
        for row in user_session_live_queryset(user=user).order_by("-last_seen_at", "-created_at")
    ]


def user_session_for_key(*, session_key: str) -> UserSession | None:
    """The record of the session with this key, ended or not, with its user fully loaded.

    Read from Postgres on every signed-in request (one lookup by a unique index), never
    from a copy: a revoke then holds at the next request on every node, Redis or not.
    None when there is no record.
    """
    return (
        UserSession.objects.select_related("user")
        .only("id", "user_id", "last_seen_at", "ended_at", "user")
        .filter(key_hash=session_key_digest(session_key))
        .first()
    )


# --- credentials outside a Django request (the event stream) -------------------------


def user_id_for_token(*, token: str) -> int | None:
    """The active user an API token signs in, as DRF's token authentication decides."""
    row = Token.objects.select_related("user").filter(key=token).only("user__is_active").first()
    return row.user_id if row is not None and row.user.is_active else None


def user_id_for_session_key(*, session_key: str) -> int | None:
    """The user a session cookie signs in, with the session guard's checks: a live record
    of that user, an active account, and the session's auth hash still matching."""
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return None
    record = user_session_for_key(session_key=session_key)
    if record is None or record.ended_at is not None or str(record.user_id) != str(user_id):
        return None
    user = record.user
    if not user.is_active or session.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return None
    session_hash = session.get(HASH_SESSION_KEY) or ""
    if not constant_time_compare(session_hash, user.get_session_auth_hash()):
        return None
    return user.pk
