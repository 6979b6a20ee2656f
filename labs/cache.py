"""The shared catalogue cache: raw JSON keys in Redis, recomputed once when they expire.

Entries hold published content only, never anything personal, so one entry serves every
learner. Staff saves delete them after commit (see labs.receivers). Two guards keep the
cache honest under load:

* single flight: on a miss, one request takes a short lock per key and recomputes;
  the others poll the key briefly, and compute themselves only if the holder died;
* a generation counter: a recompute that began before an invalidation may have read
  the old rows, so its result is stored only if no invalidation happened meanwhile.

An invalidation that fails because Redis is unavailable is remembered in Postgres (a
`PendingCatalogueInvalidation` row with its keys), not just logged: Redis may come back
with the entries it held, which would otherwise be served until their TTL. The keys are
dropped, and the row deleted, by `catalogue_repair()`. It runs when a process sees Redis
answer again (`redis_client.on_recover`: before the command that found it back, or after
the commit of the transaction that command ran in), and from beat every
`CATALOGUE_REPAIR_INTERVAL` for processes that never saw the outage. So a cache hit
still costs no Postgres query; the price is that a process which saw no outage may serve
an old entry until the first repair after Redis returns (at most one beat interval). A
generation kept in Postgres and compared on every read would close that window, but
would cost every cached read a query, which the catalogue promises not to make.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from redis.commands.core import Script

from cyberlab import redis_client
from cyberlab.redis_client import RedisUnavailable
from labs.models import PendingCatalogueInvalidation

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

    A hit is one round trip: `_GET_OR_LOCK` reads the entry, or takes the lock when it
    is missing. Redis down: computed from Postgres on every call and not stored.
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
    """Deletes catalogue entries and refuses any recompute already under way.

    Redis down: the keys are recorded in Postgres and dropped when it answers again.
    """
    keys = sorted(set(keys))
    if not keys:
        return
    try:
        _drop(keys)
    except RedisUnavailable:
        PendingCatalogueInvalidation.objects.create(keys=keys)
        logger.warning(
            "Redis unavailable: catalogue entries %s will be dropped when it answers again", ", ".join(keys)
        )


def _drop(keys: list[str]) -> None:
    with redis_client.connection() as client:
        pipe = client.pipeline(transaction=True)
        pipe.incr(catalogue_generation_key())
        pipe.unlink(*keys)
        pipe.execute()


def catalogue_repair() -> int:
    """Drops the entries of invalidations that failed while Redis was down.

    Returns how many recorded invalidations it applied; raises RedisUnavailable (and
    keeps them) when Redis is still unavailable.
    """
    pending = list(PendingCatalogueInvalidation.objects.values_list("pk", "keys"))
    if not pending:
        return 0
    keys = sorted({str(key) for _, recorded in pending for key in recorded})
    if keys:
        _drop(keys)
    # Only the rows read above: one recorded meanwhile waits for the next repair.
    PendingCatalogueInvalidation.objects.filter(pk__in=[pk for pk, _ in pending]).delete()
    logger.warning(
        "Dropped %d catalogue entries left from %d edits made while Redis was down", len(keys), len(pending)
    )
    return len(pending)


def catalogue_repair_on_recovery() -> None:
    """The Redis recovery callback: repairs after the transaction the call runs in.

    The first Redis call after an outage may be made inside someone else's transaction;
    the repair waits for it to commit (and leaves the rows for the beat task if it rolls
    back), and a failure is logged rather than raised into that caller.
    """
    transaction.on_commit(lambda: redis_client.fallback(catalogue_repair, 0), robust=True)
