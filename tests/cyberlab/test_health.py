import json
import os
import subprocess
import sys

import pytest
from django.test import override_settings

from tests.conftest import dead_redis_caches, free_port


def test_healthz_answers_without_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency(client):
    body = client.get("/readyz").json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "postgres": True,
        "redis": True,
        "broker": True,
    }


@pytest.mark.django_db
def test_readyz_is_degraded_but_200_when_only_redis_is_down(client):
    with override_settings(CACHES=dead_redis_caches()):
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["redis"]["ok"] is False


def test_readyz_is_503_when_postgres_is_down():
    # given a process whose database does not answer
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/cyberlab"}
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client(HTTP_HOST='localhost').get('/readyz');"
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    # when
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    # then
    assert answer["status"] == 503
    assert answer["body"]["status"] == "unavailable"
    assert answer["body"]["checks"]["postgres"]["ok"] is False
    assert answer["body"]["checks"]["redis"]["ok"] is True


def test_api_root_points_at_the_schema_and_docs(client):
    body = client.get("/api/v1/").json()
    assert body["schema"].endswith("/api/v1/schema/")
    assert body["docs"].endswith("/api/docs/")


@pytest.mark.django_db
def test_the_servers_address_shows_what_this_is_and_where_to_go(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>CyberLab</h1>" in page
    for link in (
        'href="/api/docs/"',
        'href="/admin/"',
        'href="/healthz"',
        'href="/readyz"',
        'href="/api/v1/"',
    ):
        assert link in page


def test_the_admin_is_branded_and_its_index_leads_to_the_live_machines(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "CyberLab administration" in page
    assert "/admin/vms/livemachine/" in page
    assert "| CyberLab admin</title>" in page
