"""Reads about users: the profile `auth/me/` serves, and their sessions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

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


@cache
def _user_session_query() -> tuple[str, list[str], list[str]]:
    """One SELECT of a session's record and its user, built once per process from the models."""
    quote = connection.ops.quote_name
    # What the guard reads of the record, in the model's field order as `from_db` needs.
    session_fields = [
        f
        for f in UserSession._meta.concrete_fields
        if f.attname in {"id", "user_id", "last_seen_at", "ended_at"}
    ]
    user_fields = User._meta.concrete_fields
    columns = [f"s.{quote(f.column)}" for f in session_fields]
    columns += [f"u.{quote(f.column)}" for f in user_fields]
    user_column = quote(UserSession._meta.get_field("user").column)
    key_column = quote(UserSession._meta.get_field("key_hash").column)
    # Identifiers come from the models' metadata, quoted; the digest is a parameter.
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(UserSession._meta.db_table)} s "  # noqa: S608
        f"JOIN {quote(User._meta.db_table)} u ON u.{quote(User._meta.pk.column)} = s.{user_column} "
        f"WHERE s.{key_column} = %s"
    )
    return sql, [f.attname for f in session_fields], [f.attname for f in user_fields]


def user_session_for_key(*, session_key: str) -> UserSession | None:
    """The record of the session with this key, ended or not, with its user fully loaded.

    Read on every signed-in request, so it is one query built once from the models and
    hydrated with `from_db`: the ORM spends more compiling and building this lookup than
    Postgres spends answering it. None when there is no record.
    """
    sql, session_fields, user_fields = _user_session_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, [session_key_digest(session_key)])
        row = cursor.fetchone()
    if row is None:
        return None
    record = UserSession.from_db(connection.alias, session_fields, row[: len(session_fields)])
    record.user = User.from_db(connection.alias, user_fields, row[len(session_fields) :])
    return record
