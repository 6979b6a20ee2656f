"""Live machine state in Redis: the keys, and the scripts that change them atomically.

    vm:state:{user_id}:{lab_id}  hash   one learner's machine for one lab
    vm:expiry                    zset   "{user_id}:{lab_id}" scored by expiry (epoch s)
    vm:user:{user_id}            set    lab ids with a machine (a learner's list, no SCAN)
    vm:closed:{session_id}       string a closed session: later writes of it are refused
    vm:lock:{name}               string the sweeper's / reconciler's short lock
    vm:netpool:{platform}        set    idle isolated networks ready for the next start

Redis is a projection of the ledger (VMSession rows), never the only copy: each write
carries the row's version and is refused when Redis already holds a newer one, so
state is only ever rolled forward. The scripts read keys they are not passed (a
learner's other machines), so this store expects one Redis server, not a cluster.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils.dateparse import parse_datetime

from cyberlab import redis_client
from vms.models import VMSession, VMStatus

LIVE = ("provisioning", "running")


def state_key(*, user_id: int, lab_id: int) -> str:
    return f"vm:state:{user_id}:{lab_id}"


def state_key_prefix(*, user_id: int) -> str:
    return f"vm:state:{user_id}:"


def expiry_key() -> str:
    return "vm:expiry"


def expiry_member(*, user_id: int, lab_id: int) -> str:
    return f"{user_id}:{lab_id}"


def parse_expiry_member(member: str | bytes) -> tuple[int, int]:
    text = member.decode() if isinstance(member, bytes) else member
    user_id, lab_id = text.split(":", 1)
    return int(user_id), int(lab_id)


def user_key(*, user_id: int) -> str:
    return f"vm:user:{user_id}"


def closed_key(*, session_id: str) -> str:
    return f"vm:closed:{session_id}"


def lock_key(*, name: str) -> str:
    return f"vm:lock:{name}"


def network_pool_key(*, platform: str) -> str:
    return f"vm:netpool:{platform}"


STATE_PATTERN = "vm:state:*"


# --- scripts --------------------------------------------------------------------

CLAIM = """
local state, userset, expiry = KEYS[1], KEYS[2], KEYS[3]
local status = redis.call('HGET', state, 'status')
if status == 'provisioning' or status == 'running' then
  return {'live', unpack(redis.call('HGETALL', state))}
end
local active = 0
for _, lab in ipairs(redis.call('SMEMBERS', userset)) do
  if lab ~= ARGV[2] then
    local other = redis.call('HGET', ARGV[8] .. lab, 'status')
    if other == 'provisioning' or other == 'running' then
      active = active + 1
    elseif not other then
      redis.call('SREM', userset, lab)
    end
  end
end
if active >= tonumber(ARGV[6]) then return {'user_limit'} end
local total = redis.call('ZCARD', expiry)
if redis.call('ZSCORE', expiry, ARGV[3]) then total = total - 1 end
if total >= tonumber(ARGV[7]) then return {'total_limit'} end
redis.call('DEL', state)
redis.call('HSET', state, unpack(ARGV, 9))
redis.call('PEXPIRE', state, ARGV[5])
redis.call('SADD', userset, ARGV[2])
redis.call('ZADD', expiry, ARGV[4], ARGV[3])
return {'claimed'}
"""

PUT = """
local state, userset, expiry, closed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', closed) == 1 then return 0 end
local current = redis.call('HGET', state, 'session_id')
if current and current ~= ARGV[1] then
  local status = redis.call('HGET', state, 'status')
  if (status == 'provisioning' or status == 'running') and current ~= ARGV[8] then return 0 end
elseif current then
  if tonumber(redis.call('HGET', state, 'version') or '0') > tonumber(ARGV[2]) then return 0 end
end
redis.call('DEL', state)
redis.call('HSET', state, unpack(ARGV, 9))
redis.call('PEXPIRE', state, ARGV[6])
if ARGV[7] == '1' then
  redis.call('SADD', userset, ARGV[3])
  redis.call('ZADD', expiry, ARGV[5], ARGV[4])
else
  redis.call('SREM', userset, ARGV[3])
  redis.call('ZREM', expiry, ARGV[4])
end
return 1
"""

DROP = """
local state, userset, expiry, closed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if ARGV[4] == '1' then redis.call('SET', closed, '1', 'EX', ARGV[5]) end
local current = redis.call('HGET', state, 'session_id')
if current == ARGV[1] or not current then
  redis.call('DEL', state)
  redis.call('SREM', userset, ARGV[2])
  redis.call('ZREM', expiry, ARGV[3])
  return 1
end
return 0
"""

# A learner's machines in one round trip: their lab ids, then the state of each.
USER_STATES = """
local states = {}
for _, lab in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fields = redis.call('HGETALL', ARGV[1] .. lab)
  if #fields > 0 then states[#states + 1] = fields end
end
return states
"""

# Drops a stale index entry: one whose state is gone or no longer live.
FORGET = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'provisioning' or status == 'running' or status == 'stopping' then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""


def _script(client, source: str):
    """A registered script (EVALSHA, falling back to EVAL once after a Redis restart)."""
    return client.register_script(source)


# --- snapshots -------------------------------------------------------------------


def snapshot(session: VMSession) -> dict[str, str]:
    """The hash fields of a ledger row, exactly as Redis stores them."""
    status = session.status
    if status == VMStatus.STOPPING and session.stop_reason == "failed":
        # The learner asked for a machine and it failed; its cleanup is still running.
        status = VMStatus.FAILED
    return {
        "session_id": str(session.pk),
        "user_id": str(session.user_id),
        "lab_id": str(session.lab_id),
        "status": str(status),
        "provider": session.provider,
        "instance_id": session.instance_id,
        "connection": json.dumps(session.connection or {}, separators=(",", ":")),
        "started_at": session.started_at.isoformat(),
        "expires_at": session.expires_at.isoformat(),
        "renewals": str(session.renewals),
        "reason": session.failure,
        "version": str(session.version),
    }


@dataclass(frozen=True)
class MachineState:
    """One machine as learners and staff are shown it, read from its stored fields."""

    session_id: str
    user_id: int
    lab_id: int
    status: str
    provider: str
    instance_id: str
    connection: dict | None
    started_at: datetime | None
    expires_at: datetime | None
    renewals: int
    reason: str | None

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> MachineState:
        status = fields.get("status", "")
        expires_at = _datetime(fields.get("expires_at"))
        reason = fields.get("reason") or None
        if status == VMStatus.RUNNING and expires_at is not None and expires_at.timestamp() <= time.time():
            # Past its expiry a machine is being torn down, however soon the sweeper
            # gets to it: never shown running with nothing left, nor extendable.
            status, reason = VMStatus.STOPPING, "expired"
        return cls(
            session_id=fields.get("session_id", ""),
            user_id=int(fields.get("user_id") or 0),
            lab_id=int(fields.get("lab_id") or 0),
            status=status,
            provider=fields.get("provider", ""),
            instance_id=fields.get("instance_id", ""),
            # Until the machine runs, its ports lead nowhere: no connection is shown.
            connection=_connection(fields.get("connection")) if status == VMStatus.RUNNING else None,
            started_at=_datetime(fields.get("started_at")),
            expires_at=expires_at,
            renewals=int(fields.get("renewals") or 0),
            reason=reason,
        )

    @classmethod
    def of(cls, session: VMSession) -> MachineState:
        return cls.from_fields(snapshot(session))

    @property
    def is_live(self) -> bool:
        return self.status in LIVE

    @property
    def seconds_left(self) -> int:
        return max(0, int(self.expires_at.timestamp() - time.time())) if self.expires_at else 0

    @property
    def renewals_left(self) -> int:
        return max(0, settings.VM_MAX_RENEWALS - self.renewals)

    @property
    def can_extend(self) -> bool:
        # vm_extend's own checks but the longest lifetime: the SPA offers the button when it may work.
        return (
            self.status == VMStatus.RUNNING
            and self.renewals < settings.VM_MAX_RENEWALS
            and self.seconds_left <= settings.VM_EXTEND_WINDOW
        )


def _connection(raw: str | None) -> dict | None:
    try:
        connection = json.loads(raw) if raw else None
    except ValueError:
        return None
    return connection if isinstance(connection, dict) and connection else None


def _datetime(raw: str | None) -> datetime | None:
    return parse_datetime(raw) if raw else None


def _flatten(fields: dict[str, str]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        flat.extend((name, value))
    return flat


def _decode(raw: dict) -> dict[str, str]:
    return {_text(name): _text(value) for name, value in raw.items()}


def _pairs(flat: list) -> dict[str, str]:
    """A hash as a script returns it (name, value, name, value, ...)."""
    items = [_text(item) for item in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ttl_ms(session: VMSession, *, indexed: bool) -> int:
    if not indexed:
        return max(1000, settings.VM_FAILED_STATE_TTL * 1000)
    left = session.expires_at.timestamp() - time.time()
    return max(1000, int((left + settings.VM_STATE_GRACE) * 1000))


# --- writes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed, live, user_limit, total_limit
    state: dict[str, str]


def claim(*, session: VMSession) -> Claim:
    """Takes the learner's place for the lab in one atomic step, unless a machine holds it.

    Checks the per-learner and global machine limits on the way (how often a learner
    may start is the API's `vm_start` rate limit); `session` is the not-yet-saved ledger
    row the claim stands for.
    """
    user_id, lab_id = session.user_id, session.lab_id
    fields = snapshot(session)
    with redis_client.connection() as client:
        result = _script(client, CLAIM)(
            keys=[
                state_key(user_id=user_id, lab_id=lab_id),
                user_key(user_id=user_id),
                expiry_key(),
            ],
            args=[
                fields["session_id"],
                str(lab_id),
                expiry_member(user_id=user_id, lab_id=lab_id),
                repr(session.expires_at.timestamp()),
                _ttl_ms(session, indexed=True),
                settings.VM_MAX_PER_USER,
                settings.VM_MAX_TOTAL,
                state_key_prefix(user_id=user_id),
                *_flatten(fields),
            ],
        )
    outcome = _text(result[0])
    if outcome == "live":
        return Claim(outcome=outcome, state=_pairs(result[1:]))
    return Claim(outcome=outcome, state=fields if outcome == "claimed" else {})


def put(*, session: VMSession, replaces: str = "") -> bool:
    """Writes the row's state unless Redis holds a newer one or the session is closed.

    `replaces` names a live session this one may take the place of (a reset).
    """
    return put_many(sessions=[session], replaces=replaces) == 1


def put_many(*, sessions: list[VMSession], replaces: str = "") -> int:
    """`put` for many rows in one round trip; how many were written."""
    if not sessions:
        return 0
    with redis_client.connection() as client:
        script = _script(client, PUT)
        pipe = client.pipeline(transaction=False)
        for session in sessions:
            fields = snapshot(session)
            indexed = session.is_open and fields["status"] != VMStatus.FAILED
            script(
                keys=[
                    state_key(user_id=session.user_id, lab_id=session.lab_id),
                    user_key(user_id=session.user_id),
                    expiry_key(),
                    closed_key(session_id=str(session.pk)),
                ],
                args=[
                    fields["session_id"],
                    fields["version"],
                    str(session.lab_id),
                    expiry_member(user_id=session.user_id, lab_id=session.lab_id),
                    repr(session.expires_at.timestamp()),
                    _ttl_ms(session, indexed=indexed),
                    "1" if indexed else "0",
                    replaces,
                    *_flatten(fields),
                ],
                client=pipe,
            )
        return sum(int(result) for result in pipe.execute())


def drop(*, session_id: str, user_id: int, lab_id: int, closed: bool = True) -> bool:
    """Removes the session's keys (never another session's); marks it closed first."""
    return drop_many(entries=[(session_id, user_id, lab_id)], closed=closed) == 1


def drop_many(*, entries: list[tuple[str, int, int]], closed: bool = True) -> int:
    if not entries:
        return 0
    with redis_client.connection() as client:
        script = _script(client, DROP)
        pipe = client.pipeline(transaction=False)
        for session_id, user_id, lab_id in entries:
            script(
                keys=[
                    state_key(user_id=user_id, lab_id=lab_id),
                    user_key(user_id=user_id),
                    expiry_key(),
                    closed_key(session_id=session_id),
                ],
                args=[
                    session_id,
                    str(lab_id),
                    expiry_member(user_id=user_id, lab_id=lab_id),
                    "1" if closed else "0",
                    settings.VM_CLOSED_MARKER_TTL,
                ],
                client=pipe,
            )
        return sum(int(result) for result in pipe.execute())


# --- reads -------------------------------------------------------------------------


def get(*, user_id: int, lab_id: int) -> dict[str, str]:
    """The machine's state in one round trip ({} when Redis has none)."""
    with redis_client.connection() as client:
        return _decode(client.hgetall(state_key(user_id=user_id, lab_id=lab_id)))


def for_user(*, user_id: int) -> list[dict[str, str]]:
    """A learner's machines in one round trip, by lab id ([] when Redis has none)."""
    with redis_client.connection() as client:
        found = _script(client, USER_STATES)(
            keys=[user_key(user_id=user_id)], args=[state_key_prefix(user_id=user_id)]
        )
    states = [_pairs(flat) for flat in found]
    return sorted(states, key=lambda fields: int(fields.get("lab_id") or 0))


def page(*, offset: int, limit: int) -> tuple[int, list[dict[str, str]]]:
    """Live machines soonest-expiring first: (how many there are, this page)."""
    with redis_client.connection() as client:
        pipe = client.pipeline(transaction=False)
        pipe.zcard(expiry_key())
        pipe.zrange(expiry_key(), offset, offset + limit - 1)
        total, members = pipe.execute()
        states = [fields for fields in _hashes(client, members) if fields]
    return int(total), states


def due(*, until: float, limit: int) -> list[tuple[tuple[int, int], dict[str, str]]]:
    """Machines whose expiry is at or before `until`, with their state ({} if forgotten)."""
    with redis_client.connection() as client:
        members = client.zrangebyscore(expiry_key(), "-inf", repr(until), start=0, num=limit)
        return [
            (parse_expiry_member(member), fields)
            for member, fields in zip(members, _hashes(client, members), strict=True)
        ]


def forget_members(*, members: list[tuple[int, int]]) -> int:
    """Drops index entries whose state is gone or not live; a live state keeps its entry."""
    if not members:
        return 0
    with redis_client.connection() as client:
        script = _script(client, FORGET)
        pipe = client.pipeline(transaction=False)
        for user_id, lab_id in members:
            script(
                keys=[state_key(user_id=user_id, lab_id=lab_id), user_key(user_id=user_id), expiry_key()],
                args=[str(lab_id), expiry_member(user_id=user_id, lab_id=lab_id)],
                client=pipe,
            )
        return sum(int(result) for result in pipe.execute())


def all_states() -> list[dict[str, str]]:
    """Every state key, found with SCAN (operators' tools and the reconciler only)."""
    with redis_client.connection() as client:
        keys = list(client.scan_iter(match=STATE_PATTERN, count=1000))
        if not keys:
            return []
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        states = []
        for key, raw in zip(keys, pipe.execute(), strict=True):
            if raw:
                state = _decode(raw)
                state["key"] = _text(key)
                states.append(state)
        return states


def index_members() -> list[tuple[int, int]]:
    with redis_client.connection() as client:
        return [parse_expiry_member(member) for member in client.zrange(expiry_key(), 0, -1)]


def _hashes(client, members) -> list[dict[str, str]]:
    """The state of each expiry member in one round trip, in order ({} where it is gone)."""
    if not members:
        return []
    pipe = client.pipeline(transaction=False)
    for member in members:
        user_id, lab_id = parse_expiry_member(member)
        pipe.hgetall(state_key(user_id=user_id, lab_id=lab_id))
    return [_decode(raw) for raw in pipe.execute()]


# --- the short lock -----------------------------------------------------------------


def lock_acquire(*, name: str, ttl: float) -> str | None:
    """A token when the lock was taken, None when someone holds it."""
    return redis_client.lock_acquire(lock_key(name=name), ttl=ttl)


def lock_release(*, name: str, token: str) -> None:
    redis_client.lock_release(lock_key(name=name), token)


# --- the warm pool of machine networks -------------------------------------------------


def network_pool_take(*, platform: str) -> str | None:
    """One idle network, atomically: no two starts ever get the same one."""
    with redis_client.connection() as client:
        name = client.spop(network_pool_key(platform=platform))
    return None if name is None else _text(name)


def network_pool_add(*, platform: str, names: list[str]) -> None:
    if names:
        with redis_client.connection() as client:
            client.sadd(network_pool_key(platform=platform), *names)


def network_pool_members(*, platform: str) -> set[str]:
    with redis_client.connection() as client:
        return {_text(name) for name in client.smembers(network_pool_key(platform=platform))}


def network_pool_forget(*, platform: str, names: list[str]) -> None:
    if names:
        with redis_client.connection() as client:
            client.srem(network_pool_key(platform=platform), *names)
