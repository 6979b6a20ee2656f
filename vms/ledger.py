"""Writes to the ledger (VMSession rows) and their projection into Redis.

The services and the maintenance jobs both change rows through here, under the row
lock they hold. Each change bumps the row's version, and Redis refuses a state older
than the one it holds, so a late writer can never roll the live view back.
"""

from __future__ import annotations

from django.db.models import F
from django.utils import timezone

from cyberlab import redis_client
from cyberlab.events import services as events
from vms import state
from vms.models import VMSession, VMStatus
from vms.serializers import MachineConnectionSerializer


def change_session(*, session: VMSession, **fields) -> None:
    """Updates the locked row, bumping its version."""
    now = timezone.now()
    if "status" in fields and fields["status"] != session.status:
        fields["status_changed_at"] = now
    for name, value in fields.items():
        setattr(session, name, value)
    VMSession.objects.filter(pk=session.pk).update(version=F("version") + 1, **fields)
    session.version += 1


def close_session(*, session: VMSession, status: str, reason: str, failure: str = "") -> None:
    """Closes the locked row: its machine is gone."""
    fields = {"status": status, "stopped_at": timezone.now(), "stop_reason": reason}
    if failure:
        fields["failure"] = failure[:500]
    change_session(session=session, **fields)


def publish_session(*, session: VMSession) -> None:
    """Projects the row into Redis once its transaction committed; Redis down is no error
    (the status read falls back to the ledger, the reconciler rebuilds the state)."""
    if session.status == VMStatus.STOPPED:
        redis_client.fallback(
            lambda: state.drop(session_id=str(session.pk), user_id=session.user_id, lab_id=session.lab_id),
            False,
        )
    else:
        redis_client.fallback(lambda: state.put(session=session), False)
    announce(sessions=[session])


def announce(*, sessions: list[VMSession]) -> None:
    """Tells each learner what became of their machine (the `machine` event, after commit)."""
    for session in sessions:
        shown = state.MachineState.of(session)
        if session.status == VMStatus.STOPPED:
            status, reason = VMStatus.STOPPED, session.stop_reason
        elif shown.status == VMStatus.FAILED:
            status, reason = VMStatus.FAILED, shown.reason or session.stop_reason
        else:
            status, reason = shown.status, session.stop_reason if shown.status == VMStatus.STOPPING else None
        events.machine_changed(
            user_id=session.user_id,
            session_id=shown.session_id,
            lab_id=session.lab_id,
            status=str(status),
            reason=reason or None,
            # As the API shows it: the gateway's name and way to the machine stay private.
            connection=MachineConnectionSerializer(shown.connection).data if shown.connection else None,
            expires_at=shown.expires_at,
            renewals_left=shown.renewals_left,
            can_extend=shown.can_extend,
        )
