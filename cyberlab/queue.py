"""Sending Celery tasks so that a dead broker is a fast 503, never a hang."""

from __future__ import annotations

import logging

from celery import Task
from django.conf import settings
from django.db import transaction
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


def enqueue_on_commit(task: Task, *args, **kwargs) -> None:
    """Publishes `task` once the current transaction commits (now, outside one)."""
    transaction.on_commit(lambda: enqueue(task, *args, **kwargs))
