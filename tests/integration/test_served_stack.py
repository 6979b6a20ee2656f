"""The platform as `make run` serves it: gunicorn, DEBUG off, static files from WhiteNoise."""

import re

import pytest

from tests.integration import served as stack


def fetch(url: str) -> tuple[int, bytes]:
    status, body, _ = stack.fetch(url)
    return status, body


@pytest.fixture
def served(transactional_db, tmp_path):
    with stack.served(tmp_path) as base:
        yield base


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
