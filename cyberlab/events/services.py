"""What the platform pushes to learners: the event names, their payloads, and the one
function that publishes them (`events_publish`).

An event goes out only after the transaction that caused it commits (web and workers
alike). It is appended to a Redis Stream -- the learner's `events:user:{id}`, or
`events:broadcast` for everyone -- so a client that reconnects with `Last-Event-ID`
gets what it missed, and published on the `events:live` channel, which each web process
subscribes to once and fans out to its open streams (cyberlab.events.stream). Both
happen in one Lua script, so the replay window and the live feed never disagree.

`leaderboard` events are live only: they are coalesced per stream, and a client that
reconnects refetches the board anyway. Redis down: events are not delivered, and every
stream gets `resync` once Redis answers again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from redis.commands.core import Script

from cyberlab import redis_client
from cyberlab.text import render_markdown

MACHINE = "machine"
MACHINE_EXPIRING = "machine.expiring"
SOLVE = "solve"
FIRST_BLOOD = "first_blood"
LEADERBOARD = "leaderboard"
ANNOUNCEMENT = "announcement"
RESYNC = "resync"
# What anonymous board screens receive (GET events/public/).
PUBLIC_EVENTS = frozenset({LEADERBOARD, FIRST_BLOOD})

CHANNEL = "events:live"
BROADCAST_STREAM = "events:broadcast"


def user_stream_key(*, user_id: int) -> str:
    """The replay window of one learner's events."""
    return f"events:user:{user_id}"


def connections_key(*, user_id: int) -> str:
    """The learner's open streams, across every web process (for EVENTS_MAX_STREAMS_PER_USER)."""
    return f"events:conns:{user_id}"


# KEYS: the streams to append to. ARGV: event name, data (JSON), MAXLEN, the oldest id
# to keep (MINID), the channel. Appends to each stream, trims it, then publishes
# {"event", "data", "targets": {stream: id}} in one message.
_APPEND = Script(
    None,
    b"""
local targets = {}
for _, key in ipairs(KEYS) do
    local id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[1], 'data', ARGV[2])
    redis.call('XTRIM', key, 'MINID', '~', ARGV[4])
    targets[key] = id
end
local head = '{"event":' .. cjson.encode(ARGV[1]) .. ',"data":' .. ARGV[2]
redis.call('PUBLISH', ARGV[5], head .. ',"targets":' .. cjson.encode(targets) .. '}')
return 1
""",
)


def events_publish(
    event: str,
    data: dict[str, Any],
    *,
    user_ids: Iterable[int] = (),
    broadcast: bool = False,
    replay: bool = True,
) -> None:
    """Sends `event` to these learners (and to everyone with `broadcast`) once the current
    transaction commits; at once outside one. `replay` False: live only, not kept for
    reconnecting clients."""
    keys = [user_stream_key(user_id=user_id) for user_id in dict.fromkeys(user_ids)]
    if broadcast:
        keys.append(BROADCAST_STREAM)
    if not keys:
        return
    payload = json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"))

    def send() -> None:
        with redis_client.connection() as client:
            if replay:
                oldest = int((time.time() - settings.EVENTS_REPLAY_SECONDS) * 1000)
                _APPEND(
                    keys=keys,
                    args=[event, payload, settings.EVENTS_REPLAY_MAXLEN, oldest, CHANNEL],
                    client=client,
                )
            else:
                message = {"event": event, "targets": dict.fromkeys(keys, ""), "data": data}
                client.publish(CHANNEL, json.dumps(message, cls=DjangoJSONEncoder, separators=(",", ":")))

    transaction.on_commit(lambda: redis_client.fallback(send, None))


# Control messages on the channel, for the web processes rather than for learners.
RECHECK = "recheck"
CLOSE = "close"


def streams_recheck(*, user_id: int) -> None:
    """Asks every process to check the credentials of this learner's open streams again
    (a session revoked, a token rotated, the account deactivated), after commit."""
    _control({"control": RECHECK, "user_id": user_id})


def close_message(*, connection_ids: list[str]) -> str:
    """The message that closes these open streams, wherever they are served."""
    return json.dumps({"control": CLOSE, "connections": connection_ids})


def _control(message: dict[str, Any]) -> None:
    def send() -> None:
        with redis_client.connection() as client:
            client.publish(CHANNEL, json.dumps(message))

    transaction.on_commit(lambda: redis_client.fallback(send, None))


# --- the events ---------------------------------------------------------------------


def machine_changed(
    *,
    user_id: int,
    session_id: str,
    lab_id: int,
    status: str,
    reason: str | None,
    connection: dict | None,
    expires_at: datetime | None,
    renewals_left: int,
    can_extend: bool,
) -> None:
    """My machine's new state: provisioning, running (with its connection), stopping,
    stopped (with why: user, expired, idle, admin, failed, reset), failed (with why), or
    running with a later expiry after an extension."""
    events_publish(
        MACHINE,
        {
            "session_id": session_id,
            "lab_id": lab_id,
            "status": status,
            "reason": reason or None,
            "connection": connection,
            "expires_at": expires_at,
            "renewals_left": renewals_left,
            "can_extend": can_extend,
        },
        user_ids=[user_id],
    )


def machine_expiring(
    *,
    user_id: int,
    session_id: str,
    lab_id: int,
    expires_at: datetime,
    renewals_left: int,
    can_extend: bool,
    reason: str = "lifetime",
    final: bool = False,
) -> None:
    """My machine will be torn down at `expires_at` (VM_EXPIRY_WARNING before, and
    VM_EXPIRY_FINAL_WARNING before with `final`)."""
    events_publish(
        MACHINE_EXPIRING,
        {
            "session_id": session_id,
            "lab_id": lab_id,
            "expires_at": expires_at,
            "renewals_left": renewals_left,
            "can_extend": can_extend,
            "reason": reason,
            "final": final,
        },
        user_ids=[user_id],
    )


def solved(*, user_id: int, solve_id: int, points: int, lab_id: int | None, flag_id: int | None) -> None:
    """My solve."""
    events_publish(
        SOLVE,
        {"solve_id": solve_id, "points": points, "lab_id": lab_id, "flag_id": flag_id},
        user_ids=[user_id],
    )


def first_blood(*, flag_id: int, lab_id: int, lab_title: str, user_id: int, display_name: str) -> None:
    """A flag solved for the first time, for everyone."""
    events_publish(
        FIRST_BLOOD,
        {
            "flag_id": flag_id,
            "lab_id": lab_id,
            "lab_title": lab_title,
            "user_id": user_id,
            "display_name": display_name,
        },
        broadcast=True,
    )


def leaderboard_changed(*, top: list[dict[str, Any]]) -> None:
    """The board moved: its new top ten (every stream coalesces these to at most one per
    EVENTS_LEADERBOARD_INTERVAL; a learner's own rank is refetched from leaderboard/me/)."""
    events_publish(LEADERBOARD, {"top": top}, broadcast=True, replay=False)


def announced(
    *, announcement_id: int, title: str, body_html: str, course_id: int | None, user_ids: list[int] | None
) -> None:
    """A staff announcement: to everyone, or (`user_ids`) to a course's enrolled learners."""
    data = {"id": announcement_id, "title": title, "body_html": body_html, "course_id": course_id}
    if user_ids is None:
        events_publish(ANNOUNCEMENT, data, broadcast=True)
    else:
        events_publish(ANNOUNCEMENT, data, user_ids=user_ids)


@transaction.atomic
def announcement_publish(*, announcement, author=None) -> None:
    """Saves a staff announcement and sends it, after commit, to its audience: everyone,
    or the learners enrolled in its course at that moment."""
    announcement.created_by = author if author is not None and author.is_authenticated else None
    announcement.published_at = timezone.now()
    announcement.save()
    user_ids = None
    if announcement.course is not None:
        user_ids = list(announcement.course.enrollments.values_list("user_id", flat=True))
    announced(
        announcement_id=announcement.pk,
        title=announcement.title,
        body_html=render_markdown(announcement.body),
        course_id=announcement.course_id,
        user_ids=user_ids,
    )
