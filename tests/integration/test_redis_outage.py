"""Redis dies under a logged-in user: nobody is logged out, nothing answers 500, and the
cache is used again once Redis is back, without a restart."""

import time

import pytest
from django.conf import settings
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from redis import Redis
from rest_framework.test import APIClient

PASSWORD = "correct-horse-battery"
SLOW = 1.2  # seconds: "about a second"


def parameterless_get_paths() -> list[str]:
    """Every GET without a path parameter, but the event streams: they are served by the
    ASGI server, not Django (tests/integration/test_events.py takes Redis away from them)."""
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    return sorted(
        path
        for path, ops in paths.items()
        if "{" not in path and "get" in ops and not path.startswith("/api/v1/events/")
    )


def timed_get(client: APIClient, path: str):
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_redis_outage_logs_nobody_out_and_nothing_fails(private_redis, user):
    cache_settings = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url}}
    with override_settings(CACHES=cache_settings, REDIS_RETRY_INTERVAL=0.2):
        private = Redis.from_url(private_redis.url)
        client = APIClient()
        # given a logged-in user whose session and profile live in this Redis
        assert (
            client.post("/api/v1/auth/login/", {"username": user.username, "password": PASSWORD}).status_code
            == 200
        )
        assert client.get("/api/v1/auth/me/").status_code == 200
        assert private.exists(f"user:profile:{user.pk}")
        assert any(b"sessions" in key for key in private.scan_iter("*"))

        # when Redis dies
        private_redis.kill()

        # then the user is still logged in and every read answers, quickly, without a 500
        me, elapsed = timed_get(client, "/api/v1/auth/me/")
        assert me.status_code == 200
        assert me.json()["id"] == user.pk
        assert elapsed < SLOW
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        for path in ["/healthz", "/admin/login/", *parameterless_get_paths()]:
            response, elapsed = timed_get(client, path)
            assert response.status_code < 500, (path, response.status_code)
            assert elapsed < SLOW, (path, elapsed)
        anonymous = APIClient()
        login = anonymous.post("/api/v1/auth/login/", {"username": user.username, "password": PASSWORD})
        assert login.status_code == 200
        assert anonymous.get("/api/v1/auth/me/").status_code == 200

        # when Redis comes back (empty, as after a restart without persistence)
        private_redis.start()
        time.sleep(settings.REDIS_RETRY_INTERVAL + 0.1)
        private = Redis.from_url(private_redis.url)

        # then the same process uses it again
        assert client.get("/api/v1/auth/me/").status_code == 200
        assert private.exists(f"user:profile:{user.pk}")
        assert client.get("/readyz").json()["status"] == "ok"
