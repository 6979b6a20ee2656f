"""Who a credential signs in, kept in process memory while Postgres says nothing changed.

Every signed-in request names a credential (an API token, or a session's record) that one
indexed query resolves to a user; the ORM's share of that query is most of what a small
signed-in read costs. So each process keeps what the ORM returned, and Postgres itself says
when to forget it: triggers (accounts migration 0003) send `NOTIFY cyberlab_credentials`
with the user's id whenever a token, a session record or the user's row changes, and a
thread per process LISTENs on a connection of its own. Postgres signals the listeners when
the change commits, before the writer hears back, so the writer's next request on any node
no longer finds the old entry. Redis plays no part.

Before an entry is trusted, the request reads every notification already in that
connection's buffer (a poll, no round trip), so no thread scheduling stands between a
change and the next request. The channel must also be known to work: a thread pings over
it every CREDENTIAL_CACHE_PING seconds, and without a reply for CREDENTIAL_CACHE_LEASE (a
stalled connection, Postgres away), while a ping is in flight, or once the connection is
lost, requests ask Postgres until the channel is back. Entries also end after
CREDENTIAL_CACHE_TTL, for changes no trigger sees (a TRUNCATE). Off on SQLite (no LISTEN).
The gateway keeps its access decisions here too (vms/gateway.py): a machine session's row
notifies the same way.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import connections
from rest_framework import authentication

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHANNEL = "cyberlab_credentials"


class CredentialCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the entries
        self._entries: dict[Hashable, tuple[int, Any, float]] = {}  # key -> (user id, value, until)
        self._by_user: dict[int, set[Hashable]] = {}
        self._seq = 0  # bumped by every notification: a load that raced one is not kept
        self._channel_lock = threading.Lock()  # the LISTEN connection, and when it last answered
        self._channel: psycopg.Connection | None = None
        self._confirmed = float("-inf")  # when the last ping that came back was sent
        self._pid = 0

    def get(self, key: Hashable, load: Callable[[], T], *, user_id: Callable[[T], int]) -> T:
        """The value kept for `key`, or `load()` (kept unless it raised or is None).
        Shared between requests: callers must not change it."""
        if not self._enabled():
            return load()
        trusted = self._sync()
        with self._lock:
            now = time.monotonic()
            entry = self._entries.get(key)
            if entry is not None:
                if trusted and entry[2] > now:
                    return entry[1]
                self._drop(key)
            ticket = self._seq
        value = load()
        if value is not None and trusted:
            with self._lock:
                if ticket == self._seq:
                    if len(self._entries) >= settings.CREDENTIAL_CACHE_MAX_ENTRIES:
                        self._drop(next(iter(self._entries)))
                    owner = user_id(value)
                    self._entries[key] = (owner, value, time.monotonic() + settings.CREDENTIAL_CACHE_TTL)
                    self._by_user.setdefault(owner, set()).add(key)
        return value

    def forget(self, *, user_id: int) -> None:
        """Drops the user's entries here and now (Postgres tells the other processes)."""
        with self._lock:
            self._seq += 1
            for key in list(self._by_user.get(user_id, ())):
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._seq += 1
            self._entries.clear()
            self._by_user.clear()

    def stop(self) -> None:
        """Ends this process's channel (tests, before their database goes away)."""
        self._pid = -1
        with self._channel_lock:
            if self._channel is not None:
                self._channel.close()
            self._channel, self._confirmed = None, float("-inf")
        self.clear()

    def _sync(self) -> bool:
        """Applies the notifications received so far; False while entries cannot be trusted."""
        if not self._channel_lock.acquire(blocking=False):
            return False  # a ping is in flight (or stuck)
        try:
            if self._channel is None:
                return False
            self._apply(self._channel.notifies(timeout=0))
            return time.monotonic() - self._confirmed < settings.CREDENTIAL_CACHE_LEASE
        except psycopg.Error:
            self._confirmed = float("-inf")  # the thread sees it at its next ping
            return False
        finally:
            self._channel_lock.release()

    def _drop(self, key: Hashable) -> None:
        owner, _, _ = self._entries.pop(key)
        keys = self._by_user.get(owner)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[owner]

    def _enabled(self) -> bool:
        if not settings.CREDENTIAL_CACHE_ENABLED or connections["default"].vendor != "postgresql":
            return False
        if self._pid != os.getpid() and self._pid != -1:  # first use here (or a forked child)
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    self._channel, self._confirmed = None, float("-inf")
                    params = {
                        **connections["default"].get_connection_params(),
                        "autocommit": True,
                        "application_name": "cyberlab-credentials",
                    }
                    threading.Thread(
                        target=self._listen, args=(self._pid, params), name="credential-cache", daemon=True
                    ).start()
        return True

    def _listen(self, pid: int, params: dict) -> None:
        warned = False
        while self._pid == pid:
            conn = None
            try:
                conn = psycopg.connect(**params)
                conn.execute(f"LISTEN {CHANNEL}")
                with self._channel_lock:
                    self._channel = conn
                self.clear()  # whatever changed while nobody listened
                warned = False
                while self._pid == pid:
                    sent = time.monotonic()
                    with self._channel_lock:
                        # Its reply comes after every notification of a commit made before it.
                        conn.execute("SELECT 1")
                        self._apply(conn.notifies(timeout=0))
                        self._confirmed = sent
                    time.sleep(settings.CREDENTIAL_CACHE_PING)
            except (psycopg.Error, OSError) as error:
                (logger.debug if warned else logger.warning)(
                    "Credential cache: lost its Postgres channel (%s); every request checks Postgres", error
                )
                warned = True
            with self._channel_lock:
                if self._channel is conn:
                    self._channel, self._confirmed = None, float("-inf")
            if conn is not None:
                conn.close()
            self.clear()
            if self._pid == pid:
                time.sleep(settings.CREDENTIAL_CACHE_PING)

    def _apply(self, notifies) -> None:
        for notify in notifies:
            if notify.payload.isdigit():
                self.forget(user_id=int(notify.payload))
            else:
                self.clear()


cache = CredentialCache()


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, with the token and its user kept in the cache."""

    def authenticate_credentials(self, key):
        load = functools.partial(super().authenticate_credentials, key)
        user, token = cache.get(("token", key), load, user_id=lambda found: found[1].user_id)
        return copy.copy(user), token
