"""The sweeper and the reconciler, with the fake provider."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cyberlab.events import services as events
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import ledger, maintenance, selectors, services, state
from vms.models import StopReason, VMSession, VMStatus

pytestmark = pytest.mark.django_db


def running(user=None, lab=None) -> VMSession:
    user = user or UserFactory()
    lab = lab or machine_lab()
    session_id = services.vm_start(user=user, lab=lab).state.session_id
    services.vm_provision(session_id=session_id)
    return VMSession.objects.get(pk=session_id)


def expire(session: VMSession, *, ago: int = 5) -> None:
    """Moves the machine's expiry into the past, in the ledger and in Redis."""
    VMSession.objects.filter(pk=session.pk).update(expires_at=timezone.now() - timedelta(seconds=ago))
    session.refresh_from_db()
    ledger.publish_session(session=session)


def teardown_all(report) -> None:
    """Runs the teardowns the sweep queued, as the worker would."""
    for session_id in (
        report.expired + report.idle + report.stopped + report.stuck_starting + report.stuck_stopping
    ):
        services.vm_teardown(session_id=session_id)


def test_sweeper_tears_down_what_is_due_and_leaves_the_rest(fake_provider, redis):
    # given
    due, fresh = running(), running()
    expire(due)
    # when
    report = maintenance.vm_sweep()
    teardown_all(report)
    # then
    assert report.expired == [str(due.pk)]
    due.refresh_from_db()
    assert (due.status, due.stop_reason) == (VMStatus.STOPPED, StopReason.EXPIRED)
    assert set(fake_provider.instances) == {str(fresh.pk)}
    assert redis.exists(f"vm:state:{due.user_id}:{due.lab_id}") == 0
    assert redis.zrange("vm:expiry", 0, -1) == [f"{fresh.user_id}:{fresh.lab_id}".encode()]


def test_sweeper_finds_expired_sessions_redis_forgot(fake_provider, redis):
    # given an expired machine whose live state was flushed
    session = running()
    expire(session)
    redis.flushdb()
    # when
    report = maintenance.vm_sweep()
    teardown_all(report)
    # then
    assert report.expired == [str(session.pk)]
    assert fake_provider.instances == {}
    session.refresh_from_db()
    assert session.status == VMStatus.STOPPED


def test_sweeper_work_grows_with_what_is_due_not_with_what_is_live(fake_provider, settings):
    settings.VM_MAX_TOTAL = 100

    # given two due machines among two, then the same two among forty live ones
    def sweep_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            report = maintenance.vm_sweep(dry_run=True)
        assert len(report.expired) == 2
        return len(queries)

    due = [running(), running()]
    for session in due:
        expire(session)
    few = sweep_queries()
    for _ in range(38):
        running()
    # when / then: the same queries, each an index range over what is due
    assert sweep_queries() == few


def test_sweep_skips_a_machine_extended_since_it_was_found_due(fake_provider):
    # given a machine due in Redis whose ledger expiry was just pushed back
    session = running()
    expire(session)
    VMSession.objects.filter(pk=session.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    # when
    report = maintenance.vm_sweep()
    # then
    assert report.expired == []
    session.refresh_from_db()
    assert session.status == VMStatus.RUNNING


def test_two_sweeps_at_once_tear_each_machine_down_once(fake_provider):
    # given
    sessions = [running() for _ in range(3)]
    for session in sessions:
        expire(session)
    # when the lock is not there to help
    first = maintenance.vm_sweep(use_lock=False)
    second = maintenance.vm_sweep(use_lock=False)
    # then
    assert sorted(first.expired) == sorted(str(s.pk) for s in sessions)
    assert second.expired == []


def test_a_sweep_running_elsewhere_makes_this_one_skip(fake_provider):
    token = state.lock_acquire(name="sweep", ttl=30)
    assert maintenance.vm_sweep().skipped is True
    state.lock_release(name="sweep", token=token)
    assert maintenance.vm_sweep().skipped is False


def test_dry_run_changes_nothing(fake_provider):
    session = running()
    expire(session)
    report = maintenance.vm_sweep(dry_run=True)
    assert report.expired == [str(session.pk)]
    session.refresh_from_db()
    assert session.status == VMStatus.RUNNING


def test_sweeper_fails_starts_whose_worker_died_and_removes_their_leftovers(fake_provider, redis):
    # given a start stuck in provisioning, with an instance its dead worker left behind
    user, lab = UserFactory(), machine_lab()
    session_id = services.vm_start(user=user, lab=lab).state.session_id
    fake_provider.plant(session_id=session_id)
    VMSession.objects.filter(pk=session_id).update(status_changed_at=timezone.now() - timedelta(hours=1))
    # when
    report = maintenance.vm_sweep()
    teardown_all(report)
    # then
    assert report.stuck_starting == [session_id]
    assert fake_provider.instances == {}
    row = VMSession.objects.get(pk=session_id)
    assert (row.status, row.stop_reason) == (VMStatus.FAILED, StopReason.FAILED)
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "status") == b"failed"
    assert redis.zcard("vm:expiry") == 0


def test_sweeper_retries_a_teardown_that_never_finished(fake_provider):
    # given a stop whose teardown task was lost
    session = running()
    services.vm_stop(user=session.user, lab_id=session.lab_id)
    VMSession.objects.filter(pk=session.pk).update(status_changed_at=timezone.now() - timedelta(hours=1))
    # when
    report = maintenance.vm_sweep()
    teardown_all(report)
    # then
    assert report.stuck_stopping == [str(session.pk)]
    assert fake_provider.instances == {}


def user_events(redis, user) -> list[tuple[str, dict]]:
    """The events in the learner's replay window, oldest first."""
    entries = redis.xrange(events.user_stream_key(user_id=user.pk))
    return [(fields[b"event"].decode(), json.loads(fields[b"data"])) for _, fields in entries]


def test_sweeper_warns_once_then_once_more_before_expiry(
    fake_provider, redis, settings, django_capture_on_commit_callbacks
):
    # given a machine with five minutes left (warnings at ten and two minutes)
    settings.VM_EXPIRY_WARNING, settings.VM_EXPIRY_FINAL_WARNING = 600, 120
    session = running()
    VMSession.objects.filter(pk=session.pk).update(expires_at=timezone.now() + timedelta(minutes=5))
    # when swept twice, then again at one minute left
    with django_capture_on_commit_callbacks(execute=True):
        first = maintenance.vm_sweep()
        second = maintenance.vm_sweep()
        VMSession.objects.filter(pk=session.pk).update(expires_at=timezone.now() + timedelta(minutes=1))
        third = maintenance.vm_sweep()
    # then the learner was warned once, then once more (the final warning)
    assert (first.warned, second.warned, third.warned) == ([str(session.pk)], [], [str(session.pk)])
    warnings = [data for name, data in user_events(redis, session.user) if name == "machine.expiring"]
    assert [w["final"] for w in warnings] == [False, True]
    assert warnings[0]["session_id"] == str(session.pk)
    assert warnings[0]["reason"] == "lifetime"


def test_an_expired_machine_is_shown_expired_before_the_sweeper_runs(fake_provider):
    # given a running machine whose expiry just passed, not swept yet
    session = running()
    expire(session, ago=1)
    # when / then: it reads as being torn down, and cannot be extended
    shown = selectors.vm_state_for_user(user_id=session.user_id, lab_id=session.lab_id)
    assert (shown.status, shown.reason, shown.can_extend) == ("stopping", "expired", False)


def test_a_machine_gone_from_the_engine_is_failed_and_its_learner_told(
    fake_provider, redis, django_capture_on_commit_callbacks
):
    # given a running machine
    session = running()
    # when the engine reports its container removed
    with django_capture_on_commit_callbacks(execute=True):
        gone = maintenance.vm_instance_gone(
            session_id=str(session.pk), instance_id=session.instance_id, reason="The machine was removed."
        )
    # then the session failed with that reason, and the learner got the event
    assert gone
    session.refresh_from_db()
    assert (session.status, session.failure) == (VMStatus.FAILED, "The machine was removed.")
    machine = [data for name, data in user_events(redis, session.user) if name == "machine"]
    assert machine[-1]["status"] == "failed"
    assert machine[-1]["reason"] == "The machine was removed."
    # and a second report of the same machine changes nothing
    assert not maintenance.vm_instance_gone(session_id=str(session.pk), instance_id="", reason="again")


def test_stop_all_stops_every_live_machine_in_scope(fake_provider):
    # given
    user = UserFactory()
    mine, other = running(user=user), running()
    # when
    report = maintenance.vm_sweep(stop_all=True, user_id=user.pk)
    teardown_all(report)
    # then
    assert report.stopped == [str(mine.pk)]
    mine.refresh_from_db()
    assert mine.stop_reason == StopReason.ADMIN
    assert set(fake_provider.instances) == {str(other.pk)}


def test_reconciler_removes_instances_with_no_live_session(fake_provider):
    # given an instance nobody started, and one whose session is closed
    stray = fake_provider.plant(session_id="not-a-session")
    closed = running()
    services.vm_stop(user=closed.user, lab_id=closed.lab_id)
    services.vm_teardown(session_id=str(closed.pk))
    fake_provider.plant(session_id=str(closed.pk))
    live = running()
    # when
    report = maintenance.vm_reconcile()
    # then
    assert sorted(report.orphans) == sorted([stray.session_id, str(closed.pk)])
    assert set(fake_provider.instances) == {str(live.pk)}


def test_reconciler_closes_running_sessions_whose_instance_vanished(fake_provider, redis):
    # given
    session = running()
    fake_provider.instances.pop(str(session.pk))
    # when
    report = maintenance.vm_reconcile()
    # then
    assert report.vanished == [str(session.pk)]
    session.refresh_from_db()
    assert (session.status, session.stop_reason) == (VMStatus.FAILED, StopReason.FAILED)
    assert redis.hget(f"vm:state:{session.user_id}:{session.lab_id}", "status") == b"failed"


def test_reconciler_closes_a_machine_that_crashed(fake_provider):
    session = running()
    fake_provider.plant(session_id=str(session.pk), running=False)
    report = maintenance.vm_reconcile()
    assert report.vanished == [str(session.pk)]
    assert fake_provider.instances == {}


def test_reconciler_leaves_starting_machines_alone(fake_provider):
    # given a start whose instance exists but is not recorded yet
    session_id = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    fake_provider.plant(session_id=session_id)
    # when
    report = maintenance.vm_reconcile()
    # then
    assert report.orphans == []
    assert report.vanished == []
    assert session_id in fake_provider.instances


def test_reconciler_drops_state_of_closed_sessions_and_stale_index_entries(fake_provider, redis):
    # given a ghost: state of a session the ledger closed, and an index entry without state
    session = running()
    ghost = state.snapshot(session)
    VMSession.objects.filter(pk=session.pk).update(
        status=VMStatus.STOPPED, stopped_at=timezone.now(), stop_reason=StopReason.ADMIN
    )
    fake_provider.instances.clear()
    redis.zadd("vm:expiry", {"999:999": 1})
    # when
    report = maintenance.vm_reconcile()
    # then
    assert report.ghosts == [ghost["session_id"]]
    assert redis.exists(f"vm:state:{session.user_id}:{session.lab_id}") == 0
    assert redis.zcard("vm:expiry") == 0


def test_reconciler_leaves_a_fresh_claim_that_has_no_row_yet(fake_provider, redis):
    # given a claim whose ledger row is still being committed
    user, lab = UserFactory(), machine_lab()
    now = timezone.now()
    pending = VMSession(
        user=user,
        lab=lab,
        provider="fake",
        image="x",
        started_at=now,
        expires_at=now + timedelta(hours=1),
        status_changed_at=now,
    )
    assert state.claim(session=pending).outcome == "claimed"
    # when
    report = maintenance.vm_reconcile()
    # then
    assert report.ghosts == []
    assert redis.exists(f"vm:state:{user.pk}:{lab.pk}") == 1


def test_reconcile_dry_run_changes_nothing(fake_provider):
    stray = fake_provider.plant(session_id="not-a-session")
    report = maintenance.vm_reconcile(dry_run=True)
    assert report.orphans == [stray.session_id]
    assert "not-a-session" in fake_provider.instances
