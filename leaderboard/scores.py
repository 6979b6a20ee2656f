"""How a learner's points and reach time become one sorted-set score, and back.

A board is a sorted set read in ascending order (ZRANGE, ZRANK):

    score = -points * 2**32 + seconds_since_2000

so more points come first and, among equal points, the earlier reach time; equal scores
(same points reached in the same second) fall back to the member (`keys.member`), whose
byte order is numeric order: the lower user id first. (Descending order, ZREVRANGE, would
put the higher id first among equal scores, which is why the board is not stored the
other way round.) The score is an exact integer in a double while |score| < 2**53, which
holds for points up to MAX_POINTS (2**21 - 1 = 2,097,151) and reach times from 2000-01-01
to 2136-02-07 UTC (2**32 seconds). Dividing by 2**32 is exact in binary floating point,
so a score decodes back to (points, seconds) without rounding.

The Lua scripts (leaderboard.scripts) compute the same encoding inside Redis.
"""

from __future__ import annotations

import datetime

POINTS_SHIFT = 2**32
MAX_POINTS = 2**21 - 1
EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
MAX_SECONDS = POINTS_SHIFT - 1


class BoundExceeded(ValueError):
    """Points or a reach time outside what the score encodes exactly."""


def reach_seconds(moment: datetime.datetime) -> int:
    """Whole seconds since EPOCH: the reach-time resolution of every board."""
    seconds = (moment - EPOCH) // datetime.timedelta(seconds=1)
    if not 0 <= seconds <= MAX_SECONDS:
        raise BoundExceeded(f"{moment.isoformat()} is outside the leaderboard's time range")
    return seconds


def encode(*, points: int, seconds: int) -> int:
    if not 0 < points <= MAX_POINTS:
        raise BoundExceeded(f"{points} points is outside 1..{MAX_POINTS}")
    if not 0 <= seconds <= MAX_SECONDS:
        raise BoundExceeded(f"{seconds} s is outside 0..{MAX_SECONDS}")
    return -points * POINTS_SHIFT + seconds


def decode(score: float) -> tuple[int, datetime.datetime]:
    """(points, reach time) of a stored score."""
    value = int(score)
    points = -(value // POINTS_SHIFT)
    seconds = value + points * POINTS_SHIFT
    return points, EPOCH + datetime.timedelta(seconds=seconds)
