"""Idle machines: the gateway's traffic per machine, and the sweep step that reaps the idle.

The gateway records when it last carried traffic for a machine in `vm:activity` (a sorted
set of `{user_id}:{lab_id}` scored by that time), at most once per VM_ACTIVITY_RESOLUTION
per machine and process; a start counts as activity. A machine idle for VM_IDLE_TIMEOUT
gets a `machine.expiring` event with reason `idle` (remembered in `vm:idle:warned`) and,
still idle VM_IDLE_GRACE later, is stopped with reason `idle`. The sweep reads both sets
as ranges, so its cost grows with the machines that are idle, not with all of them.
Redis down: nothing is reaped for idleness (the lifetime still ends every machine).
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Q

from cyberlab import redis_client
from cyberlab.events import services as events
from vms import state
from vms.models import VMSession, VMStatus

logger = logging.getLogger(__name__)

KEY = "vm:activity"
WARNED_KEY = "vm:idle:warned"
_lock = threading.Lock()
_written: dict[str, float] = {}  # member -> when this process last wrote it (monotonic)


def touch(*, user_id: int, lab_id: int, force: bool = False) -> None:
    """Records traffic for the machine now (throttled unless `force`)."""
    member = state.expiry_member(user_id=user_id, lab_id=lab_id)
    now = time.monotonic()
    with _lock:
        if not force and now - _written.get(member, float("-inf")) < settings.VM_ACTIVITY_RESOLUTION:
            return
        if len(_written) > 100_000:
            _written.clear()
        _written[member] = now

    def write() -> None:
        with redis_client.connection() as client:
            client.zadd(KEY, {member: time.time()})

    redis_client.fallback(write, None)


def last_seen(*, machines: list[tuple[int, int]]) -> dict[tuple[int, int], datetime]:
    """(user id, lab id) -> when each machine last had traffic; empty without Redis."""
    if not machines:
        return {}
    members = [state.expiry_member(user_id=user_id, lab_id=lab_id) for user_id, lab_id in machines]

    def read() -> list:
        with redis_client.connection() as client:
            return client.zmscore(KEY, members)

    scores = redis_client.fallback(read, [None] * len(machines))
    return {
        machine: datetime.fromtimestamp(score, tz=UTC)
        for machine, score in zip(machines, scores, strict=True)
        if score is not None
    }


def reap(*, now: datetime, dry_run: bool, stop) -> tuple[list[str], list[str]]:
    """(warned, stopped) session ids; `stop(ids)` stops machines with reason `idle`."""
    if not settings.VM_IDLE_TIMEOUT:
        return [], []
    cutoff = now.timestamp() - settings.VM_IDLE_TIMEOUT

    def read() -> tuple[list[tuple[str, float]], list]:
        with redis_client.connection() as client:
            idle = client.zrangebyscore(
                KEY, "-inf", cutoff, start=0, num=settings.VM_SWEEP_BATCH, withscores=True
            )
            members = [member.decode() for member, _ in idle]
            warned = client.zmscore(WARNED_KEY, members) if members else []
        return [(m, score) for m, (_, score) in zip(members, idle, strict=True)], warned

    idle, warned_at = redis_client.fallback(read, ([], []))
    machines = [state.parse_expiry_member(member) for member, _ in idle]
    running = {}
    if machines:
        wanted = functools.reduce(operator.or_, (Q(user_id=u, lab_id=lab) for u, lab in machines))
        rows = VMSession.objects.filter(wanted, status=VMStatus.RUNNING).only(
            "pk", "user_id", "lab_id", "expires_at"
        )
        running = {(row.user_id, row.lab_id): row for row in rows}
    warned, stopped, forget = [], [], []
    for (member, last), machine, warned_score in zip(idle, machines, warned_at, strict=True):
        row = running.get(machine)
        if row is None:
            forget.append(member)  # no running machine: nothing to reap
        elif warned_score is None or warned_score < last:
            warned.append((member, row))
        elif warned_score + settings.VM_IDLE_GRACE <= now.timestamp():
            stopped.append(str(row.pk))
            forget.append(member)
    if dry_run:
        return [str(row.pk) for _, row in warned], stopped
    for _, row in warned:
        events.machine_expiring(
            user_id=row.user_id,
            session_id=str(row.pk),
            lab_id=row.lab_id,
            expires_at=min(row.expires_at, now + timedelta(seconds=settings.VM_IDLE_GRACE)),
            renewals_left=0,
            can_extend=False,
            reason="idle",
        )
        logger.info("Machine %s of user %s is idle; stopping it if still idle", row.pk, row.user_id)

    def write() -> None:
        with redis_client.connection() as client:
            pipe = client.pipeline(transaction=False)
            if warned:
                pipe.zadd(WARNED_KEY, {member: now.timestamp() for member, _ in warned})
            if forget:
                pipe.zrem(KEY, *forget)
                pipe.zrem(WARNED_KEY, *forget)
            pipe.execute()

    if warned or forget:
        redis_client.fallback(write, None)
    return [str(row.pk) for _, row in warned], stop(stopped) if stopped else []
