"""Reads of machine state: Redis first, the ledger when Redis forgot or is down.

A status read whose state is in Redis is one HGETALL and no database query.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from cyberlab import redis_client
from cyberlab.accounts.models import User
from labs.models import Lab
from vms import state
from vms.errors import MachineNotFound
from vms.models import ACTIVE_STATUSES, OPEN_STATUSES, VMSession, VMStatus


def vm_state_for_user(*, user_id: int, lab_id: int) -> dict[str, str] | None:
    """The learner's machine for the lab as stored state, or None when there is none."""
    try:
        fields = state.get_shown(user_id=user_id, lab_id=lab_id)
    except redis_client.RedisUnavailable:
        return _from_ledger(user_id=user_id, lab_id=lab_id, rebuild=False)
    if fields:
        return fields
    return _from_ledger(user_id=user_id, lab_id=lab_id, rebuild=True)


def vm_live_state_for_user(*, user_id: int, lab_id: int) -> dict[str, str] | None:
    """The learner's machine for the lab while it is starting or running, else None."""
    fields = vm_state_for_user(user_id=user_id, lab_id=lab_id)
    return fields if fields and fields.get("status") in ACTIVE_STATUSES else None


def _from_ledger(*, user_id: int, lab_id: int, rebuild: bool) -> dict[str, str] | None:
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
    return state.snapshot(session)


def vm_states_for_user(*, user_id: int) -> list[dict[str, str]]:
    """The learner's live machines."""
    try:
        machines = state.for_user_shown(user_id=user_id)
        return [fields for fields in machines if fields.get("status") != VMStatus.FAILED]
    except redis_client.RedisUnavailable:
        rows = VMSession.objects.filter(user_id=user_id, status__in=OPEN_STATUSES).order_by("expires_at")
        return [state.snapshot(row) for row in rows]


class LiveMachines:
    """Every live machine, soonest-expiring first, as a sliceable sequence for pagination."""

    def __init__(self) -> None:
        self._count: int | None = None
        self._ledger: list[dict[str, str]] | None = None

    def __len__(self) -> int:
        if self._count is None:
            try:
                with redis_client.connection() as client:
                    self._count = int(client.zcard(state.expiry_key()))
            except redis_client.RedisUnavailable:
                self._count = len(self._from_ledger())
        return self._count

    def __getitem__(self, index: slice) -> list[dict[str, str]]:
        start = index.start or 0
        stop = index.stop if index.stop is not None else len(self)
        try:
            total, states = state.page(offset=start, limit=max(0, stop - start))
        except redis_client.RedisUnavailable:
            return self._from_ledger()[start:stop]
        if self._count is None:
            # The page's pipeline counted them already: a later len() needs no round trip.
            self._count = int(total)
        return states

    def _from_ledger(self) -> list[dict[str, str]]:
        if self._ledger is None:
            rows = VMSession.objects.filter(status__in=OPEN_STATUSES).order_by("expires_at")
            self._ledger = [state.snapshot(row) for row in rows]
        return self._ledger


def vm_live_machines() -> LiveMachines:
    return LiveMachines()


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


def state_view(fields: dict[str, str], *, staff: bool = False) -> dict:
    """Stored state as the API shows it."""
    expires_at = _datetime(fields.get("expires_at"))
    renewals = int(fields.get("renewals") or 0)
    status = fields.get("status", "")
    seconds_left = max(0, int(expires_at.timestamp() - time.time())) if expires_at else 0
    view = {
        "session_id": fields.get("session_id", ""),
        "lab_id": int(fields.get("lab_id") or 0),
        "status": status,
        "connection": _json(fields.get("connection")) if status == VMStatus.RUNNING else None,
        "started_at": fields.get("started_at") or None,
        "expires_at": fields.get("expires_at") or None,
        "seconds_left": seconds_left,
        "renewals": renewals,
        "renewals_left": max(0, settings.VM_MAX_RENEWALS - renewals),
        "can_extend": status == VMStatus.RUNNING
        and renewals < settings.VM_MAX_RENEWALS
        and seconds_left <= settings.VM_EXTEND_WINDOW,
        "reason": fields.get("reason") or None,
    }
    if staff:
        view["user_id"] = int(fields.get("user_id") or 0)
        view["provider"] = fields.get("provider", "")
        view["instance_id"] = fields.get("instance_id", "")
    return view


def _json(raw: str | None) -> dict | None:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _datetime(raw: str | None) -> datetime | None:
    return parse_datetime(raw) if raw else None
