"""The staff's pages: live machines from Redis with a stop button, and the history."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labs.models import Lab, MachineTemplate
from tests.factories import UserFactory
from tests.labs.factories import LabFactory, lab_admin_form, machine_inline_form
from tests.vms.support import machine_lab
from vms import services
from vms.models import StopReason, VMSession

pytestmark = pytest.mark.django_db


def test_live_machines_page_lists_what_redis_holds_with_time_left(fake_provider, admin_client):
    # given
    learner = UserFactory(username="alice")
    lab = machine_lab()
    session_id = services.vm_start(user=learner, lab=lab).state.session_id
    services.vm_provision(session_id=session_id)
    # when
    response = admin_client.get("/admin/vms/livemachine/")
    # then
    assert response.status_code == 200
    page = response.content.decode()
    assert "alice" in page
    assert lab.title in page
    assert "http://127.0.0.1:40000/" in page
    assert "119 min" in page or "120 min" in page
    assert f"/admin/vms/livemachine/{session_id}/stop/" in page


def test_the_stop_button_stops_the_machine(fake_provider, admin_client):
    session_id = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    response = admin_client.post(f"/admin/vms/livemachine/{session_id}/stop/")
    assert response.status_code == 302
    row = VMSession.objects.get(pk=session_id)
    assert row.stop_reason == StopReason.ADMIN


def test_history_filters_and_searches(fake_provider, admin_client):
    # given
    learner = UserFactory(username="bob")
    session_id = services.vm_start(user=learner, lab=machine_lab()).state.session_id
    # when / then
    assert "bob" in admin_client.get("/admin/vms/vmsession/?q=bob").content.decode()
    by_id = admin_client.get(f"/admin/vms/vmsession/?q={session_id}").content.decode()
    assert session_id[:8] in by_id
    assert admin_client.get("/admin/vms/vmsession/?status__exact=provisioning").status_code == 200
    assert (
        "0 machine sessions"
        in admin_client.get("/admin/vms/vmsession/?status__exact=stopped").content.decode()
    )


def test_operators_see_the_pages_and_may_stop_machines(fake_provider, operator):
    # given
    client = Client()
    client.force_login(operator)
    session_id = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    # when / then
    assert client.get("/admin/vms/livemachine/").status_code == 200
    assert client.get("/admin/vms/vmsession/").status_code == 200
    assert client.post(f"/admin/vms/livemachine/{session_id}/stop/").status_code == 302
    assert VMSession.objects.get(pk=session_id).stop_reason == StopReason.ADMIN


def test_staff_without_machine_permissions_cannot_stop(fake_provider):
    clerk = UserFactory(is_staff=True)
    client = Client()
    client.force_login(clerk)
    session_id = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    assert client.post(f"/admin/vms/livemachine/{session_id}/stop/").status_code == 403
    assert client.get("/admin/vms/livemachine/").status_code == 403


def test_the_history_action_stops_the_selected_live_machines(fake_provider, admin_client):
    # given a live machine and a closed one
    live = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    user, lab = UserFactory(), machine_lab()
    closed = services.vm_start(user=user, lab=lab).state.session_id
    services.vm_stop(user=user, lab_id=lab.pk)
    services.vm_teardown(session_id=closed)
    # when
    response = admin_client.post(
        "/admin/vms/vmsession/", {"action": "stop_selected", "_selected_action": [live, closed]}
    )
    # then
    assert response.status_code == 302
    assert VMSession.objects.get(pk=live).stop_reason == StopReason.ADMIN
    assert VMSession.objects.get(pk=closed).stop_reason == StopReason.USER


def test_the_labs_admin_refuses_a_machine_template_this_platform_will_not_start(admin_client):
    # given a lab, and a template asking for an image, a capability and a size the start
    # policy (VM_ALLOWED_IMAGES, VM_ALLOWED_CAPABILITIES, VM_MAX_MEMORY_MB) refuses
    lab = LabFactory(title="Before")
    form = lab_admin_form(
        lab,
        title="After",
        **machine_inline_form(
            image="docker.io/evil/miner:latest",
            ports='[{"port": 8080, "protocol": "http"}]',
            memory_mb="65536",
            capabilities='["SYS_ADMIN"]',
        ),
    )
    # when staff save it inline on the lab page
    response = admin_client.post(reverse("admin:labs_lab_change", args=[lab.pk]), form)
    # then the form lists every problem the start would have refused, and saves nothing
    assert response.status_code == 200
    content = response.content.decode()
    assert "The image docker.io/evil/miner:latest is not allowed here" in content
    assert "Capabilities not allowed here: SYS_ADMIN." in content
    assert "Memory must be between 16 and 2048 MB." in content
    assert not MachineTemplate.objects.exists()
    assert Lab.objects.get(pk=lab.pk).title == "Before"


def test_the_machine_template_page_saves_a_template_the_policy_allows(admin_client):
    # given an allowed image, an allowed capability and sizes under the ceilings
    lab = LabFactory()
    form = {
        "lab": lab.pk,
        "image": "cyberlab/demo:latest",
        "ports": '[{"port": 22, "protocol": "ssh"}]',
        "memory_mb": "128",
        "cpus": "1",
        "environment": '{"MODE": "easy"}',
        "capabilities": '["NET_BIND_SERVICE"]',
        "ssh_user": "user",
    }
    # when / then
    response = admin_client.post(reverse("admin:labs_machinetemplate_add"), form)
    assert response.status_code == 302
    assert MachineTemplate.objects.get(lab=lab).capabilities == ["NET_BIND_SERVICE"]
