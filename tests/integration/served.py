"""The platform served as an operator serves it: gunicorn, DEBUG off, real Postgres and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def fetch(url: str, *, method: str = "GET", body=None, headers=None, timeout: float = 10):
    """(status, body bytes, headers) of one request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


@contextmanager
def served(tmp_path: Path, *, workers: int = 1, redis_url: str | None = None):
    """Yields the base URL of a gunicorn serving the test database."""
    database = settings.DATABASES["default"]
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cyberlab.settings",
        "DEBUG": "0",
        "HTTPS": "0",
        "SECRET_KEY": "served-stack-secret",
        "FLAG_SECRET": "served-stack-flag-secret",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": redis_url or settings.REDIS_URL,
        "STATIC_ROOT": str(tmp_path / "static"),
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True
    )
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        [str(gunicorn), "cyberlab.wsgi", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            fetch(f"{base}/healthz", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("gunicorn did not start")
            time.sleep(0.2)
    try:
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
