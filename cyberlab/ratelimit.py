"""Exact sliding-window rate limits in Redis: one atomic Lua call per decision.

The algorithm is a sliding log. Each bucket is a sorted set `ratelimit:{scope}:{ident}`
holding one member per admitted request, scored by the Redis server's clock in
microseconds. A check drops the members older than the window, counts the rest and
admits the request only while that count is below the limit. It is exact: at any
instant no window of the configured length ever holds more than `limit` admitted
requests, whatever the concurrency, because Redis runs the whole script as one step.
A sliding-window counter would be cheaper in memory but approximates the previous
window's share (and so may admit a few too many right after a window boundary); GCRA is
exact too, but cannot take one request back, which the flag limit needs (only wrong
answers count). The log costs one member (about 60 bytes) per admitted request still
inside the window, so memory is bounded by the limit.

The clock is Redis's (`TIME` inside the script): every web node then measures the
window on the same clock, so skew between nodes neither stretches nor shrinks it.
Redis 7 replicates scripts by their effects, so a non-deterministic `TIME` is safe.

Several buckets can be decided together (a login counts per IP and per username): the
request is admitted only when every bucket has room, and then counted in all of them.
The keys of one call must live on one Redis server (no Redis Cluster slot spreading).

Busy clients of the general limits (`hit(..., reserve=True)`: every API request counts
per user or per IP) do not pay a round trip per request. A check that admits such a
request may also take up to `RATELIMIT_RESERVE_MAX` further slots for the same process,
usable for `RATELIMIT_RESERVE_LIFETIME` seconds, and the process admits its next
requests from them without asking Redis. The limit stays exact: a reserved slot is
counted in the log from the moment it is taken, and scored at the end of its lifetime,
so it leaves the window no earlier than any request that used it; a window therefore
never admits more than the limit. What can change is on the safe side: a slot reserved
and not used counts until the window passes it (the next check of that process gives it
back), and slots are only reserved while at least half of the limit stays free, sized by
how many requests the process saw for that bucket in the last lifetime -- a client near
its limit, or one making a few requests a second, is decided by Redis one request at a
time, exactly as before.

When Redis is unavailable the check fails open: the request is admitted, and one warning
per outage says limits are off.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from django.conf import settings

from cyberlab import redis_client

logger = logging.getLogger(__name__)

KEY_PREFIX = "ratelimit"

# What both scripts start with: the Redis server's clock in microseconds, and a bucket's
# count once the requests older than the window are dropped, with the microseconds until
# its oldest counted request leaves the window (0 when empty).
_WINDOW_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function in_window(key, window)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local count = redis.call('ZCARD', key)
    local reset = 0
    if count > 0 then
        local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        reset = tonumber(oldest[2]) + window - now
    end
    return count, reset
end
"""

# KEYS: the buckets. ARGV[1]: the member naming this request; then per bucket its limit
# and window in microseconds. Returns {admitted, then per bucket: count before this
# request, microseconds until its oldest counted request leaves the window}.
_HIT_SCRIPT = (
    _WINDOW_LUA
    + """
local member = ARGV[1]
local admitted = 1
local result = {0}
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    local count, reset = in_window(key, tonumber(ARGV[2 * i + 1]))
    if count >= limit then
        admitted = 0
    end
    result[2 * i] = count
    result[2 * i + 1] = reset
end
if admitted == 1 then
    for i, key in ipairs(KEYS) do
        local window = tonumber(ARGV[2 * i + 1])
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, math.ceil(window / 1000))
    end
end
result[1] = admitted
return result
"""
)

_HIT_SHA = hashlib.sha1(_HIT_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

# One bucket, deciding one request and reserving slots for the requests that follow it.
# KEYS[1]: the bucket. ARGV: the request's member (reserved slots are `member:0`,
# `member:1`, ...), limit, window and reserve lifetime in microseconds, slots wanted, then
# triples (member, first, end) of unused reserved slots `member:first` .. `member:end-1`
# to give back. Returns {admitted, count before this request, microseconds until the
# oldest counted request leaves the window, slots reserved}.
_RESERVE_SCRIPT = (
    _WINDOW_LUA
    + """
local key = KEYS[1]
local member = ARGV[1]
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local lifetime = tonumber(ARGV[4])
local wanted = tonumber(ARGV[5])
for i = 6, #ARGV, 3 do
    for slot = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]) - 1 do
        redis.call('ZREM', key, ARGV[i] .. ':' .. slot)
    end
end
local count, reset = in_window(key, window)
if count >= limit then
    return {0, count, reset, 0}
end
-- Reserve only while at least half of the limit stays free after this request.
local reserved = math.min(wanted, limit - count - 1 - math.ceil(limit / 2))
if reserved < 2 then  -- a single slot saves no round trip worth its bookkeeping
    reserved = 0
end
local members = {now, member}
for slot = 0, reserved - 1 do
    members[#members + 1] = now + lifetime
    members[#members + 1] = member .. ':' .. slot
end
redis.call('ZADD', key, unpack(members))
redis.call('PEXPIRE', key, math.ceil((window + lifetime) / 1000))
return {1, count, reset, reserved}
"""
)
_RESERVE_SHA = hashlib.sha1(_RESERVE_SCRIPT.encode()).hexdigest()  # noqa: S324
_local = threading.local()
_warned_outage: float | None = None


def key(*, scope: str, ident: str) -> str:
    """The Redis key of one bucket: `ratelimit:{scope}:{ident}`."""
    return f"{KEY_PREFIX}:{scope}:{ident}"


@dataclass(frozen=True)
class Rate:
    """`limit` requests in any `window` seconds."""

    limit: int
    window: float


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: Rate


@dataclass(frozen=True)
class Usage:
    """Where one bucket stands after a decision (what the RateLimit-* headers report)."""

    bucket: Bucket
    remaining: int
    reset: float  # seconds until the oldest counted request leaves the window
    counted: bool  # this request was added to the bucket


@dataclass(frozen=True)
class Decision:
    admitted: bool
    member: str  # the request's entry in every bucket, to take it back with `refund`
    usages: tuple[Usage, ...]

    @property
    def retry_after(self) -> float:
        """Seconds until every full bucket has room again (0 when admitted)."""
        if self.admitted:
            return 0.0
        return max((u.reset for u in self.usages if u.remaining == 0), default=0.0)


def hit(buckets: Sequence[Bucket], *, reserve: bool = False) -> Decision | None:
    """Admits and counts one request in every bucket, or refuses it and counts nothing.

    One round trip. Returns None when Redis is unavailable: the caller admits (fail open).
    With `reserve` (one bucket only), a busy bucket's requests may be admitted from slots
    this process reserved in Redis beforehand, without a round trip (see the module's
    docstring).
    """
    if not buckets:
        return Decision(admitted=True, member="", usages=())
    if reserve and len(buckets) == 1 and settings.RATELIMIT_RESERVE_MAX > 0:
        return _reserves.hit(buckets[0])
    member = secrets.token_hex(8)
    args: list[int | str] = [member]
    for bucket in buckets:
        args += [bucket.rate.limit, _micros(bucket.rate.window)]
    try:
        raw = _run_script(_HIT_SHA, _HIT_SCRIPT, keys=[b.key for b in buckets], args=args)
    except redis_client.RedisUnavailable:
        _warn_fail_open()
        return None
    return _decision(raw, buckets, member)


def _decision(raw: list, buckets: Sequence[Bucket], member: str) -> Decision:
    """A script's reply read as a decision: {admitted, then per bucket: count, reset}."""
    admitted = raw[0] == 1
    usages = []
    for index, bucket in enumerate(buckets):
        before, reset_micros = int(raw[2 * index + 1]), int(raw[2 * index + 2])
        if admitted:
            after = before + 1
            reset = reset_micros / 1_000_000 if before else bucket.rate.window
        else:
            after = before
            reset = reset_micros / 1_000_000
        usages.append(
            Usage(
                bucket=bucket,
                remaining=max(0, bucket.rate.limit - after),
                reset=max(0.0, reset),
                counted=admitted,
            )
        )
    return Decision(admitted=admitted, member=member, usages=tuple(usages))


def refund(*, decision: Decision, buckets: Sequence[Bucket]) -> None:
    """Takes an admitted request back out of `buckets`, as if it had never counted."""
    if not decision.admitted or not buckets:
        return
    try:
        with redis_client.connection() as client:
            pipe = client.pipeline(transaction=False)
            for bucket in buckets:
                pipe.zrem(bucket.key, decision.member)
            pipe.execute()
    except redis_client.RedisUnavailable:
        _warn_fail_open()


def usage_after_refund(usage: Usage) -> Usage:
    remaining = min(usage.bucket.rate.limit, usage.remaining + 1)
    empty = remaining == usage.bucket.rate.limit
    return Usage(bucket=usage.bucket, remaining=remaining, reset=0.0 if empty else usage.reset, counted=False)


def reset_seconds(usage: Usage) -> int:
    return math.ceil(usage.reset)


def _micros(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def _run_script(sha: str, source: str, *, keys: list[str], args: list) -> list:
    """EVALSHA of one of the scripts: one round trip, on this thread's own connection.

    Every API request makes this call, so it bypasses the client library's command
    layers, which cost more than twice the socket work (see `redis_client.RawConnection`).
    A connection that fails is dropped and the call tried once more on a fresh one (Redis
    may have closed an idle connection); a Redis whose script cache was emptied gets the
    script again.
    """
    command = redis_client.pack("EVALSHA", sha, len(keys), *keys, *args)
    with redis_client.connection():
        for attempt in (1, 2):
            connection = _connection()
            try:
                try:
                    return connection.call(command)
                except redis.exceptions.NoScriptError:
                    connection.call(redis_client.pack("SCRIPT", "LOAD", source))
                    return connection.call(command)
            except redis_client.CONNECTION_ERRORS:
                _local.connection = None
                connection.close()
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


def _connection() -> redis_client.RawConnection:
    connection = getattr(_local, "connection", None)
    if connection is None or not connection.is_current():
        connection = _local.connection = redis_client.RawConnection()
    return connection


def _warn_fail_open() -> None:
    global _warned_outage
    outage = redis_client.incident.down_since
    if outage is not None and outage == _warned_outage:
        return
    _warned_outage = outage
    logger.warning("Rate limits are not enforced while Redis is unavailable (failing open)")


@dataclass
class _Reserved:
    """Slots `member:0` .. `member:size-1` of one bucket, reserved by this process."""

    rate: Rate
    member: str
    size: int
    used: int
    expires: float  # time.monotonic() after which they may no longer be used
    remaining: int  # the bucket's room after the request that reserved them, as if unreserved
    reset_at: float  # time.monotonic() when the bucket's oldest counted request leaves the window


@dataclass
class _Demand:
    """How many requests this process saw for a bucket, per reserve lifetime."""

    since: float
    current: int = 0
    previous: int = 0


class _Reserves:
    """This process's reserved slots per bucket, and the demand that sizes them."""

    # Demand is forgotten for buckets idle this many lifetimes, once this many are known.
    _DEMAND_LIMIT = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: dict[str, _Reserved] = {}
        self._unused: dict[str, list[tuple[str, int, int]]] = {}
        self._demand: dict[str, _Demand] = {}

    def clear(self) -> None:
        with self._lock:
            self._reserved.clear()
            self._unused.clear()
            self._demand.clear()

    def hit(self, bucket: Bucket) -> Decision | None:
        now = time.monotonic()
        lifetime = settings.RATELIMIT_RESERVE_LIFETIME
        with self._lock:
            wanted = self._count_demand(bucket.key, now, lifetime)
            reserved = self._reserved.get(bucket.key)
            if reserved is not None:
                if reserved.rate == bucket.rate and reserved.used < reserved.size and now < reserved.expires:
                    reserved.used += 1
                    return _decision_from_reserve(bucket, reserved, now)
                self._put_back(bucket.key, reserved)
            unused = self._unused.pop(bucket.key, [])
        member = secrets.token_hex(8)
        args: list[int | str] = [
            member,
            bucket.rate.limit,
            _micros(bucket.rate.window),
            _micros(lifetime),
            min(wanted, settings.RATELIMIT_RESERVE_MAX),
        ]
        for entry in unused:
            args += entry
        sent = time.monotonic()
        try:
            raw = _run_script(_RESERVE_SHA, _RESERVE_SCRIPT, keys=[bucket.key], args=args)
        except redis_client.RedisUnavailable:
            with self._lock:  # given back at the next check that reaches Redis
                self._unused.setdefault(bucket.key, []).extend(unused)
            _warn_fail_open()
            return None
        decision = _decision(raw, [bucket], member)
        size = int(raw[3])
        if size:
            usage = decision.usages[0]
            reserved = _Reserved(
                rate=bucket.rate,
                member=member,
                size=size,
                used=0,
                # Counted from before the call: Redis scored the slots later than that.
                expires=sent + lifetime,
                remaining=usage.remaining,
                reset_at=sent + usage.reset,
            )
            with self._lock:
                replaced = self._reserved.get(bucket.key)
                if replaced is not None:  # another thread reserved at the same time
                    self._put_back(bucket.key, replaced)
                self._reserved[bucket.key] = reserved
        return decision

    def _count_demand(self, key: str, now: float, lifetime: float) -> int:
        demand = self._demand.get(key)
        if demand is None:
            if len(self._demand) >= self._DEMAND_LIMIT:
                self._forget_idle(now, lifetime)
            demand = self._demand[key] = _Demand(since=now)
        elif now - demand.since >= lifetime:
            demand.previous = demand.current if now - demand.since < 2 * lifetime else 0
            demand.current = 0
            demand.since = now
        demand.current += 1
        return max(demand.previous, demand.current)

    def _forget_idle(self, now: float, lifetime: float) -> None:
        # Their unused slots stay counted until the window passes them: the safe side.
        for key in [k for k, d in self._demand.items() if now - d.since >= 2 * lifetime]:
            del self._demand[key]
            self._reserved.pop(key, None)
            self._unused.pop(key, None)

    def _put_back(self, key: str, reserved: _Reserved) -> None:
        del self._reserved[key]
        if reserved.used < reserved.size:
            self._unused.setdefault(key, []).append((reserved.member, reserved.used, reserved.size))


def _decision_from_reserve(bucket: Bucket, reserved: _Reserved, now: float) -> Decision:
    usage = Usage(
        bucket=bucket,
        remaining=max(0, reserved.remaining - reserved.used),
        reset=max(0.0, reserved.reset_at - now),
        counted=True,
    )
    return Decision(admitted=True, member=f"{reserved.member}:{reserved.used - 1}", usages=(usage,))


_reserves = _Reserves()


def _forget_reserves_in_child() -> None:
    # A forked child's slots are its parent's. A fresh instance, not `clear()`: another
    # thread of the parent may have held the lock at the fork, and would never release it.
    global _reserves
    _reserves = _Reserves()


os.register_at_fork(after_in_child=_forget_reserves_in_child)


def forget_reserves() -> None:
    """Drops this process's reserved slots and demand (they stay counted in Redis)."""
    _reserves.clear()
