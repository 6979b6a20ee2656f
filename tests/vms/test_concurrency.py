"""Simultaneous clicks: exactly one machine, whatever Redis remembers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import services
from vms.models import VMSession

pytestmark = pytest.mark.django_db(transaction=True)

NO_THROTTLE = {"user": "", "anon": "", "vm_start": "", "login": "", "register": "", "flag": ""}


def parallel(count: int, func):
    barrier = threading.Barrier(count)

    def run(index):
        barrier.wait()
        try:
            return func(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_twenty_parallel_starts_from_one_learner_create_exactly_one_machine(fake_provider, redis):
    # given
    user = UserFactory()
    lab = machine_lab()

    def start(_):
        client = APIClient()
        client.force_authenticate(user)
        response = client.post(f"/api/v1/labs/{lab.pk}/vm/")
        return response.status_code, response.json()["session_id"]

    # when
    with override_settings(THROTTLE_RATES=NO_THROTTLE):
        results = parallel(20, start)
    # then
    assert sorted(code for code, _ in results) == [200] * 19 + [202]
    assert len({session for _, session in results}) == 1
    assert VMSession.objects.count() == 1
    assert redis.zcard("vm:expiry") == 1


def test_parallel_starts_are_fenced_by_the_ledger_when_redis_holds_nothing(fake_provider, monkeypatch):
    # given a Redis that always lets the claim through (as after a flush between clicks)
    from vms import state

    user = UserFactory()
    lab = machine_lab()
    monkeypatch.setattr(
        state, "claim", lambda *, session: state.Claim(outcome="claimed", state=state.snapshot(session))
    )
    # when
    results = parallel(20, lambda _: services.vm_start(user=user, lab=lab))
    # then the partial unique constraint and the learner's row lock let one through
    assert sum(result.created for result in results) == 1
    assert len({result.state.session_id for result in results}) == 1
    assert VMSession.objects.count() == 1


def test_parallel_starts_for_different_labs_respect_the_per_learner_limit(fake_provider):
    # given
    user = UserFactory()
    labs = [machine_lab() for _ in range(10)]

    def start(index):
        try:
            return services.vm_start(user=user, lab=labs[index]).created
        except Exception as error:
            return type(error).__name__

    # when
    results = parallel(10, start)
    # then
    assert results.count(True) == 1
    assert results.count("UserLimitReached") == 9
    assert VMSession.objects.count() == 1


def test_parallel_stop_and_teardown_close_the_row_once(fake_provider):
    # given
    user = UserFactory()
    lab = machine_lab()
    session_id = services.vm_start(user=user, lab=lab).state.session_id
    services.vm_provision(session_id=session_id)
    services.vm_stop(user=user, lab_id=lab.pk)
    # when
    parallel(8, lambda _: services.vm_teardown(session_id=session_id))
    # then
    row = VMSession.objects.get(pk=session_id)
    assert row.status == "stopped"
    assert row.version == 4  # created, running, stopping, stopped: closed exactly once
