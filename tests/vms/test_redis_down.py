"""Redis down: starts and stops keep working through the ledger, status reads it, and
the live state is rebuilt when Redis returns. Never a 500, never a leaked machine.
Redis back without what it held (a flush, a restart from an older snapshot): every read
and start still answers what the ledger holds."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.conftest import dead_redis_caches
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import maintenance, services
from vms.models import VMSession, VMStatus

pytestmark = pytest.mark.django_db


def dead_redis():

    return override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=0)


def test_start_status_and_stop_work_through_the_ledger_while_redis_is_down(
    fake_provider, user, learner_client, redis
):
    lab = machine_lab()
    with dead_redis():
        # when
        started = learner_client.post(f"/api/v1/labs/{lab.pk}/vm/")
        # then
        assert started.status_code == 202
        session_id = started.json()["session_id"]
        services.vm_provision(session_id=session_id)
        status = learner_client.get(f"/api/v1/labs/{lab.pk}/vm/")
        assert status.status_code == 200
        assert status.json()["status"] == "running"
        assert status.json()["connection"]["ports"][0]["address"] == "http://127.0.0.1:40000/"
        assert learner_client.get("/api/v1/vms/").json()["count"] == 1
        # a second click still finds the live machine (the ledger is the fence)
        again = learner_client.post(f"/api/v1/labs/{lab.pk}/vm/")
        assert (again.status_code, again.json()["session_id"]) == (200, session_id)
        # when
        stopped = learner_client.delete(f"/api/v1/labs/{lab.pk}/vm/")
        assert stopped.status_code == 202
        services.vm_teardown(session_id=session_id)
        # then
        assert learner_client.get(f"/api/v1/labs/{lab.pk}/vm/").status_code == 404
    assert fake_provider.instances == {}
    assert VMSession.objects.get(pk=session_id).status == VMStatus.STOPPED
    assert redis.keys("vm:*") == []


def test_live_state_is_rebuilt_from_the_ledger_when_redis_returns(fake_provider, user, learner_client, redis):
    # given a machine started and running while Redis was down
    lab = machine_lab()
    with dead_redis():
        session_id = learner_client.post(f"/api/v1/labs/{lab.pk}/vm/").json()["session_id"]
        services.vm_provision(session_id=session_id)
    assert redis.exists(f"vm:state:{user.pk}:{lab.pk}") == 0
    # when Redis answers again, the next read puts it back
    response = learner_client.get(f"/api/v1/labs/{lab.pk}/vm/")
    # then
    assert response.json()["status"] == "running"
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "session_id").decode() == session_id
    assert redis.zscore("vm:expiry", f"{user.pk}:{lab.pk}") is not None


def test_the_reconciler_rebuilds_every_live_state_when_redis_returns(fake_provider, user, redis):
    # given
    lab = machine_lab()
    with dead_redis():
        session_id = services.vm_start(user=user, lab=lab).state.session_id
        services.vm_provision(session_id=session_id)
    # when
    report = maintenance.vm_reconcile()
    # then
    assert report.rebuilt == [session_id]
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "status") == b"running"


def test_staff_list_and_sweeper_work_from_the_ledger_while_redis_is_down(fake_provider, user, staff_client):
    # given a machine past its expiry
    lab = machine_lab()
    with override_settings(VM_LIFETIME=1):
        session_id = services.vm_start(user=user, lab=lab).state.session_id
    services.vm_provision(session_id=session_id)
    VMSession.objects.filter(pk=session_id).update(expires_at="2000-01-01T00:00:00Z")
    with dead_redis():
        # when
        listed = staff_client.get("/api/v1/admin/vms/")
        report = maintenance.vm_sweep()
    # then
    assert listed.status_code == 200
    assert listed.json()["count"] == 1
    assert report.expired == [session_id]
    # the broker answers in this test, so the teardown was queued: run it as a worker would
    services.vm_teardown(session_id=session_id)
    assert fake_provider.instances == {}


def url(lab) -> str:
    return f"/api/v1/labs/{lab.pk}/vm/"


def running_machine(client, lab) -> str:
    session_id = client.post(url(lab)).json()["session_id"]
    services.vm_provision(session_id=session_id)
    return session_id


def test_after_redis_lost_everything_my_machines_are_listed_from_the_ledger(
    fake_provider, user, learner_client, redis
):
    # given a running machine, and a Redis emptied since
    lab = machine_lab()
    session_id = running_machine(learner_client, lab)
    redis.flushdb()
    # when
    response = learner_client.get("/api/v1/vms/")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert [(item["session_id"], item["status"]) for item in body["results"]] == [(session_id, "running")]
    # and the list is Redis's own again
    assert redis.sismember(f"vm:user:{user.pk}", str(lab.pk))
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "session_id").decode() == session_id


def test_after_redis_lost_everything_staff_still_see_every_live_machine(fake_provider, staff_client, redis):
    # given two live machines, a Redis emptied since, and a third machine started after
    first = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    second = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    redis.flushdb()
    third = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    # when
    response = staff_client.get("/api/v1/admin/vms/")
    paged = staff_client.get("/api/v1/admin/vms/?limit=1&offset=1")
    # then every one is listed, soonest-expiring first
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [item["session_id"] for item in body["results"]] == [first, second, third]
    assert body["results"][0]["user_id"]
    assert [item["session_id"] for item in paged.json()["results"]] == [second]


def test_after_redis_lost_everything_a_start_returns_the_live_machine(
    fake_provider, user, learner_client, redis
):
    # given
    lab = machine_lab()
    session_id = running_machine(learner_client, lab)
    redis.flushdb()
    # when
    response = learner_client.post(url(lab))
    # then
    assert response.status_code == 200
    assert (response.json()["session_id"], response.json()["status"]) == (session_id, "running")
    assert VMSession.objects.count() == 1


def test_a_redis_restarted_from_an_older_snapshot_still_returns_the_live_machine_on_start(
    fake_provider, user, learner_client, redis
):
    # given a snapshot of Redis taken while the learner's machine for another lab ran
    earlier = machine_lab()
    stopped = running_machine(learner_client, earlier)
    snapshot = {key: redis.dump(key) for key in redis.scan_iter("vm:*")}
    # and since then that machine stopped and one for this lab started
    assert learner_client.delete(url(earlier)).status_code == 202
    services.vm_teardown(session_id=stopped)
    lab = machine_lab()
    live = running_machine(learner_client, lab)
    # when Redis comes back with the snapshot only
    redis.flushdb()
    for key, value in snapshot.items():
        redis.restore(key, 0, value)
    response = learner_client.post(url(lab))
    # then the learner gets their live machine, not a refusal for the stopped one
    assert response.status_code == 200
    assert response.json()["session_id"] == live
    assert VMSession.objects.filter(user=user).count() == 2
