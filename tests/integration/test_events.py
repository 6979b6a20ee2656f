"""Live events end to end: the ASGI server of scripts/serve.sh, a real Celery worker and
beat, Postgres, a Redis of the test's own and the real Docker engine."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.authtoken.models import Token

from cyberlab.events.models import Announcement
from cyberlab.events.services import announcement_publish
from tests.conftest import require
from tests.factories import UserFactory
from tests.integration.served import fetch, process, served, stack_env
from tests.integration.sse import EventStream
from tests.integration.test_revocation_served import Browser
from tests.labs.factories import FlagFactory
from tests.vms import support
from tests.vms.platform import TEST_PLATFORM

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LIFETIME = 8  # seconds: long enough to start, short enough to watch it expire
STACK = {
    "VM_PROVIDER": "docker",
    "VM_PLATFORM_NAME": TEST_PLATFORM,
    "VM_LIFETIME": str(LIFETIME),
    "VM_EXPIRY_WARNING": "6",
    "VM_EXPIRY_FINAL_WARNING": "3",
    "VM_EXTEND": "6",
    "VM_EXTEND_WINDOW": "60",
    "VM_MAX_LIFETIME": "600",
    "VM_SWEEP_INTERVAL": "1",
    "EVENTS_HEARTBEAT": "1",
    "EVENTS_LEADERBOARD_INTERVAL": "0.2",
    "LEADERBOARD_PUBLIC": "1",
    "REDIS_RETRY_INTERVAL": "0.5",
    "WEB_GRACEFUL_TIMEOUT": "2",
    **{
        f"THROTTLE_RATE_{scope}": "none"
        for scope in ("ANON", "USER", "LOGIN", "REGISTER", "FLAG", "VM_START")
    },
}


@pytest.fixture
def engine():
    client = support.docker_client()
    require(client is not None, "no Docker engine answers")
    require(support.ensure_demo_image(client), "the demo image could not be built")
    support.remove_platform_objects(client)
    yield client
    support.remove_platform_objects(client)
    client.close()


@pytest.fixture
def stack(transactional_db, engine, private_redis, tmp_path):
    """Web (2 ASGI workers), a Celery worker and beat, on a Redis the test can kill."""
    env = stack_env(tmp_path, redis_url=private_redis.url, **STACK)
    log = tmp_path / "stack.log"
    celery = [sys.executable, "-m", "celery", "-A", "cyberlab"]
    # What this process publishes (announcements) goes to the stack's Redis too.
    caches = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url}}
    with (
        override_settings(CACHES=caches, REDIS_URL=private_redis.url),
        served(tmp_path, workers=2, redis_url=private_redis.url, asgi=True, env=STACK, log=log) as base,
        process([*celery, "worker", "--pool", "solo", "--loglevel", "INFO"], env, log=log),
        process([*celery, "beat", "--schedule", str(tmp_path / "beat"), "--loglevel", "INFO"], env, log=log),
    ):
        yield base, private_redis


def token_headers(user) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def machine_lab():
    lab = support.machine_lab()
    flag = FlagFactory(lab=lab, value="CTF{events-demo}", points=100)
    return lab, flag


def call(base: str, path: str, headers: dict, method: str = "GET", body=None):
    status, raw, _ = fetch(f"{base}{path}", method=method, body=body, headers=headers)
    return status, json.loads(raw) if raw else None


def running_machine(base: str):
    """A learner's demo machine, started over the API and seen running on their stream."""
    lab, _ = machine_lab()
    headers = token_headers(UserFactory())
    stream = EventStream(base, headers=headers)
    call(base, f"/api/v1/labs/{lab.pk}/vm/", headers, "POST")
    stream.until(lambda e: e.event == "machine" and e.data["status"] == "running", timeout=60)
    return lab, headers, stream


def test_a_learner_sees_their_machine_start_and_their_solve_and_others_see_first_blood(stack, engine):
    base, _ = stack
    lab, flag = machine_lab()
    learner, rival = UserFactory(), UserFactory()
    mine, theirs = token_headers(learner), token_headers(rival)
    stream, rival_stream = EventStream(base, headers=mine), EventStream(base, headers=theirs)
    assert stream.status == 200
    assert stream.retry is None or stream.retry > 0
    # when the learner starts the demo machine
    status, body = call(base, f"/api/v1/labs/{lab.pk}/vm/", mine, "POST")
    assert status == 202, body
    # then the stream says provisioning, then running with the connection
    first = stream.next(timeout=10)
    assert (first.event, first.data["status"]) == ("machine", "provisioning")
    running = stream.until(lambda e: e.event == "machine", timeout=60)
    assert running.data["status"] == "running", running.data
    assert running.data["connection"]["ports"]
    assert running.data["session_id"] == body["session_id"]
    # when the flag is submitted
    status, verdict = call(
        base, f"/api/v1/labs/{lab.pk}/flags/{flag.pk}/submit/", mine, "POST", {"flag": flag.value}
    )
    assert verdict["correct"], verdict
    # then the learner gets the solve, and the rival first blood and the board
    solve = stream.until(lambda e: e.event == "solve")
    assert (solve.data["points"], solve.data["flag_id"], solve.data["lab_id"]) == (100, flag.pk, lab.pk)
    blood = rival_stream.until(lambda e: e.event == "first_blood")
    assert (blood.data["flag_id"], blood.data["user_id"]) == (flag.pk, learner.pk)
    board = rival_stream.until(lambda e: e.event == "leaderboard")
    assert board.data["top"][0]["user_id"] == learner.pk
    # and a public screen sees the board's events too
    public = EventStream(base, "/api/v1/events/public/")
    assert public.status == 200
    stream.close(), rival_stream.close(), public.close()


def test_a_machine_is_warned_twice_then_stopped_as_expired_and_an_extend_moves_the_warning(stack, engine):
    base, _ = stack
    lab, headers, stream = running_machine(base)
    # the first warning, then an extend: the final warning waits for the new expiry
    warning = stream.until(lambda e: e.event == "machine.expiring", timeout=LIFETIME)
    assert warning.data["final"] is False
    assert warning.data["can_extend"] is True
    status, extended = call(base, f"/api/v1/labs/{lab.pk}/vm/extend/", headers, "POST")
    assert status == 200, extended
    moved = stream.until(lambda e: e.event == "machine")
    assert moved.data["status"] == "running"
    later = datetime.fromisoformat(moved.data["expires_at"]) - datetime.fromisoformat(extended["expires_at"])
    assert abs(later.total_seconds()) < 0.01
    # then, against the new expiry: a first warning again, the final one, and the stop
    seen = []
    while True:
        event = stream.next(timeout=20)
        if event.event == "machine.expiring":
            seen.append(("warning", event.data["final"]))
        elif event.event == "machine" and event.data["status"] in {"stopping", "stopped"}:
            seen.append((event.data["status"], event.data["reason"]))
            if event.data["status"] == "stopped":
                break
    assert seen[:2] == [("warning", False), ("warning", True)], seen
    assert seen[-1] == ("stopped", "expired"), seen
    stream.close()


def test_a_client_that_reconnects_gets_exactly_what_it_missed_in_order(stack):
    base, _ = stack
    learner = UserFactory()
    headers = token_headers(learner)
    stream = EventStream(base, headers=headers)
    announcement_publish(announcement=Announcement(title="zero", body="Before the cut."))
    last = stream.until(lambda e: e.event == "announcement")
    stream.close()
    # when three events happen while it is away
    for title in ("one", "two", "three"):
        announcement_publish(announcement=Announcement(title=title, body=f"**{title}**"))
    # then reconnecting with Last-Event-ID brings exactly those, in order
    again = EventStream(base, headers={**headers, "Last-Event-ID": last.id})
    missed = [again.next(timeout=5) for _ in range(3)]
    assert [e.data["title"] for e in missed] == ["one", "two", "three"]
    assert missed[0].data["body_html"] == "<p><strong>one</strong></p>"
    time.sleep(1.5)
    assert [e.event for e in again.drain()] == []
    again.close()


def test_streams_survive_a_redis_outage_and_are_told_to_resync(stack):
    base, redis = stack
    learner = UserFactory()
    stream = EventStream(base, headers=token_headers(learner))
    beats = stream.comments
    # when Redis dies with the stream open
    redis.kill()
    time.sleep(2.5)
    # then the stream stays open, heartbeats go on, and a new stream is accepted
    assert not stream.ended.is_set()
    assert stream.comments > beats
    during = EventStream(base, headers=token_headers(learner))
    assert during.status == 200
    # when Redis returns, every stream is told to resync
    redis.start()
    assert stream.until(lambda e: e.event == "resync", timeout=15)
    assert during.until(lambda e: e.event == "resync", timeout=15)
    stream.close(), during.close()


def test_revoking_a_session_ends_its_stream_within_a_second(stack):
    base, _ = stack
    credentials = {"username": "streamer", "password": "stream password 1"}
    first, second = Browser(base), Browser(base)
    status, body = first.call("/api/v1/auth/register/", "POST", {**credentials, "email": "s@example.com"})
    assert status == 201, body
    status, body = second.call("/api/v1/auth/login/", "POST", credentials)
    assert status == 200, body
    cookie = {b: "; ".join(f"{c.name}={c.value}" for c in b.jar) for b in (first, second)}
    first_stream = EventStream(base, headers={"Cookie": cookie[first]})
    second_stream = EventStream(base, headers={"Cookie": cookie[second]})
    assert (first_stream.status, second_stream.status) == (200, 200)
    _, sessions = second.call("/api/v1/auth/sessions/")
    first_id = next(row["id"] for row in sessions["results"] if not row["current"])
    # when the second browser revokes the first
    status, _ = second.call(f"/api/v1/auth/sessions/{first_id}/", "DELETE")
    assert status == 204
    revoked_at = time.monotonic()
    # then the first stream ends within a second, and the second stays open
    assert first_stream.ended.wait(timeout=3)
    assert time.monotonic() - revoked_at < 1.5
    time.sleep(1.5)
    assert not second_stream.ended.is_set()
    first_stream.close(), second_stream.close()


def test_a_container_removed_behind_the_platforms_back_is_failed_within_two_seconds(stack, engine):
    base, _ = stack
    lab, headers, stream = running_machine(base)
    # when the container is removed outside the platform
    (container,) = support.platform_containers(engine)
    removed_at = time.monotonic()
    container.remove(force=True)
    # then the learner hears of it within two seconds, and the status says so
    failed = stream.until(lambda e: e.event == "machine" and e.data["status"] != "running", timeout=5)
    assert time.monotonic() - removed_at < 2.0
    assert failed.data["status"] == "failed", failed.data
    status, body = call(base, f"/api/v1/labs/{lab.pk}/vm/", headers)
    assert status == 200
    assert body["status"] == "failed"
    assert body["reason"] in {
        "The machine was removed from the engine.",
        "The machine stopped (exit code 137).",
    }
    stream.close()


def test_a_stream_without_credentials_is_refused(stack):
    base, _ = stack
    assert EventStream(base).status == 403
    assert EventStream(base, headers={"Authorization": "Token not-a-token"}).status == 403


def test_a_learner_past_the_stream_cap_loses_their_oldest_stream(stack):
    base, _ = stack
    headers = token_headers(UserFactory())
    # given as many streams as a learner may hold, on either web process
    streams = [EventStream(base, headers=headers) for _ in range(5)]
    time.sleep(0.5)
    # when one more opens
    newest = EventStream(base, headers=headers)
    # then the oldest is closed, and the rest stay open
    assert streams[0].ended.wait(timeout=3)
    time.sleep(1)
    assert [s.ended.is_set() for s in streams[1:]] == [False] * 4
    assert not newest.ended.is_set()
    for stream in [*streams, newest]:
        stream.close()
