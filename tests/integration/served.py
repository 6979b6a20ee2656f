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


def stack_env(tmp_path: Path, *, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a served process: the test database, DEBUG off."""
    database = settings.DATABASES["default"]
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cyberlab.settings",
        "DEBUG": "0",
        "HTTPS": "0",
        "SECRET_KEY": "served-stack-secret",
        "FLAG_SECRET": settings.FLAG_SECRET,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": redis_url or settings.REDIS_URL,
        "STATIC_ROOT": str(tmp_path / "static"),
        "ALLOWED_HOSTS": "127.0.0.1",
        # With a Redis of its own, the broker follows it (database index + 1).
        "CELERY_BROKER_URL": "" if redis_url else settings.CELERY_BROKER_URL,
        **extra,
    }
    return {name: value for name, value in environment.items() if value != ""}


@contextmanager
def process(command: list[str], env: dict[str, str], *, log: Path | None = None):
    """A process of the stack (a Celery worker, beat), stopped when the block ends."""
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        if log is not None:
            output.close()


@contextmanager
def served(
    tmp_path: Path,
    *,
    workers: int = 1,
    redis_url: str | None = None,
    asgi: bool = False,
    env: dict[str, str] | None = None,
    log: Path | None = None,
):
    """Yields the base URL of a web server on the test database: gunicorn's WSGI
    workers, or with `asgi` the production server of scripts/serve.sh."""
    port = free_port()
    environment = stack_env(tmp_path, redis_url=redis_url, **(env or {}))
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        env=environment,
        cwd=ROOT,
        check=True,
    )
    if asgi:
        environment = {
            **environment,
            "BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "PYTHON": sys.executable,
            "WEB_ACCESS_LOG": "/dev/null",
        }
        command = [str(ROOT / "scripts" / "serve.sh")]
    else:
        gunicorn = Path(sys.executable).parent / "gunicorn"
        command = [str(gunicorn), "cyberlab.wsgi", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
    base = f"http://127.0.0.1:{port}"
    with process(command, environment, log=log) as server:
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(f"{base}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the web server did not start")
                time.sleep(0.2)
        yield base
