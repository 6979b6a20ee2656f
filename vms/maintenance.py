"""The sweeper and the reconciler: what keeps machines from outliving their time.

Both are idempotent and safe to run twice at once. A short Redis lock spares a second
run the duplicate work; correctness rests on the ledger's row locks (rows another run
holds are skipped, every change re-checks what it acts on) and on teardown being
idempotent, never on the lock.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from cyberlab import metrics, redis_client
from cyberlab.events import services as events
from vms import activity, state
from vms.ledger import announce, change_session, close_session, publish_session
from vms.models import ACTIVE_STATUSES, OPEN_STATUSES, StopReason, VMSession, VMStatus
from vms.providers import ProviderDisabled, ProviderError, get_provider
from vms.services import enqueue_teardown

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    stuck_starting: list[str] = field(default_factory=list)
    stuck_stopping: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    idle: list[str] = field(default_factory=list)
    forgotten: int = 0
    skipped: bool = False


@dataclass
class ReconcileReport:
    orphans: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    ghosts: list[str] = field(default_factory=list)
    forgotten: int = 0
    skipped: bool = False
    problems: list[str] = field(default_factory=list)


# --- the sweeper --------------------------------------------------------------------


def vm_sweep(
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    user_id: int | None = None,
    lab_id: int | None = None,
    stop_all: bool = False,
    use_lock: bool = True,
) -> SweepReport:
    """Tears down what is due: expired machines, starts whose worker died, stuck stops.

    Due machines come from `vm:expiry` and from the ledger (sessions Redis forgot), both
    read as ranges over an index, so the work grows with what is due, not with what
    is live. `stop_all` stops every live machine in scope (reason `admin`).
    """
    now = now or timezone.now()
    token = _lock("sweep", ttl=settings.VM_SWEEP_INTERVAL * 0.8) if use_lock and not dry_run else ""
    if token is None:
        return SweepReport(skipped=True)
    try:
        report = _sweep(now=now, dry_run=dry_run, user_id=user_id, lab_id=lab_id, stop_all=stop_all)
        if not dry_run:
            metrics.mark_stamp(metrics.SWEEP_KEY)
            _report_engine()
        return report
    finally:
        _unlock("sweep", token)


def _report_engine() -> None:
    """The worker's view of the engine, for /readyz: the web never pings the engine itself."""
    try:
        get_provider().ping()
    except ProviderDisabled:
        return
    except ProviderError as error:
        view = {"ok": False, "at": timezone.now().timestamp(), "error": str(error)[:200]}
    else:
        view = {"ok": True, "at": timezone.now().timestamp()}
    redis_client.fallback(
        lambda: redis_client.json_set(metrics.ENGINE_KEY, view, ttl=settings.METRICS_STAMP_TTL), None
    )


def _sweep(
    *, now: datetime, dry_run: bool, user_id: int | None, lab_id: int | None, stop_all: bool
) -> SweepReport:
    report = SweepReport()
    scope = Q(stopped_at__isnull=True)
    if user_id is not None:
        scope &= Q(user_id=user_id)
    if lab_id is not None:
        scope &= Q(lab_id=lab_id)
    batch = settings.VM_SWEEP_BATCH
    open_rows = VMSession.objects.filter(scope)

    if stop_all:
        ids = list(open_rows.filter(status__in=ACTIVE_STATUSES).values_list("pk", flat=True)[:batch])
        report.stopped = _stop(ids=ids, reason=StopReason.ADMIN, dry_run=dry_run, now=now, due_only=False)

    due_ids = set(_due_in_redis(now=now, user_id=user_id, lab_id=lab_id, report=report, dry_run=dry_run))
    due_ids |= set(
        open_rows.filter(status__in=ACTIVE_STATUSES, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:batch]
    )
    report.expired = _stop(
        ids=list(due_ids), reason=StopReason.EXPIRED, dry_run=dry_run, now=now, due_only=True
    )

    starting_before = now - timedelta(seconds=settings.VM_PROVISION_TIMEOUT)
    stuck = list(
        open_rows.filter(status=VMStatus.PROVISIONING, status_changed_at__lte=starting_before).values_list(
            "pk", flat=True
        )[:batch]
    )
    report.stuck_starting = _fail_stuck_starts(ids=stuck, before=starting_before, dry_run=dry_run)

    stopping_before = now - timedelta(seconds=settings.VM_STOP_TIMEOUT)
    report.stuck_stopping = _retry_stuck_stops(scope=scope, before=stopping_before, dry_run=dry_run, now=now)

    report.warned = _warn(scope=scope, now=now, dry_run=dry_run)
    if user_id is None and lab_id is None:
        idle_warned, report.idle = activity.reap(
            now=now,
            dry_run=dry_run,
            stop=lambda ids: _stop(ids=ids, reason=StopReason.IDLE, dry_run=dry_run, now=now, due_only=False),
        )
        report.warned += [session_id for session_id in idle_warned if session_id not in report.warned]
    done = (report.expired, report.idle, report.stopped, report.stuck_starting, report.stuck_stopping)
    if any(done) or report.forgotten:
        logger.info(
            "Sweep: %d expired, %d idle, %d stopped, %d stuck starting, %d stuck stopping, "
            "%d stale index entries%s",
            len(report.expired),
            len(report.idle),
            len(report.stopped),
            len(report.stuck_starting),
            len(report.stuck_stopping),
            report.forgotten,
            " (dry run)" if dry_run else "",
        )
    return report


def _due_in_redis(
    *, now: datetime, user_id: int | None, lab_id: int | None, report: SweepReport, dry_run: bool
) -> list[str]:
    entries = redis_client.fallback(
        lambda: state.due(until=now.timestamp(), limit=settings.VM_SWEEP_BATCH), []
    )
    ids: list[str] = []
    stale: list[tuple[int, int]] = []
    for (member_user, member_lab), fields in entries:
        if (user_id is not None and member_user != user_id) or (lab_id is not None and member_lab != lab_id):
            continue
        status = fields.get("status")
        if status in state.LIVE:
            ids.append(fields["session_id"])
        elif status != VMStatus.STOPPING:
            stale.append((member_user, member_lab))
    if stale and not dry_run:
        report.forgotten = redis_client.fallback(lambda: state.forget_members(members=stale), 0)
    elif stale:
        report.forgotten = len(stale)
    return [session_id for session_id in ids if _is_uuid(session_id)]


def _stop(*, ids: list, reason: str, dry_run: bool, now: datetime, due_only: bool) -> list[str]:
    """Marks the rows stopping (those another run holds are skipped) and queues teardowns."""
    if not ids:
        return []
    rows = VMSession.objects.filter(pk__in=ids, status__in=ACTIVE_STATUSES)
    if due_only:
        # An extend may have landed since the due list was read.
        rows = rows.filter(expires_at__lte=now)
    if dry_run:
        return [str(pk) for pk in rows.values_list("pk", flat=True)]
    with transaction.atomic():
        locked = list(rows.select_for_update(skip_locked=True))
        if locked:
            VMSession.objects.filter(pk__in=[row.pk for row in locked]).update(
                status=VMStatus.STOPPING,
                stop_reason=reason,
                status_changed_at=now,
                version=F("version") + 1,
            )
    for row in locked:
        row.status, row.stop_reason, row.status_changed_at = VMStatus.STOPPING, reason, now
        row.version += 1
    redis_client.fallback(lambda: state.put_many(sessions=locked), 0)
    announce(sessions=locked)
    session_ids = [str(row.pk) for row in locked]
    enqueue_teardown(session_ids=session_ids)
    return session_ids


def _fail_stuck_starts(*, ids: list, before: datetime, dry_run: bool) -> list[str]:
    """Starts still provisioning long after any worker would have finished: their worker died."""
    if not ids:
        return []
    rows = VMSession.objects.filter(pk__in=ids, status=VMStatus.PROVISIONING, status_changed_at__lte=before)
    if dry_run:
        return [str(pk) for pk in rows.values_list("pk", flat=True)]
    failed = []
    with transaction.atomic():
        for row in rows.select_for_update(skip_locked=True):
            change_session(
                session=row,
                status=VMStatus.STOPPING,
                stop_reason=StopReason.FAILED,
                failure="The machine did not finish starting.",
            )
            failed.append(row)
    redis_client.fallback(lambda: state.put_many(sessions=failed), 0)
    announce(sessions=failed)
    session_ids = [str(row.pk) for row in failed]
    enqueue_teardown(session_ids=session_ids)
    return session_ids


def _retry_stuck_stops(*, scope: Q, before: datetime, dry_run: bool, now: datetime) -> list[str]:
    rows = VMSession.objects.filter(scope, status=VMStatus.STOPPING, status_changed_at__lte=before)
    if dry_run:
        return [str(pk) for pk in rows.values_list("pk", flat=True)[: settings.VM_SWEEP_BATCH]]
    with transaction.atomic():
        ids = list(
            rows.select_for_update(skip_locked=True).values_list("pk", flat=True)[: settings.VM_SWEEP_BATCH]
        )
        # Restarting the clock spaces the retries one VM_STOP_TIMEOUT apart.
        VMSession.objects.filter(pk__in=ids).update(status_changed_at=now)
    session_ids = [str(pk) for pk in ids]
    enqueue_teardown(session_ids=session_ids)
    return session_ids


def _warn(*, scope: Q, now: datetime, dry_run: bool) -> list[str]:
    """Warns learners whose machine expires soon: VM_EXPIRY_WARNING before, then
    VM_EXPIRY_FINAL_WARNING before (the `machine.expiring` event), each once per expiry."""
    warned = []
    for final, lead, sent in (
        (False, settings.VM_EXPIRY_WARNING, "warned_at"),
        (True, settings.VM_EXPIRY_FINAL_WARNING, "final_warned_at"),
    ):
        horizon = now + timedelta(seconds=lead)
        rows = VMSession.objects.filter(
            scope,
            status=VMStatus.RUNNING,
            expires_at__gt=now,
            expires_at__lte=horizon,
            **{f"{sent}__isnull": True},
        )
        if dry_run:
            warned += [str(pk) for pk in rows.values_list("pk", flat=True)[: settings.VM_SWEEP_BATCH]]
            continue
        with transaction.atomic():
            due = list(rows.select_for_update(skip_locked=True)[: settings.VM_SWEEP_BATCH])
            VMSession.objects.filter(pk__in=[row.pk for row in due]).update(**{sent: now})
            for row in due:
                shown = state.MachineState.of(row)
                events.machine_expiring(
                    user_id=row.user_id,
                    session_id=str(row.pk),
                    lab_id=row.lab_id,
                    expires_at=row.expires_at,
                    renewals_left=shown.renewals_left,
                    can_extend=shown.can_extend,
                    final=final,
                )
        for row in due:
            logger.info("Machine %s of user %s expires at %s", row.pk, row.user_id, row.expires_at)
        warned += [str(row.pk) for row in due if str(row.pk) not in warned]
    return warned


# --- the reconciler ---------------------------------------------------------------------


def vm_reconcile(*, dry_run: bool = False, use_lock: bool = True) -> ReconcileReport:
    """Brings the engine, the ledger and Redis back into agreement.

    Instances with no open session are removed (orphans); running sessions whose
    instance vanished are closed as failed; Redis state missing or older than the
    ledger is rebuilt, and state of sessions the ledger closed is dropped.
    """
    token = _lock("reconcile", ttl=settings.VM_RECONCILE_INTERVAL * 0.8) if use_lock and not dry_run else ""
    if token is None:
        return ReconcileReport(skipped=True)
    try:
        report = ReconcileReport()
        for name in _provider_names():
            _reconcile_provider(name=name, report=report, dry_run=dry_run)
        try:
            _reconcile_redis(report=report, dry_run=dry_run)
        except redis_client.RedisUnavailable:
            report.problems.append("Redis is unavailable: live state not checked.")
        if not dry_run:
            metrics.mark_stamp(metrics.RECONCILE_KEY)
        if any((report.orphans, report.vanished, report.rebuilt, report.ghosts, report.forgotten)):
            logger.info(
                "Reconcile: %d orphans removed, %d vanished, %d states rebuilt, %d ghost states, "
                "%d stale index entries%s",
                len(report.orphans),
                len(report.vanished),
                len(report.rebuilt),
                len(report.ghosts),
                report.forgotten,
                " (dry run)" if dry_run else "",
            )
        return report
    finally:
        _unlock("reconcile", token)


def _provider_names() -> list[str]:
    names = set(
        VMSession.objects.filter(stopped_at__isnull=True).values_list("provider", flat=True).distinct()
    )
    if settings.VM_PROVIDERS.get(settings.VM_PROVIDER):
        names.add(settings.VM_PROVIDER)
    return sorted(names)


def _reconcile_provider(*, name: str, report: ReconcileReport, dry_run: bool) -> None:
    try:
        provider = get_provider(name=name)
    except ProviderDisabled as error:
        report.problems.append(f"Provider {name}: {error}")
        return
    # Read what the ledger calls running before asking the engine: a machine that was
    # running then and is missing from the engine's answer has truly vanished.
    running = dict(
        VMSession.objects.filter(provider=name, status=VMStatus.RUNNING).values_list("pk", "instance_id")
    )
    try:
        instances = provider.list()
    except ProviderError as error:
        report.problems.append(f"Provider {name}: {error}")
        logger.error("Reconcile: cannot list the machines of %s: %s", name, error)
        return
    by_session = {instance.session_id: instance for instance in instances}
    known = {uuid.UUID(session_id) for session_id in by_session if _is_uuid(session_id)}
    open_ids = {
        str(pk)
        for pk in VMSession.objects.filter(pk__in=known, stopped_at__isnull=True).values_list("pk", flat=True)
    }
    for session_id, instance in by_session.items():
        if session_id in open_ids:
            continue
        report.orphans.append(session_id)
        if dry_run:
            continue
        logger.warning("Reconcile: removing orphan machine %s (%s)", session_id, instance.instance_id[:12])
        try:
            provider.stop(session_id=session_id, instance_id=instance.instance_id)
        except ProviderError as error:
            report.problems.append(f"Orphan {session_id}: {error}")
    for pk, instance_id in running.items():
        instance = by_session.get(str(pk))
        if instance is not None and instance.running:
            continue
        report.vanished.append(str(pk))
        if not dry_run:
            _close_vanished(session_id=pk, instance_id=instance_id, provider=provider, report=report)
    if not dry_run:
        try:
            provider.prepare()
        except ProviderError as error:
            report.problems.append(f"Provider {name}: {error}")


def vm_instance_gone(*, session_id: str, instance_id: str, reason: str) -> bool:
    """The engine reports a machine dead or removed behind the platform's back: a
    running session becomes `failed` with the reason, at once, and what is left of the
    machine is removed. False when nothing was running there (a stop we asked for)."""
    if not _is_uuid(session_id):
        return False
    with transaction.atomic():
        row = VMSession.objects.select_for_update().filter(pk=session_id).first()
        if row is None or row.status != VMStatus.RUNNING:
            return False
        if instance_id and row.instance_id and not instance_id.startswith(row.instance_id[:12]):
            return False  # an instance this session no longer uses
        close_session(session=row, status=VMStatus.FAILED, reason=StopReason.FAILED, failure=reason)
    logger.warning("Machine %s of user %s is gone from the engine: %s", row.pk, row.user_id, reason)
    publish_session(session=row)
    try:
        get_provider(name=row.provider).stop(session_id=str(row.pk), instance_id=row.instance_id)
    except ProviderError as error:
        logger.warning("Could not clear what is left of machine %s: %s", row.pk, error)
    return True


def _close_vanished(*, session_id, instance_id: str, provider, report: ReconcileReport) -> None:
    with transaction.atomic():
        row = VMSession.objects.select_for_update(skip_locked=True).filter(pk=session_id).first()
        if row is None or row.status != VMStatus.RUNNING or row.instance_id != instance_id:
            report.vanished.remove(str(session_id))
            return
        close_session(
            session=row,
            status=VMStatus.FAILED,
            reason=StopReason.FAILED,
            failure="The machine stopped unexpectedly.",
        )
    logger.warning("Reconcile: machine %s vanished from the engine; closed as failed", session_id)
    try:
        provider.stop(session_id=str(session_id), instance_id=instance_id)
    except ProviderError as error:
        report.problems.append(f"Vanished {session_id}: {error}")
    publish_session(session=row)


def _reconcile_redis(*, report: ReconcileReport, dry_run: bool) -> None:
    states = state.all_states()
    by_session = {fields.get("session_id", ""): fields for fields in states}
    open_rows = list(VMSession.objects.filter(status__in=OPEN_STATUSES))
    open_ids = {str(row.pk) for row in open_rows}

    stale_rows = []
    for row in open_rows:
        fields = by_session.get(str(row.pk))
        if fields is None or int(fields.get("version") or 0) < row.version:
            stale_rows.append(row)
    if stale_rows:
        if dry_run:
            report.rebuilt = [str(row.pk) for row in stale_rows]
        else:
            # Oldest first, so where two sessions share a key the newer one ends up there.
            stale_rows.sort(key=lambda row: row.created_at)
            state.put_many(sessions=stale_rows)
            report.rebuilt = [str(row.pk) for row in stale_rows]

    claim_grace = timezone.now() - timedelta(seconds=settings.VM_CLAIM_GRACE)
    ghost_candidates = [
        fields
        for fields in states
        if fields.get("status") in (*state.LIVE, VMStatus.STOPPING)
        and fields.get("session_id") not in open_ids
    ]
    known = {
        str(pk)
        for pk in VMSession.objects.filter(
            pk__in=[
                fields["session_id"] for fields in ghost_candidates if _is_uuid(fields.get("session_id", ""))
            ]
        ).values_list("pk", flat=True)
    }
    ghosts = []
    for fields in ghost_candidates:
        session_id = fields.get("session_id", "")
        if session_id not in known:
            # No ledger row: a start still committing, unless the claim is old.
            started = parse_datetime(fields.get("started_at", "")) if fields.get("started_at") else None
            if started is not None and started > claim_grace:
                continue
        ghosts.append(fields)
    report.ghosts = [fields.get("session_id", "") for fields in ghosts]
    if ghosts and not dry_run:
        # Re-read so a session opened since the snapshot is never dropped.
        still_open = {
            str(pk)
            for pk in VMSession.objects.filter(
                pk__in=[g["session_id"] for g in ghosts if _is_uuid(g.get("session_id", ""))],
                stopped_at__isnull=True,
            ).values_list("pk", flat=True)
        }
        state.drop_many(
            entries=[
                (fields["session_id"], int(fields["user_id"]), int(fields["lab_id"]))
                for fields in ghosts
                if fields.get("session_id") not in still_open
                and fields.get("user_id")
                and fields.get("lab_id")
            ]
        )

    members = state.index_members()
    live_pairs = {
        (int(fields["user_id"]), int(fields["lab_id"]))
        for fields in states
        if fields.get("status") in (*state.LIVE, VMStatus.STOPPING)
        and fields.get("user_id")
        and fields.get("lab_id")
    }
    live_pairs |= {(row.user_id, row.lab_id) for row in stale_rows}
    stale_members = [member for member in members if member not in live_pairs]
    if stale_members:
        report.forgotten = len(stale_members) if dry_run else state.forget_members(members=stale_members)


# --- helpers -------------------------------------------------------------------------------


def _lock(name: str, *, ttl: float) -> str | None:
    """A lock token; "" when Redis is down (run anyway: the lock only saves duplicate work)."""
    return redis_client.fallback(lambda: state.lock_acquire(name=name, ttl=ttl), "")


def _unlock(name: str, token: str) -> None:
    if token:
        redis_client.fallback(lambda: state.lock_release(name=name, token=token), None)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
