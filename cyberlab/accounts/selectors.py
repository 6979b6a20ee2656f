"""Reads about users: the profile `auth/me/` serves."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings

from cyberlab import redis_client
from cyberlab.accounts.models import User

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
