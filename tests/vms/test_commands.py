"""The operators' commands: vm_status, cleanup_vms, reconcile_vms."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from tests.conftest import require
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import services
from vms.models import StopReason, VMSession, VMStatus

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def redis_cli_scan(pattern: str) -> list[str]:
    binary = shutil.which("redis-cli")
    require(binary is not None, "redis-cli is not installed")
    parts = urlsplit(settings.REDIS_URL)
    result = subprocess.run(
        [
            binary,
            "-h",
            parts.hostname,
            "-p",
            str(parts.port or 6379),
            "-n",
            parts.path.strip("/") or "0",
            "--scan",
            "--pattern",
            pattern,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(line for line in result.stdout.splitlines() if line)


def test_vm_status_lists_exactly_what_redis_cli_scan_finds(fake_provider):
    # given a running machine, a provisioning one and a failed one
    running = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    services.vm_provision(session_id=running)
    services.vm_start(user=UserFactory(), lab=machine_lab())
    fake_provider.fail_start = "broken"
    failed = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    services.vm_provision(session_id=failed)
    # when
    output = run("vm_status")
    # then
    listed = sorted(line.split()[0] for line in output.splitlines()[1:-1])
    assert listed == redis_cli_scan("vm:state:*")
    assert len(listed) == 3
    assert "http://127.0.0.1:40000/" in output
    assert output.splitlines()[-1] == "3 machine(s)."


def test_cleanup_vms_dry_run_then_for_real(fake_provider):
    # given an expired machine
    session_id = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    services.vm_provision(session_id=session_id)
    VMSession.objects.filter(pk=session_id).update(expires_at=timezone.now() - timedelta(minutes=1))
    # when
    dry = run("cleanup_vms", "--dry-run")
    # then
    assert f"Would stop {session_id} (expired)" in dry
    assert VMSession.objects.get(pk=session_id).status == VMStatus.RUNNING
    # when
    real = run("cleanup_vms")
    # then
    assert f"Stopping {session_id} (expired)" in real
    assert VMSession.objects.get(pk=session_id).status == VMStatus.STOPPING


def test_cleanup_vms_all_for_one_lab_stops_only_that_lab(fake_provider):
    # given
    lab = machine_lab()
    inside = services.vm_start(user=UserFactory(), lab=lab).state.session_id
    outside = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    # when
    run("cleanup_vms", "--all", "--lab", str(lab.pk))
    # then
    assert VMSession.objects.get(pk=inside).stop_reason == StopReason.ADMIN
    assert VMSession.objects.get(pk=outside).status == VMStatus.PROVISIONING


def test_cleanup_vms_for_one_user(fake_provider):
    user = UserFactory()
    mine = services.vm_start(user=user, lab=machine_lab()).state.session_id
    other = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    run("cleanup_vms", "--all", "--user", str(user.pk))
    assert VMSession.objects.get(pk=mine).status == VMStatus.STOPPING
    assert VMSession.objects.get(pk=other).status == VMStatus.PROVISIONING


def test_reconcile_vms_dry_run_reports_orphans_without_removing_them(fake_provider):
    fake_provider.plant(session_id="stray")
    output = run("reconcile_vms", "--dry-run")
    assert "Would remove orphan stray" in output
    assert "stray" in fake_provider.instances
    run("reconcile_vms")
    assert "stray" not in fake_provider.instances
