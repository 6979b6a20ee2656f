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
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis import get_redis_connection
from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted
from redis.commands.core import Script

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


# --- the raw protocol, for the calls made on every request -------------------------


class IncompleteReply(Exception):
    """The buffer ends inside a reply."""


def pack(*args: str | bytes | int | float) -> bytes:
    """One command in the Redis protocol."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif not isinstance(arg, bytes):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def parse_reply(buffer: bytearray, position: int = 0) -> tuple[Any, int]:
    """One RESP2 reply from `buffer` at `position`: (reply, position after it).

    Bulk strings are bytes, integers int, an error reply a `redis.ResponseError` (returned,
    not raised, so the caller consumes it first); raises IncompleteReply when the buffer
    ends inside the reply.
    """
    end = buffer.find(b"\r\n", position)
    if end < 0:
        raise IncompleteReply
    kind, head, position = buffer[position], bytes(buffer[position + 1 : end]), end + 2
    if kind == 36:  # $
        size = int(head)
        if size < 0:
            return None, position
        if len(buffer) < position + size + 2:
            raise IncompleteReply
        return bytes(buffer[position : position + size]), position + size + 2
    if kind == 42:  # *
        size = int(head)
        if size < 0:
            return None, position
        items = []
        for _ in range(size):
            item, position = parse_reply(buffer, position)
            items.append(item)
        return items, position
    if kind == 58:  # :
        return int(head), position
    if kind == 45:  # -
        message = head.decode(errors="replace")
        error = redis.exceptions.NoScriptError if message.startswith("NOSCRIPT") else redis.ResponseError
        return error(message), position
    return head, position


class RawConnection:
    """A connection with this process's Redis settings, spoken to in RESP2 directly.

    For the few calls made on every request (the rate limit) and for the near cache's
    tracking connection: the client library's command layers (packing, pool bookkeeping,
    parser objects) cost more than twice the socket work. The library still opens the
    connection: address, password, database, TLS and timeouts are the pool's. Failures
    raise the library's connection errors (`CONNECTION_ERRORS`); the owner closes the
    connection and opens another.
    """

    def __init__(self) -> None:
        pool = get_client().connection_pool
        options = {k: v for k, v in pool.connection_kwargs.items() if not k.startswith("maint_notifications")}
        self._connection = pool.connection_class(**{**options, "protocol": 2})
        self._connection.connect()
        self._sock = self._connection._sock
        self._buffer = bytearray()
        self.pid = os.getpid()
        self._settings = _settings_generation

    def is_current(self) -> bool:
        """False in a forked child (the socket is the parent's) or once the Redis
        settings changed (tests point the cache elsewhere)."""
        return self.pid == os.getpid() and self._settings == _settings_generation

    def call(self, command: bytes) -> Any:
        """Sends a packed command and waits (up to the socket timeout) for its reply."""
        self._sock.sendall(command)
        while True:
            replies = self._replies()
            if replies:
                return _raised(replies[0])
            self._receive()

    def poll(self) -> list[Any]:
        """Every complete reply received so far, without waiting (after `nonblocking()`)."""
        while True:
            try:
                self._receive()
            except BlockingIOError:
                break
        return self._replies(limit=None)

    def nonblocking(self) -> None:
        self._sock.setblocking(False)

    def close(self) -> None:
        if self.pid == os.getpid():  # in a forked child the socket is the parent's
            self._connection.disconnect()

    def _receive(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise redis.ConnectionError("Connection closed by the server.")
        self._buffer += chunk

    def _replies(self, limit: int | None = 1) -> list[Any]:
        replies: list[Any] = []
        position = 0
        while position < len(self._buffer) and (limit is None or len(replies) < limit):
            try:
                reply, position = parse_reply(self._buffer, position)
            except IncompleteReply:
                break
            replies.append(reply)
        del self._buffer[:position]
        return replies


_settings_generation = 0


@receiver(setting_changed)
def _redis_settings_changed(*, setting: str, **kwargs) -> None:
    global _settings_generation
    if setting in {"CACHES", "REDIS_URL"}:
        _settings_generation += 1


def _raised(reply: Any) -> Any:
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


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


# --- hashes -------------------------------------------------------------------


def hash_get(key: str) -> dict[str, str]:
    """Every field of the hash at `key` ({} when missing)."""
    with connection() as client:
        raw = client.hgetall(key)
    return {_text(field): _text(value) for field, value in raw.items()}


def hash_get_field(key: str, field: str) -> str | None:
    with connection() as client:
        value = client.hget(key, field)
    return None if value is None else _text(value)


def hash_set(key: str, mapping: Mapping[str, Any], ttl: int | float | None = None) -> None:
    """Sets fields (non-string values stored as JSON), optionally (re)setting the TTL."""
    fields = {name: value if isinstance(value, str) else dumps(value) for name, value in mapping.items()}
    with connection() as client:
        pipe = client.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        if ttl is not None:
            pipe.pexpire(key, max(1, int(ttl * 1000)))
        pipe.execute()


def hash_delete(key: str, *fields: str) -> int:
    """Deletes fields of the hash, or the whole key when no field is named."""
    with connection() as client:
        return client.hdel(key, *fields) if fields else client.delete(key)


# --- lifetimes and deletion ----------------------------------------------------


def ttl(key: str) -> float | None:
    """Seconds left; None when the key is missing or has no expiry."""
    with connection() as client:
        millis = client.pttl(key)
    return None if millis < 0 else millis / 1000


def refresh_ttl(key: str, ttl: int | float) -> bool:
    """Sets the key's time to live; False when the key does not exist."""
    with connection() as client:
        return bool(client.pexpire(key, max(1, int(ttl * 1000))))


def delete(*keys: str) -> int:
    if not keys:
        return 0
    with connection() as client:
        return client.unlink(*keys)


def delete_pattern(pattern: str, batch: int = 500) -> int:
    """Deletes every key matching `pattern`, walking with SCAN (never KEYS)."""
    deleted = 0
    with connection() as client:
        chunk: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=batch):
            chunk.append(key)
            if len(chunk) >= batch:
                deleted += client.unlink(*chunk)
                chunk = []
        if chunk:
            deleted += client.unlink(*chunk)
    return deleted


def scan_keys(pattern: str, batch: int = 500) -> list[str]:
    with connection() as client:
        return sorted(_text(key) for key in client.scan_iter(match=pattern, count=batch))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
