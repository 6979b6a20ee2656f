"""The leaderboard's Lua scripts: every change touching more than one key is one script,
so a reader never sees half an update, and each read of a page is one round trip.

Each is a redis-py `Script`, called as `SCRIPT(keys=..., args=..., client=...)` with the
client of the request (redis-py sends EVALSHA and loads the script when Redis lacks it).
The comment above each names its KEYS and ARGV in order.

Idempotency. A solve is applied at most once: `leaderboard:cursor` is a watermark (every
solve with an id at or below it has been applied) and `leaderboard:applied` holds the ids
above it that have been applied. Replaying an event, or a catch-up pass that meets a solve
the event already delivered, changes nothing. The cursor's presence also means "the board
has been built": without it a live update is refused and the board is rebuilt.
"""

from __future__ import annotations

from redis.commands.core import Script

from leaderboard.scores import MAX_POINTS, POINTS_SHIFT


def _script(source: str) -> Script:
    # Given as bytes, the script needs no client to hash it: one object serves every client.
    return Script(None, source.encode())


# The score encoding of leaderboard.scores, in Lua; '%.17g' writes the integer exactly.
_SCORES = f"""
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

# The display names (KEYS[3]) of the members of a ZRANGE ... WITHSCORES reply, in order;
# HMGET in chunks because unpack() of a whole large board would overflow Lua's stack.
_NAMES_OF = """
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

# Adds one solve to every board it counts on.
# KEYS: cursor, applied, excluded, names, stale, boards, then the boards (global first)
# ARGV: solve id, member, name, points (0 when the caller knows the learner is left out),
#       seconds, then an expire-at in ms per board (0: none)
# Returns 1 applied, 0 already applied or no effect, -1 not built (the snapshot is then
# marked stale all the same).
APPLY = _script(
    _SCORES
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

# Writes a learner's whole standing, recomputed from Postgres, in one step.
# KEYS: cursor, applied, excluded, names, stale, boards, the global board, other boards...
# ARGV: member, excluded (0/1), name, n, n solve ids, then per board: points, seconds,
#       expire-at ms
# Returns 1, or -1 when the board is not built.
USER_SET = _script(
    _SCORES
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

# A learner's new name, stored only while they are on a board (names hold no one else).
# KEYS: names, stale, the boards the learner may be on...
# ARGV: member, name
# Returns 1 renamed, 0 not on any board.
RENAME = _script(
    """
local shown = false
for i = 3, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then shown = true end
end
if not shown then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], '1')
return 1
"""
)

# A page of a board with its names.
# KEYS: cursor, board, names
# ARGV: start, stop (0-based ranks, inclusive; -1 the last)
# Returns {0} when not built, else {1, count, member/score pairs, names}.
PAGE = _script(
    _NAMES_OF
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local rows = redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2], 'WITHSCORES')
return {1, redis.call('ZCARD', KEYS[2]), rows, names_of(rows)}
"""
)

# A learner's rank and the rows around it.
# KEYS: cursor, board, names
# ARGV: member, radius
# Returns {0} when not built; {1, count, -1, {}, {}} when the learner is not on the board;
# else {1, count, rank of the first row, member/score pairs, names, the learner's rank}.
AROUND = _script(
    _NAMES_OF
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

# Moves the cursor forward (never back) and forgets the applied ids it now covers.
# KEYS: cursor, applied
# ARGV: new cursor
# Returns 1 moved, 0 not moved, -1 not built.
ADVANCE = _script(
    """
local cursor = redis.call('GET', KEYS[1])
if not cursor then return -1 end
if tonumber(ARGV[1]) > tonumber(cursor) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  return 1
end
return 0
"""
)

# Swaps a staged rebuild in: every board that exists now goes, the staged keys take the
# final names, and the cursor is set.
# KEYS: boards, cursor, stale, then (staged, final) pairs
# ARGV: cursor, then per pair: expire-at ms (0: keep forever)
# Board keys are also read from the `boards` set, which works on a single server (the
# deployment this project supports) but not on Redis Cluster.
SWAP = _script(
    """
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
)
