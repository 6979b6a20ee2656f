"""Idle reaping: a machine nobody used through the gateway is warned, then stopped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.vms.test_maintenance import running, teardown_all, user_events
from vms import activity, maintenance
from vms.models import StopReason, VMSession, VMStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def idle_settings(settings):
    settings.VM_IDLE_TIMEOUT, settings.VM_IDLE_GRACE, settings.VM_EXPIRY_WARNING = 600, 120, 0
    settings.VM_EXPIRY_FINAL_WARNING = 0
    return settings


def idle_warnings(redis, user) -> list[dict]:
    return [d for name, d in user_events(redis, user) if name == "machine.expiring" and d["reason"] == "idle"]


def test_an_idle_machine_is_warned_then_stopped_after_the_grace(
    fake_provider, redis, idle_settings, django_capture_on_commit_callbacks
):
    # given a machine started (its start counts as activity), then left alone
    session = running()
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        # when swept before the idle timeout: nothing
        early = maintenance.vm_sweep(now=now + timedelta(seconds=599))
        # when swept past it: a warning, and the machine still runs
        warned = maintenance.vm_sweep(now=now + timedelta(seconds=601))
        again = maintenance.vm_sweep(now=now + timedelta(seconds=650))
        # when still idle after the grace: stopped with reason idle
        reaped = maintenance.vm_sweep(now=now + timedelta(seconds=601 + 121))
    assert (early.warned, early.idle) == ([], [])
    assert (warned.warned, warned.idle) == ([str(session.pk)], [])
    assert (again.warned, again.idle) == ([], [])
    assert reaped.idle == [str(session.pk)]
    assert len(idle_warnings(redis, session.user)) == 1
    teardown_all(reaped)
    session.refresh_from_db()
    assert (session.status, session.stop_reason) == (VMStatus.STOPPED, StopReason.IDLE)
    assert fake_provider.instances == {}
    assert redis.zcard(activity.KEY) == 0


def test_a_machine_used_after_its_idle_warning_keeps_running(
    fake_provider, redis, idle_settings, django_capture_on_commit_callbacks, monkeypatch
):
    # given an idle machine that was warned
    session = running()
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert maintenance.vm_sweep(now=now + timedelta(seconds=601)).warned == [str(session.pk)]
        # when the learner uses it through the gateway (time moved on)
        later = now + timedelta(seconds=700)
        monkeypatch.setattr(activity.time, "time", later.timestamp)
        activity.touch(user_id=session.user_id, lab_id=session.lab_id, force=True)
        # then the grace passing reaps nothing
        swept = maintenance.vm_sweep(now=now + timedelta(seconds=601 + 121))
    assert swept.idle == []
    assert VMSession.objects.get(pk=session.pk).status == VMStatus.RUNNING


def test_gateway_traffic_is_written_at_most_once_per_resolution(fake_provider, redis, settings, monkeypatch):
    settings.VM_ACTIVITY_RESOLUTION = 10
    session = running()
    written = redis.zscore(activity.KEY, f"{session.user_id}:{session.lab_id}")
    clock = [written + 5]
    monkeypatch.setattr(activity.time, "time", lambda: clock[0])
    activity.touch(user_id=session.user_id, lab_id=session.lab_id)
    assert redis.zscore(activity.KEY, f"{session.user_id}:{session.lab_id}") == written
    monkeypatch.setattr(activity.time, "monotonic", lambda: 10**9)
    activity.touch(user_id=session.user_id, lab_id=session.lab_id)
    assert redis.zscore(activity.KEY, f"{session.user_id}:{session.lab_id}") == clock[0]


def test_with_idle_reaping_off_nothing_is_reaped(fake_provider, idle_settings):
    idle_settings.VM_IDLE_TIMEOUT = 0
    session = running()
    swept = maintenance.vm_sweep(now=timezone.now() + timedelta(days=1, seconds=-1))
    assert str(session.pk) not in swept.idle
