"""Fixtures shared by the whole suite. Postgres and Redis are the real servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.test import Client
from django_redis import get_redis_connection
from redis import Redis
from rest_framework.test import APIClient

from cyberlab import nearcache, redis_client
from cyberlab.accounts import credentials
from tests.factories import UserFactory

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skips the test with `reason` when `condition` fails, but fails it under CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: real-service tests may not be skipped)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _clean_redis():
    """Every test starts with empty test databases in Redis and no remembered outage."""
    from django.conf import settings

    client = get_redis_connection("default")
    client.flushdb()
    broker = client.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()
    redis_client.incident.reset()
    nearcache.near_cache.reset()
    credentials.cache.clear()
    yield
    redis_client.incident.reset()


@pytest.fixture(scope="session", autouse=True)
def _credential_channel(django_db_setup):
    """The credential cache's LISTEN connection is closed before the test database goes."""
    yield
    credentials.cache.stop()


@pytest.fixture
def redis():
    return get_redis_connection("default")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True, is_superuser=True, username="staff")


@pytest.fixture
def admin_client(staff_user) -> Client:
    """Django's test client signed in as `staff_user`, for admin pages."""
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def learner_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    client = APIClient()
    client.force_login(staff_user)
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_redis_caches() -> dict:
    """CACHES pointing at a port nobody listens on: Redis as the app sees it in an outage."""
    from django.conf import settings

    return {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}


class PrivateRedis:
    """A redis-server of the test's own, which the test may kill and bring back."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        require(binary is not None, "redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop_keeping_data(self) -> None:
        """Snapshots the data to the work dir and dies: `start()` comes back with that copy."""
        client = Redis.from_url(self.url, socket_timeout=5)
        client.save()
        client.close()
        self.kill()


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def pytest_sessionfinish(session, exitstatus):
    """Under CI a skipped test is a failure: every real-service test must have run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if IN_CI and skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) were skipped; failing the run.", red=True)
        session.exitstatus = 1
