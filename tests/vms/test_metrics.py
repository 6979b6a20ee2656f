"""/metrics' figures of machines, read from the ledger and the sweeper's stamp."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.cyberlab.test_metrics import TOKEN, scrape, value
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import maintenance, services
from vms.models import VMSession

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN


def test_machines_starts_stops_and_start_times_come_from_the_ledger(fake_provider):
    learner, lab = UserFactory(), machine_lab()
    session_id = services.vm_start(user=learner, lab=lab).state.session_id
    samples = scrape()
    assert value(samples, "cyberlab_machines", status="provisioning") == 1
    assert value(samples, "cyberlab_machine_starts_total") == 1
    services.vm_provision(session_id=session_id)
    samples = scrape()
    assert value(samples, "cyberlab_machines", status="running") == 1
    assert value(samples, "cyberlab_machines", status="provisioning") == 0
    assert value(samples, "cyberlab_machine_start_seconds_count") == 1
    assert value(samples, "cyberlab_machine_start_seconds_bucket", le="300.0") == 1
    services.vm_stop(user=learner, lab_id=lab.pk)
    services.vm_teardown(session_id=session_id)
    samples = scrape()
    assert value(samples, "cyberlab_machines", status="running") == 0
    assert value(samples, "cyberlab_machine_stops_total", reason="user") == 1


def test_sweeper_lag_is_the_age_of_the_oldest_overdue_machine_and_the_sweep_is_stamped(fake_provider):
    session_id = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    services.vm_provision(session_id=session_id)
    assert value(scrape(), "cyberlab_sweeper_lag_seconds") == 0
    VMSession.objects.filter(pk=session_id).update(expires_at=timezone.now() - timedelta(seconds=90))
    assert value(scrape(), "cyberlab_sweeper_lag_seconds") >= 90
    # the sweeper's pass, seen from three hours on: everything is due
    maintenance.vm_sweep(now=timezone.now() + timedelta(hours=3))
    samples = scrape()
    assert value(samples, "cyberlab_sweeper_lag_seconds") == 0
    assert value(samples, "cyberlab_sweep_last_timestamp_seconds") >= timezone.now().timestamp() - 60


def test_readyz_reports_the_engine_as_the_worker_saw_it_and_the_beats_heartbeat(
    fake_provider, client, tmp_path
):
    from celery import Celery

    from cyberlab.celery import HeartbeatScheduler

    # before any worker or beat reported, readyz says so, and stays ready
    body = client.get("/readyz").json()
    assert body["status"] == "ok"
    assert body["workers"]["engine"]["ok"] is False
    assert body["workers"]["beat"]["ok"] is False
    # when a sweep ran (it reports the engine) and the beat ticked
    maintenance.vm_sweep()
    # (the scheduler of an app with nothing scheduled: its tick sends no task)
    scheduler = HeartbeatScheduler(
        app=Celery("beat-test", broker="memory://"), schedule_filename=str(tmp_path / "s")
    )
    scheduler.tick()
    scheduler.close()
    workers = client.get("/readyz").json()["workers"]
    assert workers["engine"]["ok"] is True
    assert workers["beat"]["ok"] is True
    assert workers["beat"]["age_s"] < 5
    assert value(scrape(), "cyberlab_beat_heartbeat_timestamp_seconds") > 0
    # when the engine stops answering, the next sweep says so
    fake_provider.down = True
    maintenance.vm_sweep()
    engine = client.get("/readyz").json()["workers"]["engine"]
    assert engine["ok"] is False
    assert "down" in engine["error"]
