"""The engine watcher: a thread in each Celery worker's main process that follows the
engine's own event stream, so a machine that dies or is removed behind the platform's
back is `failed` (and its learner told) within a second, not at the next reconcile.

Several workers each watch; the first to lock the row closes it, the rest find it
closed. The reconciler still catches what an engine could not report.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from vms import maintenance
from vms.providers import ProviderDisabled, get_provider

logger = logging.getLogger(__name__)

_stop = threading.Event()
_thread: threading.Thread | None = None


def watch_start() -> bool:
    """Starts watching (once per process); False when machines are off or watching is."""
    global _thread
    if not settings.VM_WATCH_ENGINE or (_thread is not None and _thread.is_alive()):
        return False
    try:
        provider = get_provider()
    except ProviderDisabled:
        return False
    _stop.clear()
    _thread = threading.Thread(
        target=provider.watch, kwargs={"on_gone": _gone, "stop": _stop}, name="vm-engine-watch", daemon=True
    )
    _thread.start()
    logger.info("Watching the %s engine for machines that die", provider.name)
    return True


def watch_stop(timeout: float | None = None) -> None:
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=settings.VM_WATCH_READ_TIMEOUT + 1 if timeout is None else timeout)
        _thread = None


def _gone(session_id: str, instance_id: str, reason: str) -> None:
    from django.db import close_old_connections

    close_old_connections()
    maintenance.vm_instance_gone(session_id=session_id, instance_id=instance_id, reason=reason)
