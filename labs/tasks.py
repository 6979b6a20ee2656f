"""Celery tasks: thin wrappers around labs services."""

from __future__ import annotations

from celery import shared_task

from cyberlab import redis_client
from labs import cache


@shared_task
def catalogue_repair() -> int:
    # Redis still down: the recorded invalidations wait for the next run.
    return redis_client.fallback(cache.catalogue_repair, 0)
