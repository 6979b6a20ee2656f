"""Work a view hands over to run once its response has been sent.

The WSGI server closes the response after writing its body, which sends
`request_finished`: the client has its answer, and the work runs in the same worker
before it takes the next request. A failure there is logged; the response is gone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.core.signals import request_finished
from django.dispatch import receiver

logger = logging.getLogger(__name__)

_pending = threading.local()


def run_after_response(work: Callable[[], object]) -> None:
    """Runs `work()` once this thread's current request has finished."""
    queued = getattr(_pending, "work", None)
    if queued is None:
        queued = _pending.work = []
    queued.append(work)


@receiver(request_finished, dispatch_uid="cyberlab.deferred.after_response")
def _on_request_finished(sender, **kwargs) -> None:
    queued = getattr(_pending, "work", None)
    if not queued:
        return
    _pending.work = []
    for work in queued:
        try:
            work()
        except Exception:
            logger.exception("Work deferred until after the response failed")
