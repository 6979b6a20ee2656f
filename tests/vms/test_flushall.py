"""Postgres is the truth: FLUSHALL under a signed-in learner with a running machine and a
solve loses nothing. Session, machine, lists and boards come back from Postgres."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from redis import Redis
from rest_framework.test import APIClient

from labs.flags import dynamic_flag_value
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import services

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "correct-horse-battery"


def test_flushing_redis_entirely_loses_nothing(private_redis, fake_provider):
    caches = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url}}
    with override_settings(CACHES=caches, NEAR_CACHE_ENABLED=False):
        # given a signed-in learner with a running machine and a solved flag
        learner = UserFactory()
        client = APIClient()
        login = {"username": learner.username, "password": PASSWORD}
        assert client.post("/api/v1/auth/login/", login, format="json").status_code == 200
        lab = machine_lab()
        flag = lab.flags.get()
        started = client.post(f"/api/v1/labs/{lab.pk}/vm/").json()
        services.vm_provision(session_id=started["session_id"])
        answer = {"flag": dynamic_flag_value(user_id=learner.pk, flag_id=flag.pk)}
        assert client.post(f"/api/v1/labs/{lab.pk}/flags/{flag.pk}/submit/", answer, format="json").json()[
            "correct"
        ]
        before = {
            "me": client.get("/api/v1/auth/me/").json(),
            "machine": client.get(f"/api/v1/labs/{lab.pk}/vm/").json(),
            "board": client.get("/api/v1/leaderboard/").json()["results"],
        }
        assert before["machine"]["status"] == "running"
        # when Redis loses everything
        Redis.from_url(private_redis.url).flushall()
        # then the learner is still signed in, and sees the same machine, list and board
        assert client.get("/api/v1/auth/me/").json() == before["me"]
        machine = client.get(f"/api/v1/labs/{lab.pk}/vm/").json()
        assert (machine["session_id"], machine["status"]) == (started["session_id"], "running")
        assert machine["expires_at"] == before["machine"]["expires_at"]
        assert [entry["session_id"] for entry in client.get("/api/v1/vms/").json()["results"]] == [
            started["session_id"]
        ]
        board = client.get("/api/v1/leaderboard/").json()["results"]
        assert [(row["user_id"], row["points"]) for row in board] == [
            (row["user_id"], row["points"]) for row in before["board"]
        ]
        assert client.get("/api/v1/leaderboard/me/").json()["rank"] == 1
        # and a second start gives the live machine back rather than a second one
        again = client.post(f"/api/v1/labs/{lab.pk}/vm/")
        assert (again.status_code, again.json()["session_id"]) == (200, started["session_id"])
