"""Every Redis key of the leaderboard, and how a learner is named inside them.

The names are part of the operators' contract (DESIGN.md, "Redis keys"): each is built
here and nowhere else.
"""

from __future__ import annotations

import datetime

PREFIX = "leaderboard"
# A learner's member in the boards and sets: the user id padded to twelve digits, so
# byte order is numeric order (equal scores on a board then rank the lower id first).
MEMBER_DIGITS = 12


# What the near cache hears about (cyberlab.nearcache): every board key.
NEAR_CACHE_PREFIXES = ("leaderboard:",)


def board_deps(board: str) -> tuple[str, ...]:
    """The keys a page or my-rank read of `board` depends on: a solve, a rename, a hidden
    learner and a rebuild each change one of them."""
    return (cursor_key(), board, names_key())


def member(user_id: int) -> str:
    return f"{user_id:0{MEMBER_DIGITS}d}"


def live_key() -> str:
    """The global board (sorted set)."""
    return f"{PREFIX}:live"


def course_key(*, course_id: int) -> str:
    """One course's board (sorted set)."""
    return f"{PREFIX}:course:{course_id}"


def weekly_key(*, week_start: datetime.date) -> str:
    """The board of the week starting on that Monday (sorted set, expires after the week)."""
    return f"{PREFIX}:weekly:{week_start.isoformat()}"


def snapshot_key() -> str:
    """The full global standings as the rendered JSON body of the API's answer."""
    return f"{PREFIX}:all"


def stale_key() -> str:
    """Set when a board changes: the next reader of the snapshot rebuilds it."""
    return f"{PREFIX}:stale"


def snapshot_lock_key() -> str:
    """Held by the one reader rebuilding the snapshot."""
    return f"{PREFIX}:lock:snapshot"


def rebuild_lock_key() -> str:
    """Held while a rebuild is queued or running, so a burst of readers queues one."""
    return f"{PREFIX}:lock:rebuild"


def names_key() -> str:
    """Display names of the learners on the boards (hash: member -> name)."""
    return f"{PREFIX}:names"


def excluded_key() -> str:
    """Members left out of every board: hidden learners (and staff, unless included)."""
    return f"{PREFIX}:excluded"


def cursor_key() -> str:
    """Every solve with an id at or below this one is applied; absent: board not built."""
    return f"{PREFIX}:cursor"


def applied_key() -> str:
    """Ids of applied solves above the cursor (sorted set scored by id)."""
    return f"{PREFIX}:applied"


def boards_key() -> str:
    """Every board key that exists, so a rebuild can replace them all in one step."""
    return f"{PREFIX}:boards"


def rebuild_key(*, token: str, key: str) -> str:
    """Where a rebuild stages `key` before swapping it in."""
    return f"{PREFIX}:rebuild:{token}:{key}"


def first_blood_key(*, flag_id: int) -> str:
    """Claimed by the receiver that announces the flag's first solve."""
    return f"leaderboard:first_blood:{flag_id}"
