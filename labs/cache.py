"""The shared catalogue cache: raw JSON keys in Redis, recomputed once when they expire.

Entries hold published content only, never anything personal, so one entry serves every
learner. Staff saves delete them after commit (see labs.receivers). Two guards keep the
cache honest under load:

* single flight: on a miss, one request takes a short lock per key and recomputes;
  the others poll the key briefly, and compute themselves only if the holder died;
* a generation counter: a recompute that began before an invalidation may have read
  the old rows, so its result is stored only if no invalidation happened meanwhile.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.conf import settings
from redis.commands.core import Script

from cyberlab import redis_client
from cyberlab.redis_client import RedisUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


def courses_list_key() -> str:
    return "courses:list"


def course_key(*, slug: str) -> str:
    return f"course:{slug}"


def lab_key(*, lab_id: int) -> str:
    return f"lab:{lab_id}"


def quiz_key(*, quiz_id: int) -> str:
    return f"quiz:{quiz_id}"


def catalogue_lock_key(*, key: str) -> str:
    return f"lock:{key}"


def catalogue_generation_key() -> str:
    return "catalogue:generation"


# Returns {1, value} on a hit; {2, generation} when this caller now holds the lock;
# {0} when another caller holds it.
_GET_OR_LOCK = Script(
    None,
    b"""
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, redis.call('GET', KEYS[3]) or '0'}
end
return {0}
""",
)

# Stores the entry unless the catalogue changed since the recompute began, then
# releases the lock if it is still this caller's.
_STORE_AND_UNLOCK = Script(
    None,
    b"""
local stored = 0
if (redis.call('GET', KEYS[3]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  stored = 1
end
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return stored
""",
)

_UNLOCK = Script(
    None,
    b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
)

_HIT, _LOCKED = 1, 2


def _get_or_lock(key: str, token: str) -> tuple[int, Any]:
    lock_ms = max(1, int(settings.CATALOGUE_CACHE_LOCK_TTL * 1000))
    with redis_client.connection() as client:
        reply = _GET_OR_LOCK(
            keys=[key, catalogue_lock_key(key=key), catalogue_generation_key()],
            args=[token, lock_ms],
            client=client,
        )
    if reply[0] == _HIT:
        try:
            return _HIT, json.loads(reply[1])
        except ValueError:
            logger.error("Catalogue key %s does not hold JSON; recomputing it", key)
            redis_client.delete(key)
            return 0, None
    if reply[0] == _LOCKED:
        return _LOCKED, reply[1]
    return 0, None


def _store(key: str, value: Any, generation: bytes | str, token: str) -> None:
    try:
        payload = redis_client.dumps(value)
    except (TypeError, ValueError) as error:
        logger.error("Not caching %s: value is not JSON-ready (%s)", key, error)
        _release(key, token)
        return
    ttl_ms = max(1, int(settings.CATALOGUE_CACHE_TTL * 1000))
    with redis_client.connection() as client:
        _STORE_AND_UNLOCK(
            keys=[key, catalogue_lock_key(key=key), catalogue_generation_key()],
            args=[generation, payload, ttl_ms, token],
            client=client,
        )


def _release(key: str, token: str) -> None:
    def unlock() -> None:
        with redis_client.connection() as client:
            _UNLOCK(keys=[catalogue_lock_key(key=key)], args=[token], client=client)

    redis_client.fallback(unlock, None)


def _generation() -> bytes:
    with redis_client.connection() as client:
        return client.get(catalogue_generation_key()) or b"0"


def catalogue_cached(key: str, compute: Callable[[], T]) -> T:
    """The value at `key`, computed by `compute` on a miss by one caller at a time.

    Redis down: computed from Postgres on every call and not stored.
    """
    token = secrets.token_hex(8)
    deadline = time.monotonic() + settings.CATALOGUE_CACHE_LOCK_WAIT
    while True:
        try:
            state, payload = _get_or_lock(key, token)
        except RedisUnavailable:
            return compute()
        if state == _HIT:
            return payload
        if state == _LOCKED:
            return _compute_and_store(key, compute, payload, token)
        if time.monotonic() >= deadline:
            # The holder is taking too long or died holding the lock: compute rather
            # than keep the learner waiting; the store is still guarded by generation.
            try:
                generation = _generation()
            except RedisUnavailable:
                return compute()
            return _compute_and_store(key, compute, generation, token)
        time.sleep(settings.CATALOGUE_CACHE_POLL_INTERVAL)


def _compute_and_store(key: str, compute: Callable[[], T], generation: Any, token: str) -> T:
    try:
        value = compute()
    except BaseException:
        _release(key, token)
        raise
    redis_client.fallback(lambda: _store(key, value, generation, token), None)
    return value


def catalogue_invalidate(*, keys: Iterable[str]) -> None:
    """Deletes catalogue entries and refuses any recompute already under way."""
    keys = sorted(set(keys))
    if not keys:
        return

    def run() -> None:
        with redis_client.connection() as client:
            pipe = client.pipeline(transaction=True)
            pipe.incr(catalogue_generation_key())
            pipe.unlink(*keys)
            pipe.execute()

    try:
        run()
    except RedisUnavailable:
        # Entries written before the outage may outlive it by up to their TTL; the
        # warning lets an operator flush them if the edit cannot wait.
        logger.warning("Redis unavailable: catalogue entries %s were not invalidated", ", ".join(keys))
