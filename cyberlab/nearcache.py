"""The near cache: a few hot reads served from process memory, kept true by Redis itself.

Each process subscribes to `__redis__:invalidate` on a connection of its own and asks
Redis (`CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX ...`) to report there every
change to keys under the prefixes apps registered (`track_prefix`). Before a read, the
reports received so far are applied without waiting; Redis sends a report before the
writer's reply, so the writer's next request, on any node, sees the change. A read that
raced a change is answered but not kept (its ticket is older than the report).

Only answers Redis holds are kept -- never credentials, which Postgres decides on every
request. Losing the tracking connection, or any Redis outage this process sees, drops
every entry and reads go through until tracking is back; entries also end after
NEAR_CACHE_TTL. The connection is redis-py's own (`PubSub`, no retries, so a reconnect
never silently loses tracking); a forked child opens its own.
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
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import NoBackoff
from redis.retry import Retry

from cyberlab import redis_client

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHANNEL = b"__redis__:invalidate"
_prefixes: set[str] = set()


def track_prefix(*prefixes: str) -> None:
    """Asks for changes under these prefixes to be reported (apps call it in `ready()`)."""
    if not set(prefixes) <= _prefixes:
        _prefixes.update(prefixes)
        near_cache.reset()


class NearCache:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[str, tuple[Any, tuple[str, ...], float]] = {}
        self._by_dep: dict[str, set[str]] = {}
        self._touched: dict[str, int] = {}  # key -> sequence number of its last report
        self._seq = 0
        self._floor = 0  # fills with an older ticket are refused (after a flush)
        self._client: redis.Redis | None = None
        self._pubsub: redis.client.PubSub | None = None
        self._pid = 0
        self._retry_at = 0.0
        self._warned = False

    def read(self, name: str, load: Callable[[], T], *, deps: Iterable[str], keep=None) -> T:
        """The entry `name`, or `load()`, kept until a report names one of `deps` (Redis
        keys). `keep(value)` False: not kept (an answer from a fallback). Shared: callers
        must not change the value."""
        if not settings.NEAR_CACHE_ENABLED:
            return load()
        with self._lock:
            tracking = self._sync()
            if tracking:
                entry = self._entries.get(name)
                if entry is not None:
                    if entry[2] > time.monotonic():
                        return entry[0]
                    self._remove(name)
            ticket = self._seq
        value = load()
        if tracking and (keep is None or keep(value)):
            keys = tuple(deps)
            with self._lock:
                # The reports that arrived during the load come first: they may name these keys.
                tracking = self._sync()
                fresh = ticket >= self._floor and all(self._touched.get(k, -1) <= ticket for k in keys)
                if tracking and fresh:
                    self._remove(name)
                    if len(self._entries) >= settings.NEAR_CACHE_MAX_ENTRIES:
                        self._remove(next(iter(self._entries)))
                    self._entries[name] = (value, keys, time.monotonic() + settings.NEAR_CACHE_TTL)
                    for key in keys:
                        self._by_dep.setdefault(key, set()).add(name)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_dep.clear()
            self._touched.clear()
            self._seq += 1
            self._floor = self._seq

    def reset(self) -> None:
        """Drops every entry and the tracking connection; the next read reconnects."""
        with self._lock:
            self._close()
            self._retry_at = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def _changed(self, key: str) -> None:
        self._seq += 1
        if len(self._touched) >= settings.NEAR_CACHE_MAX_ENTRIES:
            self._touched.clear()
            self._floor = self._seq
        self._touched[key] = self._seq
        for name in list(self._by_dep.get(key, ())):
            self._remove(name)

    def _remove(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        for key in entry[1] if entry is not None else ():
            names = self._by_dep.get(key)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_dep[key]

    def _sync(self) -> bool:
        """Applies every report received so far; False while entries cannot be trusted."""
        if self._pubsub is not None and self._pid != os.getpid():
            self._client = self._pubsub = None  # a forked child: the connection is the parent's
            self.clear()
        if redis_client.incident.is_down:
            self._close()
            return False
        if self._pubsub is None and not self._connect():
            return False
        try:
            while (message := self._pubsub.get_message(timeout=0.0)) is not None:
                if message.get("type") != "message" or message.get("channel") != CHANNEL:
                    continue
                if message["data"] is None:  # FLUSHDB / FLUSHALL
                    self.clear()
                else:
                    for key in message["data"]:
                        self._changed(key.decode())
        except (*redis_client.CONNECTION_ERRORS, redis.RedisError) as error:
            logger.warning("Near cache: lost the tracking connection (%s); dropping every entry", error)
            self._close()
            return False
        return True

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at or not _prefixes:
            return False
        self._retry_at = now + settings.REDIS_RETRY_INTERVAL
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            # Reports reach a RESP2 subscriber as messages on the channel (RESP3 would push them).
            protocol=2,
            client_name=f"nearcache-{os.getpid()}",
        )
        pubsub = client.pubsub()
        try:
            pubsub.execute_command("CLIENT", "ID")
            own_id = pubsub.parse_response(block=True, timeout=settings.REDIS_SOCKET_TIMEOUT)
            prefixes = [part for prefix in sorted(_prefixes) for part in ("PREFIX", prefix)]
            pubsub.execute_command("CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST", *prefixes)
            if pubsub.parse_response(block=True, timeout=settings.REDIS_SOCKET_TIMEOUT) not in (b"OK", "OK"):
                raise redis.ResponseError("tracking was not turned on")
            pubsub.subscribe(CHANNEL)
        except (*redis_client.CONNECTION_ERRORS, redis.RedisError) as error:
            # Once per failure streak: a Redis that refuses tracking is retried quietly.
            (logger.debug if self._warned else logger.warning)("Near cache: no tracking (%s)", error)
            self._warned = True
            pubsub.close()
            return False
        self._warned = False
        # The client owns the pool the subscription's connection came from: kept with it.
        self._client, self._pubsub, self._pid = client, pubsub, os.getpid()
        self.clear()
        return True

    def _close(self) -> None:
        if self._pubsub is not None:
            if self._pid == os.getpid():
                self._pubsub.close()
                self._client.close()
            self._client = self._pubsub = None
        self.clear()


near_cache = NearCache()
read = near_cache.read


@receiver(setting_changed)
def _redis_moved(*, setting: str, **kwargs) -> None:
    if setting in {"REDIS_URL", "CACHES"}:
        near_cache.reset()


@redis_client.on_recover
def _after_outage() -> None:
    # Reports may have gone missing while Redis was away (or unreachable from here).
    near_cache.clear()
