"""The Redis utility every app uses for raw keys.

Raw keys hold JSON (or plain strings, hashes, sets, sorted sets) so operators can read
them with redis-cli. The connection comes from django-redis's pool, so the cache, the
session engine and these helpers share one pool per process.

Helpers raise `RedisUnavailable` when Redis cannot be reached; `fallback()` turns that
into a default the caller chooses and logs once per incident. After a failure Redis is
skipped for `REDIS_RETRY_INTERVAL` seconds, so a server that hangs costs one timeout per
interval instead of one per call.

When an outage ends, the callbacks registered with `on_recover()` run once, before the
first command after it: a write that failed during the outage may have to be redone,
since Redis can come back with the data it held before (a restart from its snapshot, or
a network split that never lost anything).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.serializers.json import DjangoJSONEncoder
from django_redis import get_redis_connection
from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted
from redis.commands.core import Script

from cyberlab import metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean "Redis is not answering", as opposed to a bug in a command.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisUnavailable(RuntimeError):
    """Redis did not answer; the caller should degrade."""


class _Incident:
    """Tracks one outage so it is logged once, and skips Redis while it lasts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.down_since: float | None = None
        self.retry_at = 0.0

    def check(self) -> None:
        if self.down_since is not None and time.monotonic() < self.retry_at:
            raise RedisUnavailable("Redis is unavailable (retrying shortly)")

    def fail(self, error: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            first = self.down_since is None
            if first:
                self.down_since = now
            self.retry_at = now + settings.REDIS_RETRY_INTERVAL
        if first:
            metrics.REDIS_INCIDENTS.inc()
            logger.warning("Redis unavailable, degrading until it answers again: %s", error)

    def recover(self) -> None:
        """Ends the outage, then runs the recovery callbacks (once per outage)."""
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            outage = time.monotonic() - self.down_since
            self.down_since = None
            self.retry_at = 0.0
        logger.warning("Redis answers again after %.1f s", outage)
        # Outside the lock: a callback uses Redis itself, and may find it gone again.
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                logger.exception("Redis recovery callback %s failed", _name(callback))

    def reset(self) -> None:
        """Forgets any outage without running the recovery callbacks."""
        with self._lock:
            self.down_since = None
            self.retry_at = 0.0

    def add_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback not in self._callbacks:
                self._callbacks.append(callback)

    @property
    def is_down(self) -> bool:
        return self.down_since is not None


incident = _Incident()


def on_recover(callback: Callable[[], None]) -> Callable[[], None]:
    """Registers `callback` to run once each time an outage this process saw ends.

    It runs in the thread whose Redis call found Redis back, before that call's command;
    an exception it raises is logged, never passed to that caller. A process that saw no
    outage runs nothing, so work that must not be lost is recorded durably elsewhere.
    """
    incident.add_callback(callback)
    return callback


def _name(callback: Callable[[], None]) -> str:
    return getattr(callback, "__qualname__", repr(callback))


def get_client() -> redis.Redis:
    """The raw client on django-redis's shared connection pool."""
    client = caches["default"].client
    if isinstance(client, SafeJSONCacheClient):
        return client.raw_client()
    return get_redis_connection("default")


@contextmanager
def connection() -> Iterator[redis.Redis]:
    """Yields the client; connection failures become `RedisUnavailable`.

    Use it for commands the helpers below do not cover (pipelines, Lua scripts).
    """
    incident.check()
    try:
        client = get_client()
        if incident.is_down:
            # The retry interval has passed: probe first, so the recovery callbacks run
            # before this command can read what the outage left behind.
            client.ping()
            incident.recover()
        yield client
    except CONNECTION_ERRORS as error:
        incident.fail(error)
        raise RedisUnavailable(str(error)) from error
    incident.recover()


def fallback(func: Callable[[], T], default: T) -> T:
    """Runs `func`; when Redis is unavailable returns `default` instead."""
    try:
        return func()
    except RedisUnavailable:
        metrics.REDIS_FALLBACKS.inc()
        return default


def is_available() -> bool:
    """Pings Redis now (ignoring the retry interval): the readiness probe."""
    try:
        get_client().ping()
    except CONNECTION_ERRORS as error:
        incident.fail(error)
        return False
    incident.recover()
    return True


# --- short locks -------------------------------------------------------------
#
# Locks that save duplicate work, never ones correctness rests on: whoever holds one may
# lose it when it expires, so the work it guards must stay safe when done twice.

_RELEASE_LOCK = Script(
    None,
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
)


def lock_acquire(key: str, *, ttl: float) -> str | None:
    """A token when the lock was free (it expires after `ttl` seconds), else None."""
    token = secrets.token_hex(8)
    with connection() as client:
        acquired = client.set(key, token, nx=True, px=max(1, int(ttl * 1000)))
    return token if acquired else None


def lock_release(key: str, token: str) -> None:
    """Releases the lock if `token` still holds it (it may have expired and been retaken)."""
    with connection() as client:
        _RELEASE_LOCK(keys=[key], args=[token], client=client)


# --- JSON values --------------------------------------------------------------


def dumps(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))


def json_get(key: str, default: Any = None) -> Any:
    """The JSON value at `key`, or `default` when it is missing or unreadable."""
    with connection() as client:
        raw = client.get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        logger.error("Redis key %s does not hold JSON; ignoring it", key)
        return default


def json_set(key: str, value: Any, ttl: int | float | None = None) -> bool:
    """Stores `value` as JSON; False (and nothing stored) when it is not JSON-ready."""
    try:
        payload = dumps(value)
    except (TypeError, ValueError) as error:
        logger.error("Not caching %s: value is not JSON-ready (%s)", key, error)
        return False
    with connection() as client:
        if ttl is None:
            client.set(key, payload)
        else:
            client.set(key, payload, px=max(1, int(ttl * 1000)))
    return True


# --- deletion -----------------------------------------------------------------


def delete(*keys: str) -> int:
    if not keys:
        return 0
    with connection() as client:
        return client.unlink(*keys)


# --- Django's cache client ------------------------------------------------------


class SafeJSONCacheClient(DefaultClient):
    """django-redis client that shares the utility's outage handling.

    While an outage is known, cache calls skip Redis instead of each waiting for a
    timeout (a hung server would otherwise cost every cache call a full timeout). And
    the JSON serializer raises on anything it cannot encode; through Django's cache that
    would be a 500, so such a value is logged and simply not cached.
    """

    def get_client(self, *args, **kwargs):
        try:
            incident.check()
        except RedisUnavailable as error:
            raise ConnectionInterrupted(connection=None) from error
        return super().get_client(*args, **kwargs)

    def raw_client(self) -> redis.Redis:
        """The client without the outage check: the utility does its own."""
        return super().get_client(write=True)

    def set(self, key, value, *args, **kwargs):
        try:
            return super().set(key, value, *args, **kwargs)
        except (TypeError, ValueError) as error:
            logger.error("Not caching %s: value is not JSON-ready (%s)", key, error)
            return False

    def set_many(self, data, *args, **kwargs):
        try:
            return super().set_many(data, *args, **kwargs)
        except (TypeError, ValueError) as error:
            logger.error("Not caching %d keys: a value is not JSON-ready (%s)", len(data), error)
            return []


class IncidentLogFilter(logging.Filter):
    """Turns django-redis's log line per ignored exception into the utility's incident.

    Each failed cache call opens (or extends) the incident, which is logged once; calls
    skipped because the incident is open are not failures of their own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        if not isinstance(error.__cause__, RedisUnavailable):
            incident.fail(error.__cause__ or error)
        return False
