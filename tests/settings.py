"""The suite's settings: cyberlab.settings against the real services, one isolated
Redis database pair (cache, broker) per test worker so parallel runs never share keys."""

import os

_worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_redis = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
_db = int(os.environ.get("TEST_REDIS_DB", "10")) + 2 * _worker
os.environ.pop("CELERY_BROKER_URL", None)  # the broker follows REDIS_URL: database index + 1
os.environ["REDIS_URL"] = f"{_redis}/{_db}"
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cyberlab")
os.environ.setdefault("SECRET_KEY", "test-secret-key")
os.environ.setdefault("FLAG_SECRET", "test-flag-secret")

from cyberlab.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
