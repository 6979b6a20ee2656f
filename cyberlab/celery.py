"""The Celery app: tasks autodiscovered from each app's tasks.py, configured from settings.

Docs: https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
"""

import os

from celery import Celery
from celery.beat import PersistentScheduler
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cyberlab.settings")

app = Celery("cyberlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect(dispatch_uid="cyberlab.celery.connections_before")
@task_postrun.connect(dispatch_uid="cyberlab.celery.connections_after")
def _recycle_database_connections(**kwargs) -> None:
    """What Django does around each request: drops connections past their age or broken,
    and has the next query check the kept one first (CELERY_DB_REUSE_MAX in settings)."""
    from django.db import close_old_connections

    close_old_connections()


class HeartbeatScheduler(PersistentScheduler):
    """Celery's default scheduler, stamping each tick in Redis so /metrics and /readyz can
    tell a beat that stopped (CELERY_BEAT_SCHEDULER in settings)."""

    def tick(self, *args, **kwargs):
        from cyberlab import metrics

        metrics.mark_stamp(metrics.BEAT_KEY)
        return super().tick(*args, **kwargs)
