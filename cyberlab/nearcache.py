"""The near cache: hot reads served from process memory, kept coherent by Redis itself.

A read that is the same for many requests (the course list, a leaderboard page, a
machine's state, the row behind a token) costs a Redis or Postgres round trip, which on
a fast endpoint is most of its time. The near cache keeps such answers in the process,
and Redis tells every process when one is no longer true:

* each process opens one extra connection, asks Redis to report every change to the key
  prefixes apps registered with `track_prefix()` (`CLIENT TRACKING ... BCAST`, redirected
  to itself) and subscribes to those reports; `invalidate()` announces changes Redis
  cannot see (an answer built from Postgres) by writing a marker key under `nearcache:`;
* before a near-cache read the process drains that connection without waiting, so an
  entry is never served after its change reached this process. Redis writes a
  broadcast report to the tracking connections before it writes the writer's reply
  (both leave in the same pass of its event loop), so the writer's next request, on
  any node, sees the change. Within one HTTP request the connection is drained once,
  at its first read: a change reported later in that request is concurrent with it,
  and the request's reads then all answer as of its start;
* a read that raced a change is not stored: a ticket taken before the load must still be
  newer than every report about the entry's keys when it comes back.

Entries also expire after `NEAR_CACHE_TTL` whatever happens. When the
tracking connection is lost (Redis restarted, flushed, or hung) every entry is dropped
and reads go to Redis until it answers again; so is everything when the process sees a
Redis outage end, since a change may have gone unreported meanwhile. One process's entries
never serve another process (the connection is reopened after a fork).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.core.signals import request_finished, request_started

from cyberlab import redis_client

logger = logging.getLogger(__name__)

T = TypeVar("T")

# `invalidate(name)` writes the key `nearcache:{name}`: its report reaches every process
# like any other, and in the same order relative to the writer's reply.
NAMES_PREFIX = "nearcache:"
_TRACKING_CHANNEL = b"__redis__:invalidate"
# How many per-key change records are kept for tickets before they are summarised.
_TOUCHED_LIMIT = 10_000

_prefixes: set[str] = {NAMES_PREFIX}


def track_prefix(*prefixes: str) -> None:
    """Asks for changes to keys under these prefixes to be reported (apps call it in
    `ready()`). Redis refuses a prefix that starts another one."""
    if not set(prefixes) <= _prefixes:
        _prefixes.update(prefixes)
        near_cache.reconnect()


def connection_name() -> str:
    """This process's tracking connection as `CLIENT LIST` names it."""
    return f"nearcache-{os.getpid()}"


class _Entry:
    __slots__ = ("deps", "expires_at", "value")

    def __init__(self, value: Any, deps: tuple[str, ...], expires_at: float) -> None:
        self.value = value
        self.deps = deps
        self.expires_at = expires_at


class NearCache:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._by_dep: dict[str, set[str]] = {}
        # Every report bumps `_seq`; `_touched` says when each key was last reported, and
        # a fill whose ticket is older than `_floor` is refused (after a flush).
        self._seq = 0
        self._floor = 0
        self._touched: dict[str, int] = {}
        self._connection: redis_client.RawConnection | None = None
        self._failing = False
        self._retry_at = 0.0
        self._request = threading.local()

    # --- reads ---------------------------------------------------------------

    def read(
        self,
        name: str,
        load: Callable[[], T],
        *,
        deps: Iterable[str] | Callable[[T], Iterable[str]],
        keep: Callable[[T], bool] | None = None,
    ) -> T:
        """The entry `name`, or what `load()` returns, kept until one of `deps` changes.

        `deps` are the Redis keys (or `invalidate()` names) the answer depends on, or a
        function of the loaded value giving them. `keep(value)` False: not stored (an
        answer from a fallback). The value is shared: callers must not change it.
        """
        if not settings.NEAR_CACHE_ENABLED:
            return load()
        with self._lock:
            tracking = self._sync_for_read()
            if tracking:
                entry = self._entries.get(name)
                if entry is not None:
                    if entry.expires_at > time.monotonic():
                        return entry.value
                    self._remove(name)
            ticket = self._seq
        value = load()
        if tracking and (keep is None or keep(value)):
            keys = tuple(deps(value) if callable(deps) else deps)
            lifetime = settings.NEAR_CACHE_TTL
            with self._lock:
                if lifetime > 0 and self._sync() and self._fresh(keys, ticket):
                    self._store(name, _Entry(value, keys, time.monotonic() + lifetime))
        return value

    def clear(self) -> None:
        """Drops every entry, and refuses fills begun before now."""
        with self._lock:
            self._flush()

    def reconnect(self) -> None:
        """Drops every entry and the tracking connection; the next read opens a new one."""
        with self._lock:
            self._disconnect()
            self._retry_at = 0.0
            self._failing = False

    def __len__(self) -> int:
        return len(self._entries)

    # --- entries -------------------------------------------------------------

    def _fresh(self, keys: tuple[str, ...], ticket: int) -> bool:
        if ticket < self._floor:
            return False
        return all(self._touched.get(key, -1) <= ticket for key in keys)

    def _store(self, name: str, entry: _Entry) -> None:
        self._remove(name)
        while len(self._entries) >= settings.NEAR_CACHE_MAX_ENTRIES:
            self._remove(next(iter(self._entries)))
        self._entries[name] = entry
        for key in entry.deps:
            self._by_dep.setdefault(key, set()).add(name)

    def _remove(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        for key in entry.deps:
            names = self._by_dep.get(key)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_dep[key]

    def _changed(self, key: str) -> None:
        self._seq += 1
        if len(self._touched) >= _TOUCHED_LIMIT:
            # Forget old reports: fills begun before now are refused instead.
            self._touched.clear()
            self._floor = self._seq
        self._touched[key] = self._seq
        for name in list(self._by_dep.get(key, ())):
            self._remove(name)

    def _flush(self) -> None:
        self._entries.clear()
        self._by_dep.clear()
        self._touched.clear()
        self._seq += 1
        self._floor = self._seq

    def begin_request(self) -> None:
        """From now until `end_request()`, this thread drains the reports once (at its
        next read) rather than before every read."""
        self._request.active = True
        self._request.synced = False

    def end_request(self) -> None:
        self._request.active = False
        self._request.synced = False

    # --- the tracking connection ----------------------------------------------

    def _sync_for_read(self) -> bool:
        request = self._request
        if getattr(request, "synced", False) and self._connection is not None:
            return True
        tracking = self._sync()
        if tracking and getattr(request, "active", False):
            request.synced = True
        return tracking

    def _sync(self) -> bool:
        """Applies every report received so far; False when entries cannot be trusted."""
        if self._connection is not None and not self._connection.is_current():
            self._disconnect()
            self._retry_at = 0.0  # a fork or new settings, not a failure: connect now
        if redis_client.incident.is_down:
            self._disconnect()
            return False
        if self._connection is None and not self._connect():
            return False
        try:
            for message in self._connection.poll():
                self._apply(message)
        except (*redis_client.CONNECTION_ERRORS, ValueError) as error:
            logger.warning("Near cache: lost the tracking connection (%s); dropping every entry", error)
            self._disconnect()
            return False
        return True

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + settings.REDIS_RETRY_INTERVAL
        connection = None
        try:
            connection = redis_client.RawConnection()
            connection.call(redis_client.pack("CLIENT", "SETNAME", connection_name()))
            client_id = connection.call(redis_client.pack("CLIENT", "ID"))
            # Reports of changes under the prefixes, whoever makes them, sent to this very
            # connection as messages on the tracking channel.
            prefixes = [part for prefix in sorted(_prefixes) for part in ("PREFIX", prefix)]
            connection.call(
                redis_client.pack("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *prefixes)
            )
            connection.call(redis_client.pack("SUBSCRIBE", _TRACKING_CHANNEL))
        except (*redis_client.CONNECTION_ERRORS, redis.RedisError) as error:
            # Once per failure streak: a Redis that refuses tracking (an old server, a
            # managed one without CLIENT) is retried every interval, quietly.
            log = logger.debug if self._failing else logger.warning
            log("Near cache: no tracking connection (%s); reading through", error)
            self._failing = True
            if connection is not None:
                connection.close()
            return False
        self._failing = False
        # From here on the connection is only read, without waiting, by `_sync`.
        connection.nonblocking()
        self._connection = connection
        self._flush()
        return True

    def _apply(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) != 3 or message[0] != b"message":
            return
        if message[1] != _TRACKING_CHANNEL:
            return
        if message[2] is None:  # FLUSHDB / FLUSHALL
            self._flush()
            return
        for raw in message[2]:
            key = raw.decode()
            self._changed(key.removeprefix(NAMES_PREFIX))

    def changed_here(self, names: Iterable[str]) -> None:
        """Applies changes this process made, without waiting for their report."""
        with self._lock:
            for name in names:
                self._changed(name)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()  # not in a forked child: the socket is the parent's
            self._connection = None
        self._flush()


near_cache = NearCache()
read = near_cache.read


def _request_started(**kwargs) -> None:
    near_cache.begin_request()


def _request_finished(**kwargs) -> None:
    near_cache.end_request()


request_started.connect(_request_started, dispatch_uid="cyberlab.nearcache.request_started")
request_finished.connect(_request_finished, dispatch_uid="cyberlab.nearcache.request_finished")


def invalidate(*names: str) -> None:
    """Tells every process that entries depending on `names` are out of date.

    For answers Redis cannot see change (read from Postgres). It writes `nearcache:{name}`
    (a short-lived marker), whose report every process receives like any other; this
    process applies it at once. Redis down: logged, and the other processes' entries end
    with their lifetime, or when they see Redis again.
    """
    if not names:
        return
    near_cache.changed_here(names)
    lifetime_ms = max(1000, int(settings.NEAR_CACHE_TTL * 2000))
    try:
        with redis_client.connection() as client:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.set(f"{NAMES_PREFIX}{name}", 1, px=lifetime_ms)
            pipe.execute()
    except redis_client.RedisUnavailable:
        logger.warning("Near cache: could not announce changes to %s", ", ".join(names))


@redis_client.on_recover
def _after_outage() -> None:
    # Reports may have gone missing while Redis was away (or unreachable from here).
    near_cache.clear()
