"""Reads of machine state: Redis first, the ledger when Redis forgot or is down.

A status read whose state is in Redis is one HGETALL and no database query; so is a
learner's list of machines (one script). What Redis lost, the ledger still holds: a
learner's read that finds nothing in Redis asks the ledger before it answers "none" and
puts back what it found, and the staff's list is the ledger's while Redis holds fewer
machines than it does.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from cyberlab import redis_client
from cyberlab.accounts.models import User
from labs.models import Lab
from vms import state
from vms.errors import MachineNotFound
from vms.models import OPEN_STATUSES, StopReason, VMSession, VMStatus
from vms.state import MachineState


def vm_state_for_user(*, user_id: int, lab_id: int) -> MachineState | None:
    """The learner's machine for the lab, or None when there is none."""
    try:
        fields = state.get(user_id=user_id, lab_id=lab_id)
    except redis_client.RedisUnavailable:
        return _from_ledger(user_id=user_id, lab_id=lab_id, rebuild=False)
    if fields:
        return MachineState.from_fields(fields)
    return _from_ledger(user_id=user_id, lab_id=lab_id, rebuild=True)


def vm_live_state_for_user(*, user_id: int, lab_id: int) -> MachineState | None:
    """The learner's machine for the lab while it is starting or running, else None."""
    machine = vm_state_for_user(user_id=user_id, lab_id=lab_id)
    return machine if machine is not None and machine.is_live else None


def _from_ledger(*, user_id: int, lab_id: int, rebuild: bool) -> MachineState | None:
    failed_since = timezone.now() - timedelta(seconds=settings.VM_FAILED_STATE_TTL)
    session = (
        VMSession.objects.filter(user_id=user_id, lab_id=lab_id)
        .filter(Q(status__in=OPEN_STATUSES) | Q(status=VMStatus.FAILED, stopped_at__gte=failed_since))
        .order_by("-created_at")
        .first()
    )
    if session is None:
        return None
    if rebuild:
        # Redis lost this machine (evicted, flushed, restarted): put it back.
        redis_client.fallback(lambda: state.put(session=session), False)
    return MachineState.of(session)


def vm_states_for_user(*, user_id: int) -> list[MachineState]:
    """The learner's live machines, by lab."""
    try:
        stored = state.for_user(user_id=user_id)
    except redis_client.RedisUnavailable:
        return [MachineState.of(row) for row in _listed_rows().filter(user_id=user_id).order_by("lab_id")]
    if not stored:
        # An empty list may be a Redis that lost its index: the ledger knows, and what it
        # holds is put back so the next read is Redis's alone again.
        rows = list(_listed_rows().filter(user_id=user_id).order_by("lab_id"))
        redis_client.fallback(lambda: state.put_many(sessions=rows), 0)
        return [MachineState.of(row) for row in rows]
    machines = [MachineState.from_fields(fields) for fields in stored]
    return [machine for machine in machines if machine.status != VMStatus.FAILED]


def vm_live_machines(*, limit: int, offset: int) -> tuple[int, list[MachineState]]:
    """Every live machine, soonest-expiring first: (how many there are, this page).

    Redis answers unless its index holds fewer machines than the ledger: then it lost
    some (a restart, a flush) that the reconciler has not put back yet, and the ledger
    answers. Redis ahead of the ledger is normal: a start is claimed there before its
    row commits.
    """
    listed = _listed_rows()
    in_ledger = listed.count()
    try:
        total, page = state.page(offset=offset, limit=limit)
    except redis_client.RedisUnavailable:
        total, page = 0, []
    if total >= in_ledger:
        return total, [MachineState.from_fields(fields) for fields in page]
    rows = listed.order_by("expires_at", "pk")[offset : offset + limit]
    return in_ledger, [MachineState.of(row) for row in rows]


def _listed_rows() -> QuerySet[VMSession]:
    """The rows Redis lists as live: open ones, but not a failed start's cleanup (shown
    as failed by a status read, no longer in anyone's list)."""
    return VMSession.objects.filter(status__in=OPEN_STATUSES).exclude(
        status=VMStatus.STOPPING, stop_reason=StopReason.FAILED
    )


def vm_session_for_user(*, user: User, session_id: uuid.UUID) -> VMSession:
    """The learner's own session; another learner's id is simply not found."""
    session = VMSession.objects.filter(pk=session_id, user_id=user.pk).first()
    if session is None:
        raise MachineNotFound(detail="No machine of yours has this id.")
    return session


def vm_lab_for_start(*, user: User, lab_id: int) -> Lab:
    """A lab the learner may start a machine for (published, or any for staff)."""
    labs = Lab.objects.select_related("machine")
    if not user.is_staff:
        labs = labs.filter(published=True, course__published=True)
    lab = labs.filter(pk=lab_id).first()
    if lab is None:
        raise MachineNotFound(detail="No such lab.", code="lab_not_found")
    return lab
