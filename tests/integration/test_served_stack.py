"""The platform as `make run` serves it: gunicorn, DEBUG off, static files from WhiteNoise."""

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def served(transactional_db, tmp_path):
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
        "REDIS_URL": settings.REDIS_URL,
        "STATIC_ROOT": str(tmp_path / "static"),
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True
    )
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        [str(gunicorn), "cyberlab.wsgi", "--workers", "1", "--bind", f"127.0.0.1:{port}"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while fetch_or_none(f"{base}/healthz") is None:
        if time.monotonic() > deadline:
            server.kill()
            pytest.fail("gunicorn did not start")
        time.sleep(0.2)
    yield base
    server.terminate()
    server.wait(timeout=10)


def fetch_or_none(url: str):
    try:
        return fetch(url)
    except OSError:
        return None


def test_the_served_stack_answers_every_entry_point_with_styled_pages(served):
    assert fetch(f"{served}/healthz") == (200, b'{"status": "ok"}')
    assert fetch(f"{served}/readyz")[0] == 200
    assert fetch(f"{served}/api/v1/auth/me/")[0] == 403
    status, login_page = fetch(f"{served}/admin/login/")
    assert status == 200
    status, docs = fetch(f"{served}/api/docs/")
    assert status == 200
    # every stylesheet and script the pages reference is served with DEBUG off
    assets = re.findall(rb'(?:href|src)="(/static/[^"]+)"', login_page + docs)
    assert any(b"swagger-ui" in asset for asset in assets)
    assert any(b"admin/css" in asset for asset in assets)
    for asset in assets:
        assert fetch(served + asset.decode())[0] == 200, asset
