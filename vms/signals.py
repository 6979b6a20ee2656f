"""Events `vms` sends; others subscribe (the realtime push will), `vms` imports none.

machine_expiring_soon -- sent once per machine, VM_EXPIRY_WARNING before it expires,
after the sweeper recorded it (extending the machine re-arms it), with:
    session_id: str      the VMSession
    user_id: int         the learner
    lab_id: int          the lab
    expires_at: datetime when the machine will be torn down
"""

from django.dispatch import Signal

machine_expiring_soon = Signal()
