"""A task queue that does not answer: starts are a clear 503 leaving nothing behind,
stops tear the machine down in place."""

from __future__ import annotations

import contextlib

import pytest

from tests.conftest import free_port
from tests.vms.support import machine_lab
from vms import services
from vms.models import StopReason, VMSession, VMStatus

pytestmark = pytest.mark.django_db


@contextlib.contextmanager
def dead_broker():
    """Points the real Celery app at a port nobody listens on, for the block only."""
    from cyberlab.celery import app

    saved = (app.conf.broker_url, app._pool, app.amqp._producer_pool)
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    app._pool = None
    app.amqp._producer_pool = None
    try:
        yield
    finally:
        app.conf.broker_url, app._pool, app.amqp._producer_pool = saved


def test_start_with_the_queue_down_is_a_503_and_leaves_nothing(fake_provider, user, learner_client, redis):
    # given
    lab = machine_lab()
    # when
    with dead_broker():
        response = learner_client.post(f"/api/v1/labs/{lab.pk}/vm/")
    # then
    assert response.status_code == 503
    assert response.json()["code"] == "broker_unavailable"
    row = VMSession.objects.get()
    assert (row.status, row.stop_reason) == (VMStatus.FAILED, StopReason.FAILED)
    assert row.failure == "The task queue is unavailable."
    assert redis.exists(f"vm:state:{user.pk}:{lab.pk}") == 0
    assert redis.zcard("vm:expiry") == 0
    assert fake_provider.instances == {}


def test_stop_with_the_queue_down_tears_the_machine_down_in_place(fake_provider, user, learner_client, redis):
    # given a running machine
    lab = machine_lab()
    session_id = services.vm_start(user=user, lab=lab).state.session_id
    services.vm_provision(session_id=session_id)
    # when
    with dead_broker():
        response = learner_client.delete(f"/api/v1/labs/{lab.pk}/vm/")
    # then
    assert response.status_code == 202
    assert VMSession.objects.get(pk=session_id).status == VMStatus.STOPPED
    assert fake_provider.instances == {}
    assert redis.exists(f"vm:state:{user.pk}:{lab.pk}") == 0
