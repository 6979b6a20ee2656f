"""The live boards in Redis: the writes that keep them in step, the reads that serve them.

Keys are named in leaderboard.keys, scores encoded as leaderboard.scores explains, and
every change or read touching more than one key is one script of leaderboard.scripts.
Each function here is one round trip.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from cyberlab import redis_client
from leaderboard import keys, scripts
from leaderboard.scores import decode

# What the scripts answer when the boards have not been built (no cursor).
NOT_BUILT = -1


def _bookkeeping_keys() -> list[str]:
    """The first KEYS of the apply and user-set scripts, in their order."""
    return [
        keys.cursor_key(),
        keys.applied_key(),
        keys.excluded_key(),
        keys.names_key(),
        keys.stale_key(),
        keys.boards_key(),
    ]


# --- writes -------------------------------------------------------------------


@dataclass(frozen=True)
class BoardScore:
    """A learner's standing on one board, to be written as a whole."""

    key: str
    points: int
    seconds: int
    expire_at_ms: int = 0


def apply_solve(
    *,
    solve_id: int,
    user_id: int,
    name: str,
    points: int,
    seconds: int,
    boards: Sequence[tuple[str, int]],
    excluded: bool = False,
) -> int:
    """Adds one solve to `boards` ((key, expire-at ms) pairs, the global board first).

    A solve of a learner left out (`excluded` here or in the excluded set) is only
    recorded as applied. 1 when applied, 0 when it was already applied (or changes
    nothing), NOT_BUILT when there is no board to apply it to.
    """
    script_keys = [*_bookkeeping_keys(), *(key for key, _ in boards)]
    args = [solve_id, keys.member(user_id), name, 0 if excluded else points, seconds, *(e for _, e in boards)]
    with redis_client.connection() as client:
        return int(scripts.APPLY(keys=script_keys, args=args, client=client))


def user_set(
    *, user_id: int, name: str, excluded: bool, solve_ids: Sequence[int], boards: Sequence[BoardScore]
) -> int:
    """Writes a learner's whole standing at once (boards[0] must be the global board):
    1, or NOT_BUILT."""
    script_keys = [*_bookkeeping_keys(), *(board.key for board in boards)]
    args: list = [keys.member(user_id), "1" if excluded else "0", name, len(solve_ids), *solve_ids]
    for board in boards:
        args.extend([board.points, board.seconds, board.expire_at_ms])
    with redis_client.connection() as client:
        return int(scripts.USER_SET(keys=script_keys, args=args, client=client))


def user_rename(*, user_id: int, name: str, board_keys: Sequence[str]) -> bool:
    """Stores a learner's new name if they are on one of `board_keys`."""
    script_keys = [keys.names_key(), keys.stale_key(), *board_keys]
    with redis_client.connection() as client:
        return bool(scripts.RENAME(keys=script_keys, args=[keys.member(user_id), name], client=client))


def advance_cursor(*, solve_id: int) -> int:
    with redis_client.connection() as client:
        return int(
            scripts.ADVANCE(keys=[keys.cursor_key(), keys.applied_key()], args=[solve_id], client=client)
        )


def read_cursor() -> int | None:
    """The cursor; None when the boards have not been built."""
    with redis_client.connection() as client:
        value = client.get(keys.cursor_key())
    return None if value is None else int(value)


# --- reads --------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    user_id: int
    name: str
    points: int
    reached_at: datetime.datetime


def _row(raw_member: bytes, score: float, name: bytes | None) -> Row:
    points, reached_at = decode(score)
    user_id = int(raw_member)
    return Row(user_id, name.decode() if name else str(user_id), points, reached_at)


def _rows(flat: list, names: list) -> list[Row]:
    """Rows of a script's reply: member, score, member, score..., and the names in order."""
    return [_row(flat[index], float(flat[index + 1]), names[index // 2]) for index in range(0, len(flat), 2)]


def _read_keys(board: str) -> list[str]:
    """The KEYS of the page and around scripts."""
    return [keys.cursor_key(), board, keys.names_key()]


def page(*, board: str, start: int, stop: int) -> tuple[int, list[Row]] | None:
    """(count, rows start..stop inclusive, stop -1 for all); None when not built."""
    with redis_client.connection() as client:
        result = scripts.PAGE(keys=_read_keys(board), args=[start, stop], client=client)
    if not result[0]:
        return None
    return int(result[1]), _rows(result[2], result[3])


def page_all(*, board: str) -> tuple[int, list[Row]] | None:
    """Every row of a board; None when not built.

    Not a script: a script would hold Redis for the whole read of a large board (tens of
    milliseconds for 10,000 rows), while MULTI queues three plain commands Redis answers
    in a few; parsing the reply then costs this process, not everyone.
    """
    with redis_client.connection() as client:
        pipe = client.pipeline(transaction=True)
        pipe.exists(keys.cursor_key())
        pipe.zrange(board, 0, -1, withscores=True)
        pipe.hgetall(keys.names_key())
        built, flat, names = pipe.execute()
    if not built:
        return None
    rows = [_row(raw_member, score, names.get(raw_member)) for raw_member, score in flat]
    return len(rows), rows


def around(*, board: str, user_id: int, radius: int) -> tuple[int, int | None, int, list[Row]] | None:
    """(count, my 0-based rank or None, 0-based rank of rows[0], rows); None when not built."""
    with redis_client.connection() as client:
        result = scripts.AROUND(keys=_read_keys(board), args=[keys.member(user_id), radius], client=client)
    if not result[0]:
        return None
    count, start = int(result[1]), int(result[2])
    if start < 0:
        return count, None, 0, []
    return count, int(result[5]), start, _rows(result[3], result[4])
