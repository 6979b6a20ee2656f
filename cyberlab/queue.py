"""Sending Celery tasks so that a dead broker is a fast 503, never a hang.

Services send a task once the transaction that wrote its row has committed (so the
worker finds the row), and call `enqueue` themselves there rather than from an
on_commit hook: a dead broker then surfaces in the service, which can close the row
it just wrote instead of leaving it waiting for a task that was never sent.
"""

from __future__ import annotations

import logging

from celery import Task
from django.conf import settings
from kombu.exceptions import OperationalError

from cyberlab.api import ServiceUnavailable

logger = logging.getLogger(__name__)


class BrokerUnavailable(ServiceUnavailable):
    default_detail = "The task queue is unavailable; try again shortly."
    default_code = "broker_unavailable"


def enqueue(task: Task, *args, **kwargs) -> None:
    """Publishes `task` now; raises `BrokerUnavailable` within about a second on failure."""
    try:
        task.apply_async(
            args=args,
            kwargs=kwargs,
            retry=True,
            retry_policy=settings.CELERY_TASK_PUBLISH_RETRY_POLICY,
        )
    except (OperationalError, OSError) as error:
        logger.error("Could not publish %s: %s", task.name, error)
        raise BrokerUnavailable() from error
