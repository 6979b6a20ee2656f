"""Lab machines end to end: the real API, Postgres, Redis, a real Celery worker and the
real Docker engine with the locally built demo image."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from cyberlab.queue import enqueue
from tests.conftest import dead_redis_caches, require
from tests.factories import UserFactory
from tests.vms import support
from vms import maintenance, state, tasks
from vms.models import StopReason, VMSession, VMStatus

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NO_THROTTLE = {"user": "", "anon": "", "vm_start": "", "login": "", "register": "", "flag": ""}


@pytest.fixture(autouse=True)
def _isolated_machines():
    """Our own platform label, and every container and network of it removed afterwards."""
    client = support.docker_client()
    require(client is not None, "no Docker engine answers")
    require(support.ensure_demo_image(client), "the demo image could not be built")
    support.remove_platform_objects(client)
    # These machines are reached on their published ports, as VM_PUBLISH_PORTS=1 serves a
    # single-host classroom (tests/integration/test_gateway.py covers the default).
    with override_settings(
        VM_PLATFORM_NAME=support.TEST_PLATFORM, THROTTLE_RATES=NO_THROTTLE, VM_PUBLISH_PORTS=True
    ):
        yield client
    support.remove_platform_objects(client)
    client.close()


@pytest.fixture
def engine(_isolated_machines):
    return _isolated_machines


@pytest.fixture
def worker(transactional_db):
    with support.thread_worker() as app:
        yield app


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def wait_status(client, lab, status: str, timeout: float = 60) -> dict:
    def current():
        response = client.get(f"/api/v1/labs/{lab.pk}/vm/")
        body = response.json() if response.status_code == 200 else None
        assert body is None or body["status"] != "failed", body
        return body if body and body["status"] == status else None

    return support.wait_for(current, timeout=timeout, what=f"machine {status}")


def wait_gone(client, lab, timeout: float = 60) -> None:
    support.wait_for(
        lambda: client.get(f"/api/v1/labs/{lab.pk}/vm/").status_code == 404,
        timeout=timeout,
        what="machine gone",
    )


def http_get(url: str) -> str:
    def attempt():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            return None

    return support.wait_for(attempt, timeout=20, what=f"GET {url}")


def nothing_left(engine, session_id: str) -> bool:
    return not support.platform_containers(engine, session=session_id) and not support.platform_networks(
        engine, session=session_id
    )


def test_start_serves_the_learners_own_flag_which_the_flag_endpoint_accepts_and_stop_leaves_nothing(
    engine, worker, redis
):
    # given a learner and a lab whose machine hands out a dynamic flag
    user = UserFactory()
    lab = support.machine_lab()
    flag = lab.flags.get()
    client = client_for(user)
    # when the learner starts the machine
    started = client.post(f"/api/v1/labs/{lab.pk}/vm/")
    assert started.status_code == 202
    session_id = started.json()["session_id"]
    running = wait_status(client, lab, "running")
    # then it answers on its published 127.0.0.1 port with the learner's own flag
    address = running["connection"]["ports"][0]["address"]
    assert address.startswith("http://127.0.0.1:")
    own_flag = http_get(f"{address}flag").strip()
    submitted = client.post(
        f"/api/v1/labs/{lab.pk}/flags/{flag.pk}/submit/", {"flag": own_flag}, format="json"
    )
    assert submitted.status_code == 200
    assert submitted.json()["correct"] is True
    # when the learner stops it
    assert client.delete(f"/api/v1/labs/{lab.pk}/vm/").status_code == 202
    wait_gone(client, lab)
    # then the container is gone, the keys are gone, the row is closed
    support.wait_for(
        lambda: nothing_left(engine, session_id), timeout=30, what="container and network removed"
    )
    assert redis.keys("vm:state:*") == []
    assert redis.zcard("vm:expiry") == 0
    assert redis.scard(f"vm:user:{user.pk}") == 0
    row = VMSession.objects.get(pk=session_id)
    assert (row.status, row.stop_reason) == (VMStatus.STOPPED, StopReason.USER)
    assert row.stopped_at is not None


def test_twenty_parallel_starts_run_exactly_one_container(engine, worker):
    # given
    user = UserFactory()
    lab = support.machine_lab()
    barrier = threading.Barrier(20)

    def start(_):
        barrier.wait()
        try:
            return client_for(user).post(f"/api/v1/labs/{lab.pk}/vm/").json()["session_id"]
        finally:
            connection.close()

    # when
    with ThreadPoolExecutor(max_workers=20) as pool:
        sessions = set(pool.map(start, range(20)))
    wait_status(client_for(user), lab, "running")
    # then
    assert len(sessions) == 1
    assert VMSession.objects.count() == 1
    assert len(support.platform_containers(engine, user=str(user.pk))) == 1


def test_a_machine_with_a_three_second_lifetime_is_torn_down_by_the_sweeper(engine, worker):
    # given
    user = UserFactory()
    lab = support.machine_lab()
    client = client_for(user)
    with override_settings(VM_LIFETIME=3):
        session_id = client.post(f"/api/v1/labs/{lab.pk}/vm/").json()["session_id"]
        wait_status(client, lab, "running")
        support.wait_for(
            lambda: VMSession.objects.get(pk=session_id).expires_at.timestamp() < time.time(),
            timeout=10,
            what="expiry",
        )
        # when beat's sweep runs on the worker
        enqueue(tasks.vm_sweep)
        # then
        support.wait_for(lambda: nothing_left(engine, session_id), timeout=60, what="machine torn down")
    wait_gone(client, lab)
    support.wait_for(
        lambda: VMSession.objects.get(pk=session_id).stopped_at is not None, timeout=30, what="row closed"
    )
    row = VMSession.objects.get(pk=session_id)
    assert (row.status, row.stop_reason) == (VMStatus.STOPPED, StopReason.EXPIRED)


def test_a_labelled_container_started_behind_the_platforms_back_is_removed_by_the_reconciler(engine, worker):
    # given
    stray = engine.containers.run(
        settings.VM_DEMO_IMAGE,
        detach=True,
        labels={"cyberlab.platform": support.TEST_PLATFORM, "cyberlab.session": str(uuid.uuid4())},
    )
    # when beat's reconcile runs on the worker
    enqueue(tasks.vm_reconcile)
    # then
    support.wait_for(
        lambda: not support.platform_containers(engine, session=stray.labels["cyberlab.session"]),
        timeout=60,
        what="orphan removed",
    )


def test_deleting_a_live_machines_redis_keys_by_hand_does_not_leak_its_container(engine, worker, redis):
    # given a running machine whose live state an operator deleted
    user = UserFactory()
    lab = support.machine_lab()
    client = client_for(user)
    with override_settings(VM_LIFETIME=3):
        session_id = client.post(f"/api/v1/labs/{lab.pk}/vm/").json()["session_id"]
        wait_status(client, lab, "running")
    redis.delete(f"vm:state:{user.pk}:{lab.pk}", "vm:expiry", f"vm:user:{user.pk}")
    support.wait_for(
        lambda: VMSession.objects.get(pk=session_id).expires_at.timestamp() < time.time(),
        timeout=10,
        what="expiry",
    )
    # when the sweeper runs, Redis knows nothing: the ledger does
    report = maintenance.vm_sweep()
    # then
    assert report.expired == [session_id]
    support.wait_for(lambda: nothing_left(engine, session_id), timeout=60, what="machine torn down")
    support.wait_for(
        lambda: VMSession.objects.get(pk=session_id).status == VMStatus.STOPPED, timeout=30, what="row closed"
    )


def test_a_celery_worker_killed_mid_start_leaves_nothing_behind_after_the_next_sweep(engine, redis):
    # given a worker process that dies while it is creating a machine
    user = UserFactory()
    lab = support.machine_lab()
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.vms.worker_settings",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "VM_TEST_START_PAUSE": "120",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cyberlab", "worker", "--pool=solo", "--loglevel=WARNING"],
        env=env,
        cwd=support.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = client_for(user)
        session_id = client.post(f"/api/v1/labs/{lab.pk}/vm/").json()["session_id"]
        support.wait_for(
            lambda: support.platform_containers(engine, session=session_id),
            timeout=60,
            what="container created",
        )
        # when it is killed mid-start
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert VMSession.objects.get(pk=session_id).status == VMStatus.PROVISIONING
    assert support.platform_containers(engine, session=session_id)
    # then the next sweep (once the start is overdue) removes it, with a worker to tear down
    with (
        override_settings(VM_PROVISION_TIMEOUT=0),
        support.thread_worker(),
    ):
        report = maintenance.vm_sweep()
        assert report.stuck_starting == [session_id]
        support.wait_for(lambda: nothing_left(engine, session_id), timeout=60, what="leftovers removed")
        support.wait_for(
            lambda: VMSession.objects.get(pk=session_id).stopped_at is not None, timeout=30, what="row closed"
        )
    row = VMSession.objects.get(pk=session_id)
    assert (row.status, row.stop_reason) == (VMStatus.FAILED, StopReason.FAILED)
    assert redis.zcard("vm:expiry") == 0


def test_with_redis_down_a_machine_starts_serves_and_stops_through_the_ledger(engine, worker, redis):
    # given Redis unreachable for the web request and the worker alike
    user = UserFactory()
    lab = support.machine_lab()
    client = client_for(user)
    dead = dead_redis_caches()
    with override_settings(CACHES=dead, REDIS_RETRY_INTERVAL=0):
        # when
        started = client.post(f"/api/v1/labs/{lab.pk}/vm/")
        assert started.status_code == 202
        session_id = started.json()["session_id"]
        running = wait_status(client, lab, "running")
        # then the machine works, read from the ledger
        assert http_get(running["connection"]["ports"][0]["address"] + "flag").startswith("CTF{")
        assert client.delete(f"/api/v1/labs/{lab.pk}/vm/").status_code == 202
        wait_gone(client, lab)
    support.wait_for(lambda: nothing_left(engine, session_id), timeout=30, what="machine torn down")
    assert redis.keys("vm:*") == []


def test_a_failed_start_leaves_no_container_and_tells_the_learner_why(engine, worker):
    # given a lab whose image passes the policy but is not on the engine
    user = UserFactory()
    lab = support.machine_lab(image="cyberlab/not-built-here:latest")
    client = client_for(user)
    # when
    session_id = client.post(f"/api/v1/labs/{lab.pk}/vm/").json()["session_id"]

    def failed():
        body = client.get(f"/api/v1/labs/{lab.pk}/vm/").json()
        return body if body["status"] == "failed" else None

    body = support.wait_for(failed, timeout=60, what="start failed")
    # then
    assert "not on the lab engine" in body["reason"]
    assert nothing_left(engine, session_id)
    assert state.get(user_id=user.pk, lab_id=lab.pk)["status"] == "failed"
