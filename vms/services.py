"""The life of a lab machine: start, provision, stop, extend, reset, tear down.

Every change is made to the ledger row first, under its row lock, and then projected
into Redis (vms/state.py) with the row's version; Redis is for speed and the ledger is
the truth. Starts are exactly-once per learner and lab: a Redis script lets one of many
simultaneous clicks through at once, and a partial unique constraint on active rows,
checked under the learner's row lock, is the fence when Redis forgot or is down.

The slow work runs in Celery: `vm_provision` re-reads the ledger before and after it
creates the machine, so a start redelivered after its session was stopped removes what
it created instead of bringing the machine back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from cyberlab import redis_client
from cyberlab.accounts.models import User
from cyberlab.celery import app as celery_app
from cyberlab.queue import BrokerUnavailable, enqueue
from labs.models import Lab, MachineTemplate
from labs.services import lab_machine_flags
from vms import activity, gateway, state
from vms.errors import (
    EngineUnavailable,
    ExtendRefused,
    LabHasNoMachine,
    MachineNotFound,
    MachineNotRunning,
    MachineRefused,
    MachinesDisabled,
    PlatformFull,
    UserLimitReached,
)
from vms.ledger import announce, change_session, close_session, publish_session
from vms.models import ACTIVE_STATUSES, MachineAccess, StopReason, VMSession, VMStatus
from vms.policy import (
    CheckedTemplate,
    MachineNotAllowed,
    checked_template,
    connection_info,
    machine_spec,
)
from vms.providers import Provider, ProviderDisabled, ProviderError, ProviderUnavailable, get_provider
from vms.state import MachineState

logger = logging.getLogger(__name__)

# The tasks (vms/tasks.py) wrap these services, so the services send them by name.
PROVISION_TASK = "vms.tasks.vm_provision"
TEARDOWN_TASK = "vms.tasks.vm_teardown"


@dataclass(frozen=True)
class StartResult:
    state: MachineState
    created: bool


# --- start ------------------------------------------------------------------------


def vm_start(*, user: User, lab: Lab) -> StartResult:
    """Starts the learner's machine for the lab, or returns the one already there."""
    provider, checked = _startable(lab=lab)
    session = _new_session(user=user, lab=lab, provider=provider, checked=checked)
    try:
        claim = state.claim(session=session)
    except redis_client.RedisUnavailable:
        # Redis is an accelerator here: the ledger below is the fence on its own.
        claim = None
    if claim is not None:
        if claim.outcome == "live":
            return StartResult(state=MachineState.from_fields(claim.state), created=False)
        if claim.outcome == "total_limit":
            raise PlatformFull()
    # A learner's limit as Redis counts it is only as good as what Redis remembers: after
    # a restart it may hold machines since stopped and miss the live one for this lab.
    # The ledger, under the learner's row lock, has the last word.
    claimed = claim is not None and claim.outcome == "claimed"
    try:
        existing = _insert(session=session)
    except BaseException:
        if claimed:
            _unclaim(session)
        raise
    if existing is not None:
        # Redis had forgotten a machine the ledger still holds: that one is the answer.
        if claimed:
            _unclaim(session)
        publish_session(session=existing)
        return StartResult(state=MachineState.of(existing), created=False)
    if claimed:
        # The claim wrote the live state already; the learner is told all the same.
        announce(sessions=[session])
    else:
        publish_session(session=session)
    _enqueue_provision(session)
    logger.info("Machine %s starting for user %s, lab %s", session.pk, user.pk, lab.pk)
    return StartResult(state=MachineState.of(session), created=True)


def _startable(*, lab: Lab) -> tuple[Provider, CheckedTemplate]:
    try:
        provider = get_provider()
    except ProviderDisabled as error:
        raise MachinesDisabled() from error
    try:
        template = lab.machine
    except MachineTemplate.DoesNotExist as error:
        raise LabHasNoMachine() from error
    try:
        checked = checked_template(template)
    except MachineNotAllowed as error:
        logger.warning("Refusing to start the machine of lab %s: %s", lab.pk, error)
        raise MachineRefused(detail=f"This lab's machine cannot start here: {error}") from error
    try:
        provider.ping()
    except ProviderUnavailable as error:
        logger.error("Machine engine unavailable: %s", error)
        raise EngineUnavailable() from error
    return provider, checked


def _new_session(*, user: User, lab: Lab, provider: Provider, checked: CheckedTemplate) -> VMSession:
    now = timezone.now()
    return VMSession(
        id=uuid.uuid4(),
        user=user,
        lab=lab,
        provider=provider.name,
        image=checked.image,
        status=VMStatus.PROVISIONING,
        started_at=now,
        expires_at=now + checked.lifetime,
        status_changed_at=now,
    )


def _insert(*, session: VMSession) -> VMSession | None:
    """Saves the row unless the learner already has an active one (returned instead).

    The learner's row lock serialises their starts, so the limits are counted once
    each; the partial unique constraint backs it should anything slip past.
    """
    active = VMSession.objects.filter(status__in=ACTIVE_STATUSES)
    try:
        with transaction.atomic():
            list(User.objects.select_for_update().filter(pk=session.user_id).values_list("pk"))
            existing = active.filter(user_id=session.user_id, lab_id=session.lab_id).first()
            if existing is not None:
                return existing
            if active.filter(user_id=session.user_id).count() >= settings.VM_MAX_PER_USER:
                raise UserLimitReached()
            # Starts of different learners may both pass this count at once; the Redis
            # script counts atomically when Redis is up, so the cap can only be
            # overshot by concurrent starts while Redis is down.
            if active.count() >= settings.VM_MAX_TOTAL:
                raise PlatformFull()
            session.save(force_insert=True)
    except IntegrityError:
        existing = active.filter(user_id=session.user_id, lab_id=session.lab_id).first()
        if existing is None:
            raise
        return existing
    return None


def _unclaim(session: VMSession) -> None:
    redis_client.fallback(
        lambda: state.drop(session_id=str(session.pk), user_id=session.user_id, lab_id=session.lab_id),
        False,
    )


def _enqueue_provision(session: VMSession) -> None:
    try:
        enqueue(celery_app.signature(PROVISION_TASK), str(session.pk))
    except BrokerUnavailable:
        # Nothing was created yet: close the row so no start hangs in provisioning.
        with transaction.atomic():
            row = VMSession.objects.select_for_update().get(pk=session.pk)
            if row.status == VMStatus.PROVISIONING:
                close_session(
                    session=row,
                    status=VMStatus.FAILED,
                    reason=StopReason.FAILED,
                    failure="The task queue is unavailable.",
                )
        _unclaim(session)
        raise


# --- provisioning (Celery) -----------------------------------------------------------


def vm_provision(*, session_id: str) -> None:
    """Creates the session's machine and records it as running, or as failed.

    Safe to run twice: a row that is no longer provisioning is left alone, and what a
    start created after its session was stopped is removed again.
    """
    session = VMSession.objects.select_related("lab", "user").filter(pk=session_id).first()
    if session is None:
        logger.warning("Machine %s: no ledger row, nothing to start", session_id)
        return
    if session.status != VMStatus.PROVISIONING:
        logger.info("Machine %s is %s; not starting it", session_id, session.status)
        return
    provider = get_provider(name=session.provider)
    try:
        template = MachineTemplate.objects.get(lab_id=session.lab_id)
        checked = checked_template(template)
        spec = machine_spec(
            checked=checked,
            session_id=str(session.pk),
            user_id=session.user_id,
            lab_id=session.lab_id,
            flags=lab_machine_flags(user=session.user, lab=session.lab),
        )
        instance = provider.start(spec)
    except (ProviderError, MachineNotAllowed, MachineTemplate.DoesNotExist) as error:
        reason = (
            "This lab no longer has a machine."
            if isinstance(error, MachineTemplate.DoesNotExist)
            else str(error)
        )
        logger.warning("Machine %s failed to start: %s", session_id, reason)
        _provision_failed(session_id=session_id, provider=provider, reason=reason)
        return
    connection = connection_info(
        host=settings.VM_CONNECT_HOST, ports=instance.ports, specs=checked.ports, ssh_user=checked.ssh_user
    )
    # Kept with the connection, never shown: the gateway's way to the machine, and its name.
    connection.update(upstream=instance.address, gateway=gateway.new_name())
    with transaction.atomic():
        row = VMSession.objects.select_for_update().get(pk=session_id)
        keep = row.status == VMStatus.PROVISIONING
        if keep:
            change_session(
                session=row,
                status=VMStatus.RUNNING,
                instance_id=instance.instance_id,
                connection=connection,
                gateway_name=connection["gateway"],
                running_at=timezone.now(),
            )
    if not keep:
        # Stopped or swept while the machine was being created: remove it again.
        logger.info("Machine %s was %s while starting; removing it", session_id, row.status)
        provider.stop(session_id=session_id, instance_id=instance.instance_id)
        return
    publish_session(session=row)
    activity.touch(user_id=row.user_id, lab_id=row.lab_id, force=True)  # idle from now on
    logger.info("Machine %s running (%s)", session_id, instance.instance_id[:12])
    try:
        provider.prepare()
    except ProviderError as error:
        # Only the next start's speed depends on it; the reconciler tries again.
        logger.warning("Could not prepare capacity for the next machines: %s", error)


def _provision_failed(*, session_id: str, provider: Provider, reason: str) -> None:
    try:
        provider.stop(session_id=session_id)
        cleaned = True
    except ProviderError as error:
        # The row stays open (stopping) so the sweeper tries the cleanup again.
        logger.error("Machine %s: cleanup after a failed start failed: %s", session_id, error)
        cleaned = False
    with transaction.atomic():
        row = VMSession.objects.select_for_update().get(pk=session_id)
        if row.status != VMStatus.PROVISIONING:
            return
        if cleaned:
            close_session(session=row, status=VMStatus.FAILED, reason=StopReason.FAILED, failure=reason)
        else:
            change_session(
                session=row, status=VMStatus.STOPPING, stop_reason=StopReason.FAILED, failure=reason[:500]
            )
    publish_session(session=row)


# --- stop and teardown -----------------------------------------------------------------


def vm_stop(*, user: User, lab_id: int) -> MachineState:
    """Stops the learner's machine for the lab (202: the teardown runs in Celery)."""
    with transaction.atomic():
        open_rows = VMSession.objects.select_for_update().filter(
            user_id=user.pk, lab_id=lab_id, stopped_at__isnull=True
        )
        session = open_rows.filter(status__in=ACTIVE_STATUSES).first() or open_rows.first()
        if session is None:
            raise MachineNotFound()
        marked = _mark_stopping(session, reason=StopReason.USER)
    return _after_stop(session, marked=marked)


def vm_stop_session(*, session_id: uuid.UUID | str, reason: str, user: User | None = None) -> MachineState:
    """Stops one session by its id; `user` restricts it to their own (404 otherwise)."""
    with transaction.atomic():
        rows = VMSession.objects.select_for_update().filter(pk=session_id, stopped_at__isnull=True)
        if user is not None:
            rows = rows.filter(user_id=user.pk)
        session = rows.first()
        if session is None:
            raise MachineNotFound(detail="No live machine has this id.")
        marked = _mark_stopping(session, reason=reason)
    return _after_stop(session, marked=marked)


def vm_staff_access(*, staff: User, session_id: uuid.UUID | str, reason: str) -> MachineAccess:
    """Records a staff member's access to a running machine; the gateway links made for
    it (`vms.gateway.links(access=...)`) count their entries on this row."""
    session = VMSession.objects.filter(pk=session_id, stopped_at__isnull=True).first()
    if session is None:
        raise MachineNotFound(detail="No live machine has this id.")
    if session.status != VMStatus.RUNNING or not session.gateway_name:
        raise MachineNotRunning()
    access = MachineAccess.objects.create(session=session, staff=staff, reason=reason)
    logger.info(
        "staff %s opened access %s to machine %s of user %s: %s",
        staff.pk,
        access.pk,
        session.pk,
        session.user_id,
        reason,
    )
    return access


def _mark_stopping(session: VMSession, *, reason: str) -> bool:
    if session.status == VMStatus.STOPPING:
        return False
    change_session(session=session, status=VMStatus.STOPPING, stop_reason=reason)
    return True


def _after_stop(session: VMSession, *, marked: bool) -> MachineState:
    publish_session(session=session)
    if marked:
        enqueue_teardown(session_ids=[str(session.pk)])
    return MachineState.of(session)


def enqueue_teardown(*, session_ids: list[str]) -> None:
    """Queues each teardown; with the queue down, tears down here and now instead."""
    for index, session_id in enumerate(session_ids):
        try:
            enqueue(celery_app.signature(TEARDOWN_TASK), session_id)
        except BrokerUnavailable:
            logger.warning(
                "Task queue unavailable: tearing %d machine(s) down in place", len(session_ids) - index
            )
            for pending in session_ids[index:]:
                try:
                    vm_teardown(session_id=pending)
                except ProviderError as error:
                    # Recorded as stopping in the ledger: the sweeper tries again.
                    logger.error("Machine %s: teardown failed, the sweeper will retry: %s", pending, error)
            return


def vm_teardown(*, session_id: str) -> None:
    """Removes the session's machine and closes its row; raises ProviderError to retry."""
    session = VMSession.objects.filter(pk=session_id).first()
    if session is None:
        return
    if session.status in ACTIVE_STATUSES:
        logger.warning("Machine %s is %s, not stopping: not tearing it down", session_id, session.status)
        return
    get_provider(name=session.provider).stop(session_id=session_id, instance_id=session.instance_id)
    with transaction.atomic():
        row = VMSession.objects.select_for_update().get(pk=session_id)
        if row.stopped_at is None:
            failed = row.stop_reason == StopReason.FAILED
            close_session(
                session=row, status=VMStatus.FAILED if failed else VMStatus.STOPPED, reason=row.stop_reason
            )
    publish_session(session=row)
    logger.info("Machine %s torn down (%s)", session_id, row.stop_reason)


# --- extend and reset ----------------------------------------------------------------


def vm_extend(*, user: User, lab_id: int) -> MachineState:
    """Pushes the expiry back by VM_EXTEND, within the window, renewals and max lifetime."""
    now = timezone.now()
    with transaction.atomic():
        session = (
            VMSession.objects.select_for_update()
            .filter(user_id=user.pk, lab_id=lab_id, status__in=ACTIVE_STATUSES)
            .first()
        )
        if session is None:
            raise MachineNotFound()
        if session.status != VMStatus.RUNNING:
            raise ExtendRefused(detail="The machine is not running yet.", code="vm_not_running")
        window = timedelta(seconds=settings.VM_EXTEND_WINDOW)
        if session.expires_at - now > window:
            opens = session.expires_at - window
            raise ExtendRefused(
                detail=f"A machine can be extended in its last {_minutes(window)} only "
                f"(from {opens:%H:%M} UTC).",
                code="vm_extend_too_early",
            )
        if session.renewals >= settings.VM_MAX_RENEWALS:
            raise ExtendRefused(detail="This machine has no renewals left.", code="vm_no_renewals_left")
        ceiling = session.started_at + timedelta(seconds=settings.VM_MAX_LIFETIME)
        expires_at = min(session.expires_at + timedelta(seconds=settings.VM_EXTEND), ceiling)
        if expires_at <= session.expires_at:
            raise ExtendRefused(
                detail="This machine has reached its longest lifetime.", code="vm_max_lifetime"
            )
        if session.expires_at <= now:
            raise ExtendRefused(detail="This machine has expired.", code="vm_expired")
        # A later expiry re-arms both warnings.
        change_session(
            session=session,
            expires_at=expires_at,
            renewals=session.renewals + 1,
            warned_at=None,
            final_warned_at=None,
        )
    publish_session(session=session)
    return MachineState.of(session)


def vm_reset(*, user: User, lab: Lab) -> StartResult:
    """Replaces the learner's machine for the lab with a fresh one."""
    provider, checked = _startable(lab=lab)
    session = _new_session(user=user, lab=lab, provider=provider, checked=checked)
    with transaction.atomic():
        list(User.objects.select_for_update().filter(pk=user.pk).values_list("pk"))
        old = (
            VMSession.objects.select_for_update()
            .filter(user_id=user.pk, lab_id=lab.pk, status__in=ACTIVE_STATUSES)
            .first()
        )
        if old is None:
            raise MachineNotFound(detail="You have no machine for this lab to reset.")
        change_session(session=old, status=VMStatus.STOPPING, stop_reason=StopReason.RESET)
        session.save(force_insert=True)
    redis_client.fallback(lambda: state.put(session=session, replaces=str(old.pk)), False)
    announce(sessions=[old, session])
    enqueue_teardown(session_ids=[str(old.pk)])
    _enqueue_provision(session)
    logger.info("Machine %s reset into %s", old.pk, session.pk)
    return StartResult(state=MachineState.of(session), created=True)


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
