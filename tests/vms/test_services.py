"""The lifecycle services against real Postgres and Redis, with the fake provider."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from labs.flags import dynamic_flag_value
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import errors, services, state
from vms.models import StopReason, VMSession, VMStatus

pytestmark = pytest.mark.django_db


def start_running(user, lab):
    result = services.vm_start(user=user, lab=lab)
    services.vm_provision(session_id=result.state.session_id)
    return VMSession.objects.get(pk=result.state.session_id)


def test_start_writes_provisioning_state_and_a_ledger_row(fake_provider, user, redis):
    # given
    lab = machine_lab()
    # when
    result = services.vm_start(user=user, lab=lab)
    # then
    assert result.created is True
    session = VMSession.objects.get(pk=result.state.session_id)
    assert session.status == VMStatus.PROVISIONING
    stored = {k.decode(): v.decode() for k, v in redis.hgetall(f"vm:state:{user.pk}:{lab.pk}").items()}
    assert stored["status"] == "provisioning"
    assert stored["session_id"] == str(session.pk)
    assert redis.sismember(f"vm:user:{user.pk}", str(lab.pk))
    assert redis.zscore("vm:expiry", f"{user.pk}:{lab.pk}") == pytest.approx(session.expires_at.timestamp())
    # the state lives as long as the machine plus the grace period, not forever
    assert 7200 < redis.ttl(f"vm:state:{user.pk}:{lab.pk}") <= 7200 + 600


def test_provisioning_flips_to_running_with_connection_info_and_the_learners_flag(fake_provider, user, redis):
    # given
    lab = machine_lab(ports=[{"port": 8080, "protocol": "http"}, {"port": 22, "protocol": "ssh"}, 31337])
    flag = lab.flags.get()
    # when
    session = start_running(user, lab)
    # then
    assert session.status == VMStatus.RUNNING
    assert session.instance_id
    spec = fake_provider.specs[str(session.pk)]
    assert spec.environment["FLAG"] == dynamic_flag_value(user_id=user.pk, flag_id=flag.pk)
    addresses = [port["address"] for port in session.connection["ports"]]
    assert addresses == ["http://127.0.0.1:40000/", "ssh -p 40001 user@127.0.0.1", "nc 127.0.0.1 40002"]
    stored = redis.hgetall(f"vm:state:{user.pk}:{lab.pk}")
    assert stored[b"status"] == b"running"
    assert json.loads(stored[b"connection"]) == session.connection


def test_second_start_returns_the_live_machine(fake_provider, user):
    # given
    lab = machine_lab()
    first = services.vm_start(user=user, lab=lab)
    # when
    second = services.vm_start(user=user, lab=lab)
    # then
    assert second.created is False
    assert second.state.session_id == first.state.session_id
    assert VMSession.objects.count() == 1


def test_start_when_redis_forgot_the_machine_returns_the_ledgers_one(fake_provider, user, redis):
    # given a running machine whose live state was flushed
    lab = machine_lab()
    session = start_running(user, lab)
    redis.flushdb()
    # when
    result = services.vm_start(user=user, lab=lab)
    # then the ledger fenced off a second machine, and Redis was rebuilt from it
    assert result.created is False
    assert result.state.session_id == str(session.pk)
    assert VMSession.objects.count() == 1
    assert fake_provider.starts == 1
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "status") == b"running"


def test_start_over_the_per_learner_limit_is_a_409(fake_provider, user):
    # given
    services.vm_start(user=user, lab=machine_lab())
    # when / then
    with pytest.raises(errors.UserLimitReached) as caught:
        services.vm_start(user=user, lab=machine_lab())
    assert caught.value.status_code == 409


def test_per_learner_limit_holds_in_the_ledger_when_redis_forgot(fake_provider, user, redis):
    # given
    services.vm_start(user=user, lab=machine_lab())
    redis.flushdb()
    # when / then
    with pytest.raises(errors.UserLimitReached):
        services.vm_start(user=user, lab=machine_lab())
    assert VMSession.objects.count() == 1


def test_start_over_the_global_cap_is_a_429(fake_provider):
    # given
    with override_settings(VM_MAX_TOTAL=2):
        services.vm_start(user=UserFactory(), lab=machine_lab())
        services.vm_start(user=UserFactory(), lab=machine_lab())
        # when / then
        with pytest.raises(errors.PlatformFull) as caught:
            services.vm_start(user=UserFactory(), lab=machine_lab())
    assert caught.value.status_code == 429
    assert VMSession.objects.count() == 2


def test_stop_marks_stopping_then_teardown_removes_instance_keys_and_closes_the_row(
    fake_provider, user, redis
):
    # given
    lab = machine_lab()
    session = start_running(user, lab)
    # when
    stopped = services.vm_stop(user=user, lab_id=lab.pk)
    # then
    assert stopped.status == "stopping"
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "status") == b"stopping"
    # when the teardown runs
    services.vm_teardown(session_id=str(session.pk))
    # then
    session.refresh_from_db()
    assert session.status == VMStatus.STOPPED
    assert session.stop_reason == StopReason.USER
    assert session.stopped_at is not None
    assert str(session.pk) not in fake_provider.instances
    assert redis.exists(f"vm:state:{user.pk}:{lab.pk}") == 0
    assert redis.zscore("vm:expiry", f"{user.pk}:{lab.pk}") is None
    assert redis.sismember(f"vm:user:{user.pk}", str(lab.pk)) == 0


def test_stop_without_a_machine_is_a_404(fake_provider, user):
    with pytest.raises(errors.MachineNotFound):
        services.vm_stop(user=user, lab_id=machine_lab().pk)


def test_a_start_redelivered_after_its_session_was_stopped_does_not_resurrect_it(fake_provider, user, redis):
    # given a start whose session is stopped before the worker gets to it
    lab = machine_lab()
    result = services.vm_start(user=user, lab=lab)
    session_id = result.state.session_id
    services.vm_stop(user=user, lab_id=lab.pk)
    services.vm_teardown(session_id=session_id)
    # when the (redelivered) provisioning task runs
    services.vm_provision(session_id=session_id)
    # then nothing runs and nothing came back
    assert fake_provider.instances == {}
    assert redis.exists(f"vm:state:{user.pk}:{lab.pk}") == 0
    assert VMSession.objects.get(pk=session_id).status == VMStatus.STOPPED


def test_a_machine_created_while_its_session_was_being_stopped_is_removed_again(fake_provider, user, redis):
    # given the learner stops the machine while the provider is creating it
    lab = machine_lab()
    result = services.vm_start(user=user, lab=lab)
    session_id = result.state.session_id
    fake_provider.after_start = lambda spec: services.vm_stop(user=user, lab_id=lab.pk)
    # when
    services.vm_provision(session_id=session_id)
    # then the provisioning task removed what it created, and did not mark it running
    assert fake_provider.instances == {}
    assert VMSession.objects.get(pk=session_id).status == VMStatus.STOPPING
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "status") == b"stopping"


def test_a_failed_start_closes_the_row_leaves_nothing_and_shows_the_reason(fake_provider, user, redis):
    # given
    lab = machine_lab()
    fake_provider.fail_start = "The image is broken."
    result = services.vm_start(user=user, lab=lab)
    # when
    services.vm_provision(session_id=result.state.session_id)
    # then
    session = VMSession.objects.get(pk=result.state.session_id)
    assert session.status == VMStatus.FAILED
    assert session.stop_reason == StopReason.FAILED
    assert session.failure == "The image is broken."
    assert fake_provider.instances == {}
    stored = redis.hgetall(f"vm:state:{user.pk}:{lab.pk}")
    assert stored[b"status"] == b"failed"
    assert stored[b"reason"] == b"The image is broken."
    assert redis.zscore("vm:expiry", f"{user.pk}:{lab.pk}") is None
    # and a new start is allowed at once
    fake_provider.fail_start = None
    assert services.vm_start(user=user, lab=lab).created is True


def test_extend_is_refused_before_the_window(fake_provider, user):
    # given a fresh two-hour machine
    lab = machine_lab()
    start_running(user, lab)
    # when / then
    with pytest.raises(errors.ExtendRefused) as caught:
        services.vm_extend(user=user, lab_id=lab.pk)
    assert caught.value.get_codes() == "vm_extend_too_early"


def test_extend_in_the_window_pushes_the_expiry_up_to_the_renewals_and_max_lifetime(
    fake_provider, user, redis
):
    # given a machine in its last half hour
    lab = machine_lab()
    session = start_running(user, lab)
    now = timezone.now()
    VMSession.objects.filter(pk=session.pk).update(
        started_at=now - timedelta(minutes=100), expires_at=now + timedelta(minutes=20)
    )
    # when
    extended = services.vm_extend(user=user, lab_id=lab.pk)
    # then
    session.refresh_from_db()
    assert session.expires_at == pytest.approx(now + timedelta(minutes=80), abs=timedelta(seconds=5))
    assert session.renewals == 1
    assert extended.renewals == 1
    assert redis.zscore("vm:expiry", f"{user.pk}:{lab.pk}") == pytest.approx(session.expires_at.timestamp())
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "renewals") == b"1"
    # when it is in its window again late in its life, the extension stops at the max lifetime (4 h)
    VMSession.objects.filter(pk=session.pk).update(
        started_at=now - timedelta(minutes=200), expires_at=now + timedelta(minutes=10)
    )
    services.vm_extend(user=user, lab_id=lab.pk)
    session.refresh_from_db()
    assert session.expires_at == session.started_at + timedelta(hours=4)
    # and then no renewals are left
    VMSession.objects.filter(pk=session.pk).update(expires_at=now + timedelta(minutes=10))
    with pytest.raises(errors.ExtendRefused) as caught:
        services.vm_extend(user=user, lab_id=lab.pk)
    assert caught.value.get_codes() == "vm_no_renewals_left"


def test_reset_replaces_the_machine_with_a_fresh_one(fake_provider, user, redis):
    # given
    lab = machine_lab()
    old = start_running(user, lab)
    # when
    result = services.vm_reset(user=user, lab=lab)
    # then
    assert result.state.session_id != str(old.pk)
    old.refresh_from_db()
    assert old.status == VMStatus.STOPPING
    assert old.stop_reason == StopReason.RESET
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "session_id").decode() == result.state.session_id
    # when both tasks run, the old one's teardown leaves the new machine's keys alone
    services.vm_teardown(session_id=str(old.pk))
    services.vm_provision(session_id=result.state.session_id)
    assert set(fake_provider.instances) == {result.state.session_id}
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "status") == b"running"
    assert redis.zscore("vm:expiry", f"{user.pk}:{lab.pk}") is not None


def test_an_image_outside_the_allowed_patterns_is_refused_with_a_clear_reason(fake_provider, user):
    lab = machine_lab(image="evil/cryptominer:latest")
    with pytest.raises(errors.MachineRefused) as caught:
        services.vm_start(user=user, lab=lab)
    assert caught.value.status_code == 422
    assert "evil/cryptominer:latest is not allowed" in str(caught.value.detail)
    assert VMSession.objects.count() == 0


def test_capabilities_outside_the_allowed_list_are_refused(fake_provider, user):
    lab = machine_lab(capabilities=["NET_BIND_SERVICE", "cap_sys_admin"])
    with pytest.raises(errors.MachineRefused) as caught:
        services.vm_start(user=user, lab=lab)
    assert "SYS_ADMIN" in str(caught.value.detail)


def test_a_template_that_became_disallowed_fails_at_provisioning(fake_provider, user):
    # given a start accepted, then the operator narrows the allowed images
    lab = machine_lab()
    result = services.vm_start(user=user, lab=lab)
    # when
    with override_settings(VM_ALLOWED_IMAGES=["other/*"]):
        services.vm_provision(session_id=result.state.session_id)
    # then
    session = VMSession.objects.get(pk=result.state.session_id)
    assert session.status == VMStatus.FAILED
    assert "not allowed" in session.failure
    assert fake_provider.instances == {}


def test_provider_none_makes_machines_a_503(user):
    with override_settings(VM_PROVIDER="none"), pytest.raises(errors.MachinesDisabled) as caught:
        services.vm_start(user=user, lab=machine_lab())
    assert caught.value.status_code == 503


def test_an_engine_that_does_not_answer_makes_start_a_503_and_records_nothing(fake_provider, user, redis):
    fake_provider.down = True
    with pytest.raises(errors.EngineUnavailable):
        services.vm_start(user=user, lab=machine_lab())
    assert VMSession.objects.count() == 0
    assert redis.zcard("vm:expiry") == 0


def test_a_lab_without_a_machine_is_a_404(fake_provider, user):
    from tests.labs.factories import LabFactory

    with pytest.raises(errors.LabHasNoMachine):
        services.vm_start(user=user, lab=LabFactory())


def test_a_late_write_of_a_closed_session_is_refused(fake_provider, user, redis):
    # given a session read before it was closed
    lab = machine_lab()
    session = start_running(user, lab)
    stale = VMSession.objects.get(pk=session.pk)
    services.vm_stop(user=user, lab_id=lab.pk)
    services.vm_teardown(session_id=str(session.pk))
    # when a late writer projects its old copy
    written = state.put(session=stale)
    # then the closed marker refuses it: no ghost machine appears
    assert written is False
    assert redis.exists(f"vm:state:{user.pk}:{lab.pk}") == 0


def test_an_older_version_never_overwrites_a_newer_state(fake_provider, user, redis):
    # given
    lab = machine_lab()
    result = services.vm_start(user=user, lab=lab)
    provisioning = VMSession.objects.get(pk=result.state.session_id)
    services.vm_provision(session_id=str(provisioning.pk))
    # when the provisioning-time copy is written again
    assert state.put(session=provisioning) is False
    # then
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "status") == b"running"
