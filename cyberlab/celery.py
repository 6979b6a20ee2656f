"""The Celery app: tasks autodiscovered from each app's tasks.py, configured from settings.

Docs: https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cyberlab.settings")

app = Celery("cyberlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
