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

When Redis is unavailable the check fails open: the request is admitted, and one warning
per outage says limits are off.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from redis.commands.core import Script

from cyberlab import redis_client

logger = logging.getLogger(__name__)

KEY_PREFIX = "ratelimit"

# KEYS: the buckets. ARGV[1]: the member naming this request; then per bucket its limit
# and window in microseconds. Returns {admitted, then per bucket: count before this
# request, microseconds until its oldest counted request leaves the window (0 if empty)}.
_HIT_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local member = ARGV[1]
local admitted = 1
local result = {0}
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    local window = tonumber(ARGV[2 * i + 1])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local count = redis.call('ZCARD', key)
    local reset = 0
    if count > 0 then
        local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        reset = tonumber(oldest[2]) + window - now
    end
    if count >= limit then
        admitted = 0
    end
    result[2 * i] = count
    result[2 * i + 1] = reset
end
if admitted == 1 then
    for i, key in ipairs(KEYS) do
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[2 * i + 1]) / 1000))
    end
end
result[1] = admitted
return result
"""
# redis-py's Script: EVALSHA, and the source again when Redis has forgotten it.
_hit_script = Script(None, _HIT_LUA.encode())
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


def hit(buckets: Sequence[Bucket]) -> Decision | None:
    """Admits and counts one request in every bucket, or refuses it and counts nothing.

    One round trip. Returns None when Redis is unavailable: the caller admits (fail open).
    """
    if not buckets:
        return Decision(admitted=True, member="", usages=())
    member = secrets.token_hex(8)
    args: list[int | str] = [member]
    for bucket in buckets:
        args += [bucket.rate.limit, _micros(bucket.rate.window)]
    try:
        with redis_client.connection() as client:
            raw = _hit_script(keys=[b.key for b in buckets], args=args, client=client)
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


def _warn_fail_open() -> None:
    global _warned_outage
    outage = redis_client.incident.down_since
    if outage is not None and outage == _warned_outage:
        return
    _warned_outage = outage
    logger.warning("Rate limits are not enforced while Redis is unavailable (failing open)")
