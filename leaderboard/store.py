"""The leaderboard's Redis keys, its score encoding and the Lua scripts that change them.

Every leaderboard key is built by a function here and every multi-key change is one Lua
script, so a reader never sees half an update.

Score encoding. A board is a sorted set read in ascending order (ZRANGE, ZRANK):

    score = -points * 2**32 + seconds_since_2000

so more points come first and, among equal points, the earlier reach time; equal scores
(same points reached in the same second) fall back to the member, the user id padded to
twelve digits, whose byte order is numeric order: the lower user id first. (Descending
order, ZREVRANGE, would put the higher id first among equal scores, which is why the
board is not stored the other way round.) The score is an exact integer in a double while
|score| < 2**53, which holds for points up to MAX_POINTS (2**21 - 1 = 2,097,151) and reach
times from 2000-01-01 to 2136-02-07 UTC (2**32 seconds). Dividing by 2**32 is exact in
binary floating point, so a score decodes back to (points, seconds) without rounding.

Idempotency. A solve is applied at most once: `leaderboard:cursor` is a watermark (every
solve with an id at or below it has been applied) and `leaderboard:applied` holds the ids
above it that have been applied. Replaying an event, or a catch-up pass that meets a solve
the event already delivered, changes nothing. The cursor's presence also means "the board
has been built": without it a live update is refused and the board is rebuilt.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis
from redis.commands.core import Script

from cyberlab import nearcache, redis_client

POINTS_SHIFT = 2**32
MAX_POINTS = 2**21 - 1
EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
MAX_SECONDS = POINTS_SHIFT - 1
MEMBER_DIGITS = 12

PREFIX = "leaderboard"


# --- keys ---------------------------------------------------------------------


# What the near cache hears about: every leaderboard key.
NEAR_CACHE_PREFIXES = ("leaderboard:",)


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
    """The full global standings as JSON, the seed's cached leaderboard."""
    return f"{PREFIX}:all"


def stale_key() -> str:
    """Set when a board changes: the next reader of the snapshot rebuilds it."""
    return f"{PREFIX}:stale"


def snapshot_lock_key() -> str:
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


def member(user_id: int) -> str:
    return f"{user_id:0{MEMBER_DIGITS}d}"


# --- score encoding -------------------------------------------------------------


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


# --- Lua ----------------------------------------------------------------------

_LUA_COMMON = f"""
local SHIFT = {POINTS_SHIFT}
local MAX_POINTS = {MAX_POINTS}
local function decode(score)
  local s = tonumber(score)
  local p = math.ceil(-s / SHIFT)
  return p, s + p * SHIFT
end
local function encode(p, t)
  return string.format('%.17g', -p * SHIFT + t)
end
"""

# KEYS: cursor, applied, excluded, names, stale, boards, board...
# ARGV: solve id, member, name, points (0 when the caller knows the learner is left out),
#       seconds, expire-at ms per board (0: none)
_APPLY = (
    _LUA_COMMON
    + """
local cursor = redis.call('GET', KEYS[1])
if not cursor then
  redis.call('SET', KEYS[5], '1')
  return -1
end
local id = tonumber(ARGV[1])
if id <= tonumber(cursor) then return 0 end
if redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[1]) == 0 then return 0 end
local points = tonumber(ARGV[4])
if points <= 0 or redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return 0 end
local t = tonumber(ARGV[5])
local scores = {}
for i = 7, #KEYS do
  local p, last = points, t
  local old = redis.call('ZSCORE', KEYS[i], ARGV[2])
  if old then
    local op, ot = decode(old)
    p = p + op
    if ot > last then last = ot end
  end
  if p > MAX_POINTS then
    return redis.error_reply('leaderboard bound exceeded: ' .. p .. ' points')
  end
  scores[i] = encode(p, last)
end
for i = 7, #KEYS do
  redis.call('ZADD', KEYS[i], scores[i], ARGV[2])
  local expire_at = tonumber(ARGV[i - 1])
  if expire_at > 0 then redis.call('PEXPIREAT', KEYS[i], expire_at) end
  redis.call('SADD', KEYS[6], KEYS[i])
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('SET', KEYS[5], '1')
return 1
"""
)

# KEYS: cursor, applied, excluded, names, stale, boards, global board, other boards...
# ARGV: member, excluded (0/1), name, n, n solve ids, then per board: points, seconds, expire-at
_USER_SET = (
    _LUA_COMMON
    + """
redis.call('SET', KEYS[5], '1')
local cursor = redis.call('GET', KEYS[1])
if not cursor then return -1 end
local c = tonumber(cursor)
local n = tonumber(ARGV[4])
for i = 1, n do
  local id = ARGV[4 + i]
  if tonumber(id) > c then redis.call('ZADD', KEYS[2], 'NX', id, id) end
end
local hidden = ARGV[2] == '1'
if hidden then
  redis.call('SADD', KEYS[3], ARGV[1])
else
  redis.call('SREM', KEYS[3], ARGV[1])
end
for i = 7, #KEYS do
  local j = 4 + n + (i - 7) * 3
  local p = tonumber(ARGV[j + 1])
  if p > 0 and not hidden then
    redis.call('ZADD', KEYS[i], encode(p, tonumber(ARGV[j + 2])), ARGV[1])
    local expire_at = tonumber(ARGV[j + 3])
    if expire_at > 0 then redis.call('PEXPIREAT', KEYS[i], expire_at) end
    redis.call('SADD', KEYS[6], KEYS[i])
  else
    redis.call('ZREM', KEYS[i], ARGV[1])
  end
end
if redis.call('ZSCORE', KEYS[7], ARGV[1]) then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return 1
"""
)

# KEYS: names, stale, member's boards...  ARGV: member, name
_RENAME = """
local shown = false
for i = 3, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then shown = true end
end
if not shown then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], '1')
return 1
"""

_NAMES_CHUNK = """
local function names_of(rows)
  local names = {}
  local members = {}
  for i = 1, #rows, 2 do
    members[#members + 1] = rows[i]
    if #members == 500 then
      for _, v in ipairs(redis.call('HMGET', KEYS[3], unpack(members))) do names[#names + 1] = v end
      members = {}
    end
  end
  if #members > 0 then
    for _, v in ipairs(redis.call('HMGET', KEYS[3], unpack(members))) do names[#names + 1] = v end
  end
  return names
end
"""

# KEYS: cursor, board, names  ARGV: start, stop
_PAGE = (
    _NAMES_CHUNK
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local rows = redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2], 'WITHSCORES')
return {1, redis.call('ZCARD', KEYS[2]), rows, names_of(rows)}
"""
)

# KEYS: cursor, board, names  ARGV: member, radius
_AROUND = (
    _NAMES_CHUNK
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local count = redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return {1, count, -1, {}, {}} end
local start = rank - tonumber(ARGV[2])
if start < 0 then start = 0 end
local rows = redis.call('ZRANGE', KEYS[2], start, rank + tonumber(ARGV[2]), 'WITHSCORES')
return {1, count, start, rows, names_of(rows), rank}
"""
)

# KEYS: cursor, applied  ARGV: new cursor
_ADVANCE = """
local cursor = redis.call('GET', KEYS[1])
if not cursor then return -1 end
if tonumber(ARGV[1]) > tonumber(cursor) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  return 1
end
return 0
"""

# KEYS: boards, cursor, stale, then (staged, final) pairs
# ARGV: cursor, then per pair: expire-at ms (0: keep forever)
# Board keys are also read from the `boards` set, which works on a single server (the
# deployment this project supports) but not on Redis Cluster.
_SWAP = """
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('UNLINK', key) end
for i = 4, #KEYS, 2 do
  local staged, final = KEYS[i], KEYS[i + 1]
  if redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, final)
    local expire_at = tonumber(ARGV[(i - 4) / 2 + 2])
    if expire_at > 0 then
      redis.call('PEXPIREAT', final, expire_at)
    else
      redis.call('PERSIST', final)
    end
  else
    redis.call('UNLINK', final)
  end
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], '1')
return 1
"""

# KEYS: lock  ARGV: token
_scripts = {
    name: Script(None, source.encode())
    for name, source in {
        "apply": _APPLY,
        "user_set": _USER_SET,
        "rename": _RENAME,
        "page": _PAGE,
        "around": _AROUND,
        "advance": _ADVANCE,
        "swap": _SWAP,
    }.items()
}


def _run(name: str, keys: Sequence[str], args: Sequence, client: redis.Redis):
    return _scripts[name](keys=list(keys), args=list(args), client=client)


def _bookkeeping_keys() -> list[str]:
    return [cursor_key(), applied_key(), excluded_key(), names_key(), stale_key(), boards_key()]


# --- writes -------------------------------------------------------------------


@dataclass(frozen=True)
class BoardScore:
    """A learner's standing on one board, to be written as a whole."""

    key: str
    points: int
    seconds: int
    expire_at_ms: int = 0


NOT_BUILT = -1


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
    keys = [*_bookkeeping_keys(), *(key for key, _ in boards)]
    args = [solve_id, member(user_id), name, 0 if excluded else points, seconds, *(e for _, e in boards)]
    with redis_client.connection() as client:
        return int(_run("apply", keys, args, client))


def user_set(
    *, user_id: int, name: str, excluded: bool, solve_ids: Sequence[int], boards: Sequence[BoardScore]
) -> int:
    """Writes a learner's whole standing at once (boards[0] must be the global board)."""
    keys = [*_bookkeeping_keys(), *(board.key for board in boards)]
    args: list = [member(user_id), "1" if excluded else "0", name, len(solve_ids), *solve_ids]
    for board in boards:
        args.extend([board.points, board.seconds, board.expire_at_ms])
    with redis_client.connection() as client:
        return int(_run("user_set", keys, args, client))


def user_rename(*, user_id: int, name: str, board_keys: Sequence[str]) -> bool:
    with redis_client.connection() as client:
        result = _run("rename", [names_key(), stale_key(), *board_keys], [member(user_id), name], client)
    return bool(result)


def advance_cursor(*, solve_id: int) -> int:
    with redis_client.connection() as client:
        return int(_run("advance", [cursor_key(), applied_key()], [solve_id], client))


def read_cursor() -> int | None:
    with redis_client.connection() as client:
        value = client.get(cursor_key())
    return None if value is None else int(value)


# --- staged rebuild ---------------------------------------------------------------


class Staging:
    """A rebuild's keys, written aside and swapped in by one script."""

    def __init__(self, *, stage_ttl: int) -> None:
        self.token = secrets.token_hex(8)
        self.stage_ttl = stage_ttl
        self.expire_at: dict[str, int] = {}

    def staged(self, key: str) -> str:
        return rebuild_key(token=self.token, key=key)

    def write_board(self, key: str, entries: Iterator[tuple[int, int, int]], expire_at_ms: int = 0) -> None:
        """entries: (user id, points, seconds)."""
        self.expire_at[key] = expire_at_ms
        self._write_chunks(
            key,
            (
                (member(user_id), encode(points=points, seconds=seconds))
                for user_id, points, seconds in entries
            ),
            lambda pipe, staged, chunk: pipe.zadd(staged, dict(chunk)),
        )

    def write_hash(self, key: str, mapping: Iterator[tuple[str, str]]) -> None:
        self.expire_at[key] = 0
        self._write_chunks(key, mapping, lambda pipe, staged, chunk: pipe.hset(staged, mapping=dict(chunk)))

    def write_set(self, key: str, members: Iterator[str]) -> None:
        self.expire_at[key] = 0
        self._write_chunks(
            key,
            ((m, m) for m in members),
            lambda pipe, staged, chunk: pipe.sadd(staged, *(m for m, _ in chunk)),
        )

    def write_applied(self, solve_ids: Iterator[int]) -> None:
        self.expire_at[applied_key()] = 0
        self._write_chunks(
            applied_key(),
            ((str(i), i) for i in solve_ids),
            lambda pipe, staged, chunk: pipe.zadd(staged, dict(chunk)),
        )

    def _write_chunks(self, key, items, write, chunk_size: int = 1000) -> None:
        staged = self.staged(key)
        with redis_client.connection() as client:
            client.unlink(staged)
            pipe = client.pipeline(transaction=False)
            chunk: list = []
            for item in items:
                chunk.append(item)
                if len(chunk) >= chunk_size:
                    write(pipe, staged, chunk)
                    chunk = []
            if chunk:
                write(pipe, staged, chunk)
            pipe.expire(staged, self.stage_ttl)
            pipe.execute()

    def swap(self, *, cursor: int) -> None:
        """Replaces every board and bookkeeping key with the staged ones, atomically."""
        board_names = [key for key in self.expire_at if key not in _NON_BOARD_KEYS]
        self.write_set(boards_key(), iter(board_names))
        pairs = [*self.expire_at.items()]
        keys = [boards_key(), cursor_key(), stale_key()]
        args: list = [cursor]
        for key, expire_at in pairs:
            keys.extend([self.staged(key), key])
            args.append(expire_at)
        with redis_client.connection() as client:
            _run("swap", keys, args, client)

    def discard(self) -> None:
        with redis_client.connection() as client:
            client.unlink(*(self.staged(key) for key in self.expire_at))


_NON_BOARD_KEYS = {names_key(), excluded_key(), applied_key(), boards_key()}


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


def board_deps(board: str) -> tuple[str, ...]:
    """The keys a read of `board` depends on (what `page` and `around` read), for the near
    cache: a solve, a rename, a hidden learner and a rebuild each change one of them."""
    return (cursor_key(), board, names_key())


def page(*, board: str, start: int, stop: int) -> tuple[int, list[Row]] | None:
    """(count, rows start..stop inclusive, stop -1 for all); None when not built."""
    with redis_client.connection() as client:
        result = _run("page", [cursor_key(), board, names_key()], [start, stop], client)
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
        pipe.exists(cursor_key())
        pipe.zrange(board, 0, -1, withscores=True)
        pipe.hgetall(names_key())
        built, flat, names = pipe.execute()
    if not built:
        return None
    rows = [_row(raw_member, score, names.get(raw_member)) for raw_member, score in flat]
    return len(rows), rows


def around(*, board: str, user_id: int, radius: int) -> tuple[int, int | None, int, list[Row]] | None:
    """(count, my 0-based rank or None, 0-based rank of rows[0], rows); None when not built."""
    with redis_client.connection() as client:
        result = _run("around", [cursor_key(), board, names_key()], [member(user_id), radius], client)
    if not result[0]:
        return None
    count, start = int(result[1]), int(result[2])
    if start < 0:
        return count, None, 0, []
    return count, int(result[5]), start, _rows(result[3], result[4])


# --- the snapshot -------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    body: bytes | None
    stale: bool
    ttl_ms: int


def snapshot_read() -> Snapshot:
    """The snapshot, whether a solve marked it stale, and its time left.

    Kept in the near cache until the snapshot or the stale mark change (a new snapshot,
    a solve, the key expiring); the time left is counted down in memory meanwhile.
    """
    body, stale, expires_at = nearcache.read(
        snapshot_key(), _snapshot_read, deps=(snapshot_key(), stale_key())
    )
    if expires_at is None:
        return Snapshot(body=body, stale=stale, ttl_ms=-1)
    return Snapshot(body=body, stale=stale, ttl_ms=max(0, int((expires_at - time.monotonic()) * 1000)))


def _snapshot_read() -> tuple[bytes | None, bool, float | None]:
    with redis_client.connection() as client:
        pipe = client.pipeline(transaction=False)
        pipe.get(snapshot_key())
        pipe.exists(stale_key())
        pipe.pttl(snapshot_key())
        body, stale, ttl_ms = pipe.execute()
    expires_at = time.monotonic() + int(ttl_ms) / 1000 if int(ttl_ms) >= 0 else None
    return body, bool(stale), expires_at


def snapshot_write(*, body: bytes, ttl: int) -> None:
    with redis_client.connection() as client:
        client.set(snapshot_key(), body, ex=max(1, ttl))


def clear_stale() -> None:
    with redis_client.connection() as client:
        client.delete(stale_key())
