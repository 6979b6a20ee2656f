"""The event stream: `GET /api/v1/events/` (the signed-in learner's events) and
`GET /api/v1/events/public/` (the board's, anonymous), as server-sent events.

A plain ASGI application in front of Django's (cyberlab.asgi): a stream lives for hours,
so it holds no thread and no Django request, only a task waiting on its queue. Each
process keeps one Redis subscription (`events:live`, the `Hub`) and fans every message
out to its local streams. A stream's first lines replay what its client missed since
`Last-Event-ID`, read from the Redis Streams the publisher appends to
(cyberlab.events.services); live messages already replayed are skipped by id, so every
event arrives once and in order.

Each SSE id is `{learner's stream id}_{broadcast stream id}`: where the client stands in
both. Credentials are checked against Postgres when a stream opens, again whenever a
revoke or token change of the learner is announced, and at every heartbeat.

Redis down: open streams stay open (heartbeats go on), new ones are accepted, nothing is
delivered; when the subscription comes back every stream gets `resync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.commands.core import AsyncScript

from cyberlab import metrics
from cyberlab.accounts import selectors
from cyberlab.events import services
from cyberlab.threads import in_django

logger = logging.getLogger(__name__)

PATH = "/api/v1/events/"
PUBLIC_PATH = "/api/v1/events/public/"
ZERO = "0-0"
_CLOSE = object()

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

# KEYS[1]: the learner's open streams (member `{opened_ms}:{connection}`, scored by when
# its process last vouched for it). ARGV: member, now, drop-before, the cap, key lifetime
# (ms). Registers the stream; returns the members past the cap, oldest first, removed.
_REGISTER = AsyncScript(
    None,
    b"""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(members)
local excess = #members - tonumber(ARGV[4])
local closed = {}
for i = 1, excess do
    closed[i] = members[i]
    redis.call('ZREM', KEYS[1], members[i])
end
return closed
""",
)


@dataclass(frozen=True)
class Principal:
    """Who a stream is for, and the credential to check again."""

    user_id: int
    session_key: str | None = None
    token: str | None = None


@in_django
def authenticate(session_key: str | None, token: str | None) -> Principal | None:
    if token:
        user_id = selectors.user_id_for_token(token=token)
        return Principal(user_id=user_id, token=token) if user_id is not None else None
    if session_key:
        user_id = selectors.user_id_for_session_key(session_key=session_key)
        return Principal(user_id=user_id, session_key=session_key) if user_id is not None else None
    return None


def _stream_id(value: str) -> tuple[int, int]:
    millis, _, sequence = value.partition("-")
    return int(millis), int(sequence or 0)


def _later(a: str, b: str) -> bool:
    return _stream_id(a) > _stream_id(b)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Stream:
    """One open event stream: a queue the hub fills, and where its client stands."""

    def __init__(self, *, principal: Principal | None, public: bool) -> None:
        self.principal = principal
        self.public = public
        self.connection_id = secrets.token_hex(8)
        self.opened_ms = int(time.time() * 1000)
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=settings.EVENTS_QUEUE_MAX)
        self.user_key = services.user_stream_key(user_id=principal.user_id) if principal is not None else None
        self.positions = {services.BROADCAST_STREAM: ZERO}
        if self.user_key:
            self.positions[self.user_key] = ZERO
        self.board: bytes | None = None
        self.board_sent_at = 0.0
        self.resync_pending = False
        # A fresh stream (no Last-Event-ID) delivers every live message it queued.
        self.take_queued = False

    @property
    def member(self) -> str:
        return f"{self.opened_ms:015d}:{self.connection_id}"

    def offer(self, item: Any) -> None:
        """Queues an item without waiting; a client too slow to keep up gets `resync`."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(item if item is _CLOSE else ("resync", None))

    def event_id(self) -> str:
        return _id_of(self, self.positions)


class Hub:
    """This process's subscription to `events:live`, fanned out to its open streams."""

    def __init__(self) -> None:
        self.by_user: dict[int, set[Stream]] = {}
        self.by_connection: dict[str, Stream] = {}
        self.task: asyncio.Task | None = None
        self.client: aioredis.Redis | None = None
        self.listening = asyncio.Event()

    # --- streams ------------------------------------------------------------------

    def add(self, stream: Stream) -> None:
        self._ensure_running()
        if stream.connection_id not in self.by_connection:
            metrics.EVENT_STREAMS.inc()
        self.by_connection[stream.connection_id] = stream
        if stream.principal is not None:
            self.by_user.setdefault(stream.principal.user_id, set()).add(stream)

    def remove(self, stream: Stream) -> None:
        if self.by_connection.pop(stream.connection_id, None) is not None:
            metrics.EVENT_STREAMS.dec()
        if stream.principal is None:
            return
        streams = self.by_user.get(stream.principal.user_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self.by_user[stream.principal.user_id]

    @property
    def subscribed(self) -> bool:
        return self.listening.is_set()

    async def wait_subscribed(self, *, timeout: float) -> bool:
        self._ensure_running()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.listening.wait()
        return self.subscribed

    async def stop(self) -> None:
        """Closes every open stream and the subscription (the server is shutting down)."""
        for stream in list(self.by_connection.values()):
            stream.offer(_CLOSE)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def redis(self) -> aioredis.Redis:
        if self.client is None:
            self.client = aioredis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
                socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                max_connections=settings.EVENTS_REDIS_MAX_CONNECTIONS,
            )
        return self.client

    # --- the subscription ------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        lost = False
        while True:
            client = aioredis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
                health_check_interval=settings.EVENTS_HEARTBEAT,
            )
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(services.CHANNEL)
                    self.listening.set()
                    if lost:
                        logger.warning("Event stream: subscription back; asking every stream to resync")
                        self.broadcast_resync()
                        lost = False
                    next_vouch = time.monotonic()
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "message":
                            self.dispatch(message["data"])
                        if time.monotonic() >= next_vouch:
                            await self._vouch()
                            next_vouch = time.monotonic() + settings.EVENTS_HEARTBEAT
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not lost:
                    logger.warning("Event stream: subscription lost (%s); streams stay open", error)
                lost = True
                self.listening.clear()
                # Streams opened meanwhile may hold positions this process never saw.
                for stream in list(self.by_connection.values()):
                    stream.resync_pending = True
            finally:
                await client.aclose()
            await asyncio.sleep(settings.REDIS_RETRY_INTERVAL)

    def broadcast_resync(self) -> None:
        for stream in list(self.by_connection.values()):
            stream.resync_pending = False
            stream.offer(("resync", None))

    def dispatch(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            logger.error("Event stream: a message that is not JSON on %s", services.CHANNEL)
            return
        control = message.get("control")
        if control == services.RECHECK:
            for stream in list(self.by_user.get(message.get("user_id"), ())):
                stream.offer(("recheck", None))
            return
        if control == services.CLOSE:
            for connection_id in message.get("connections", ()):
                stream = self.by_connection.get(connection_id)
                if stream is not None:
                    stream.offer(_CLOSE)
            return
        event, data, targets = message.get("event"), message.get("data"), message.get("targets", {})
        encoded = json.dumps(data, separators=(",", ":"))
        for key, entry_id in targets.items():
            if key == services.BROADCAST_STREAM:
                streams: Any = list(self.by_connection.values())
            elif key.startswith("events:user:"):
                streams = list(self.by_user.get(int(key.rsplit(":", 1)[1]), ()))
            else:
                continue
            for stream in streams:
                if stream.public and event not in services.PUBLIC_EVENTS:
                    continue
                stream.offer(("event", (key, entry_id, event, encoded)))

    async def _vouch(self) -> None:
        """Tells Redis this process's streams are still open (the per-learner cap counts
        only those), in one pipeline per heartbeat."""
        signed_in = [s for s in self.by_connection.values() if s.principal is not None]
        if not signed_in:
            return
        now = int(time.time() * 1000)
        lifetime = _presence_lifetime_ms()
        try:
            async with self.redis().pipeline(transaction=False) as pipe:
                for stream in signed_in:
                    key = services.connections_key(user_id=stream.principal.user_id)
                    pipe.zadd(key, {stream.member: now}, xx=True)
                    pipe.pexpire(key, lifetime)
                await pipe.execute()
        except (aioredis.RedisError, OSError) as error:
            logger.debug("Event stream: could not vouch for open streams (%s)", error)


hub = Hub()


# --- one stream ---------------------------------------------------------------------


def _headers(scope: dict) -> dict[str, str]:
    return {_text(name).lower(): _text(value) for name, value in scope.get("headers", [])}


def _credentials(headers: dict[str, str]) -> tuple[str | None, str | None]:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "token" and value.strip():
        return None, value.strip()
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:
        return None, None
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    return (morsel.value if morsel is not None else None), None


async def _answer(send: Send, status: int, detail: str, code: str) -> None:
    body = json.dumps({"detail": detail, "code": code}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _frame(event: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def application(scope: dict, receive: Receive, send: Send) -> None:
    """The ASGI application of both stream paths."""
    if scope.get("method") != "GET":
        await _answer(send, 405, f'Method "{scope.get("method")}" not allowed.', "method_not_allowed")
        return
    headers = _headers(scope)
    public = scope["path"] == PUBLIC_PATH
    principal = None
    if public:
        if not settings.LEADERBOARD_PUBLIC:
            await _answer(send, 404, "Not found.", "not_found")
            return
    else:
        session_key, token = _credentials(headers)
        principal = await authenticate(session_key, token)
        if principal is None:
            await _answer(
                send, 403, "Authentication credentials were not provided or are invalid.", "not_authenticated"
            )
            return
    stream = Stream(principal=principal, public=public)
    hub.add(stream)
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, stream))
    try:
        await _serve(stream, send, headers.get("last-event-id"))
    finally:
        watcher.cancel()
        hub.remove(stream)
        await _unregister(stream)


async def _watch_disconnect(receive: Receive, stream: Stream) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.offer(_CLOSE)
            return


async def _serve(stream: Stream, send: Send, last_event_id: str | None) -> None:
    # The headers go out once the stream is live: whatever is published after a client
    # sees them reaches it.
    opening = f"retry: {settings.EVENTS_RETRY_MS}\n\n".encode()
    opening += b"".join(await _catch_up(stream, last_event_id))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": opening, "more_body": True})
    heartbeat = settings.EVENTS_HEARTBEAT
    next_heartbeat = time.monotonic() + heartbeat
    next_recheck = _next_recheck()
    while True:
        now = time.monotonic()
        deadline = next_heartbeat
        if stream.board is not None:
            deadline = min(deadline, stream.board_sent_at + settings.EVENTS_LEADERBOARD_INTERVAL)
        try:
            async with asyncio.timeout(max(0.0, deadline - now)):
                item = await stream.queue.get()
        except TimeoutError:
            item = None
        if item is _CLOSE:
            return
        chunk = b""
        if item is not None:
            kind, payload = item
            if kind == "event":
                chunk = _deliver(stream, *payload)
            elif kind == "resync":
                # Revocations may have been missed with the rest: check now.
                if not await _still_allowed(stream):
                    return
                chunk = _frame(services.RESYNC, "{}", stream.event_id())
            elif kind == "recheck" and not await _still_allowed(stream):
                return
        if (
            stream.board is not None
            and time.monotonic() - stream.board_sent_at >= settings.EVENTS_LEADERBOARD_INTERVAL
        ):
            chunk += stream.board
            stream.board = None
            stream.board_sent_at = time.monotonic()
        if time.monotonic() >= next_heartbeat:
            if time.monotonic() >= next_recheck:
                if not await _still_allowed(stream):
                    return
                next_recheck = _next_recheck()
            if stream.resync_pending and hub.subscribed:
                stream.resync_pending = False
                chunk += _frame(services.RESYNC, "{}", stream.event_id())
            chunk += b": heartbeat\n\n"
            next_heartbeat = time.monotonic() + heartbeat
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


def _deliver(stream: Stream, key: str, entry_id: str, event: str, data: str) -> bytes:
    """The frame for one live message, or nothing when it was replayed already; a
    leaderboard change waits to be coalesced."""
    if event == services.LEADERBOARD:
        stream.board = _frame(event, data, stream.event_id())
        return b""
    position = stream.positions.get(key)
    if position is None or not entry_id:
        return b""
    if _later(entry_id, position):
        stream.positions[key] = entry_id
    elif not stream.take_queued:
        return b""  # replayed already
    return _frame(event, data, stream.event_id())


def _next_recheck() -> float:
    # Spread out, so thousands of streams opened together do not all query at once.
    return time.monotonic() + settings.EVENTS_RECHECK_INTERVAL * random.uniform(0.5, 1.5)


async def _still_allowed(stream: Stream) -> bool:
    principal = stream.principal
    if principal is None:
        return True
    return await authenticate(principal.session_key, principal.token) is not None


async def _catch_up(stream: Stream, last_event_id: str | None) -> list[bytes]:
    """Registers the stream (closing the learner's oldest past the cap) and replays what
    the client missed since `last_event_id`; sets where the stream stands."""
    try:
        # Positions read before this process listens could miss what is published between.
        await hub.wait_subscribed(timeout=settings.REDIS_CONNECT_TIMEOUT * 4)
        client = hub.redis()
        if stream.principal is not None:
            await _register(client, stream)
        wanted = _parse_last_event_id(stream, last_event_id)
        if wanted is None:
            async with client.pipeline(transaction=False) as pipe:
                for key in stream.positions:
                    pipe.xrevrange(key, count=1)
                latest = await pipe.execute()
            for key, entries in zip(list(stream.positions), latest, strict=True):
                if entries:
                    stream.positions[key] = _text(entries[0][0])
            # Everything queued since the stream was registered is news to this client,
            # including what was appended just before those positions were read.
            stream.take_queued = True
            return []
        return await _replay(client, stream, wanted)
    except (aioredis.RedisError, OSError) as error:
        logger.debug("Event stream: no replay (%s)", error)
        # Redis is away: nothing can be replayed, and nothing is delivered until it returns.
        stream.resync_pending = True
        return [_frame(services.RESYNC, "{}", stream.event_id())] if last_event_id else []


def _parse_last_event_id(stream: Stream, value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    user_part, _, broadcast_part = value.strip().partition("_")
    wanted = {services.BROADCAST_STREAM: broadcast_part or ZERO}
    if stream.user_key:
        wanted[stream.user_key] = user_part or ZERO
    try:
        for position in wanted.values():
            _stream_id(position)
    except ValueError:
        return None
    return wanted


async def _replay(client: aioredis.Redis, stream: Stream, wanted: dict[str, str]) -> list[bytes]:
    oldest_kept = (time.time() - settings.EVENTS_REPLAY_SECONDS) * 1000
    too_far = False
    entries: list[tuple[tuple[int, int], str, str, str, str]] = []
    for key, position in wanted.items():
        found = await client.xrange(key, min=f"({position}", max="+", count=settings.EVENTS_REPLAY_MAXLEN)
        if position != ZERO:
            if _stream_id(position)[0] < oldest_kept:
                too_far = True
            elif found or await client.exists(key):
                info = await client.xinfo_stream(key)
                deleted = _text(info.get("max-deleted-entry-id", ZERO))
                too_far = too_far or _later(deleted, position)
        for entry_id, fields in found:
            entry = _text(entry_id)
            values = {_text(k): _text(v) for k, v in fields.items()}
            entries.append(
                (_stream_id(entry), key, entry, values.get("event", ""), values.get("data", "null"))
            )
        stream.positions[key] = _text(found[-1][0]) if found else position
    entries.sort()
    frames = []
    replayed = {key: wanted[key] for key in wanted}
    for _, key, entry, event, data in entries:
        if stream.public and event not in services.PUBLIC_EVENTS:
            replayed[key] = entry
            continue
        replayed[key] = entry
        frames.append(_frame(event, data, _id_of(stream, replayed)))
    if too_far:
        frames.append(_frame(services.RESYNC, "{}", stream.event_id()))
    return frames


def _id_of(stream: Stream, positions: dict[str, str]) -> str:
    user = positions.get(stream.user_key, ZERO) if stream.user_key else ZERO
    return f"{user}_{positions.get(services.BROADCAST_STREAM, ZERO)}"


def _presence_lifetime_ms() -> int:
    # A stream its process stopped vouching for (a crash) counts for three heartbeats.
    return int(settings.EVENTS_HEARTBEAT * 3000)


async def _register(client: aioredis.Redis, stream: Stream) -> None:
    now = int(time.time() * 1000)
    lifetime = _presence_lifetime_ms()
    closed = await _REGISTER(
        keys=[services.connections_key(user_id=stream.principal.user_id)],
        args=[stream.member, now, now - lifetime, settings.EVENTS_MAX_STREAMS_PER_USER, lifetime],
        client=client,
    )
    ids = [_text(member).split(":", 1)[1] for member in closed]
    if ids:
        await client.publish(services.CHANNEL, services.close_message(connection_ids=ids))


async def _unregister(stream: Stream) -> None:
    if stream.principal is None:
        return
    with contextlib.suppress(aioredis.RedisError, OSError):
        await hub.redis().zrem(services.connections_key(user_id=stream.principal.user_id), stream.member)
