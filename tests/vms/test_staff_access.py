"""Staff entering a learner's machine: only with `vms.enter_vmsession`, with a reason, and
every entry recorded. The gateway's decisions are taken in process here; the proxy in
front of a real machine is tested in tests/integration/test_gateway.py."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from cyberlab.accounts.services import token_for
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import activity, gateway, services
from vms.models import MachineAccess

pytestmark = pytest.mark.django_db

PATTERN = "http://{name}.localhost:8001/"


@pytest.fixture(autouse=True)
def behind_the_gateway(settings, fake_provider):
    settings.VM_GATEWAY_URL = PATTERN
    settings.VM_ACTIVITY_RESOLUTION = 0
    fake_provider.publish = False
    return fake_provider


def running_machine():
    learner = UserFactory()
    state = services.vm_start(user=learner, lab=machine_lab()).state
    services.vm_provision(session_id=state.session_id)
    return learner, state.session_id


def staff_member(*, may_enter: bool = True):
    staff = UserFactory(is_staff=True)
    if may_enter:
        staff.user_permissions.add(Permission.objects.get(codename="enter_vmsession"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=staff)}")
    return staff, client


def host_and_token(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, parse_qs(parts.query)["token"][0]


def test_staff_with_the_permission_enter_with_a_reason_and_each_entry_is_counted():
    # given a learner's running machine and a staff member allowed to enter machines
    learner, session_id = running_machine()
    staff, client = staff_member()
    # when they ask for a way in, saying why
    response = client.post(f"/api/v1/admin/vms/{session_id}/access/", {"reason": "ticket 42"}, format="json")
    # then the access is recorded with its reason, and the links lead to the machine
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["user_id"] == learner.pk
    assert body["reason"] == "ticket 42"
    access = MachineAccess.objects.get(pk=body["access_id"])
    assert (access.staff, str(access.session_id), access.entries) == (staff, session_id, 0)
    http = next(port for port in body["ports"] if port["protocol"] == "http")
    host, token = host_and_token(http["url"])
    # when the link is used, the entry is counted, and the pass opens the machine
    lab_id = services.VMSession.objects.get(pk=session_id).lab_id
    seen_before = activity.last_seen(machines=[(learner.pk, lab_id)])
    cookie = gateway.redeem(host=host, token=token)
    target = gateway.admit(host=host, cookie=cookie)
    assert target.host == "192.0.2.10"
    access.refresh_from_db()
    assert access.entries == 1
    assert access.first_entered_at is not None
    assert access.last_entered_at >= access.first_entered_at
    # and the staff's traffic is not the learner's: it keeps no idle machine alive
    assert activity.last_seen(machines=[(learner.pk, lab_id)]) == seen_before


def test_taking_the_permission_away_closes_the_machine_to_that_staff_member_at_the_next_request():
    _, session_id = running_machine()
    staff, client = staff_member()
    body = client.post(f"/api/v1/admin/vms/{session_id}/access/", {"reason": "support"}, format="json").json()
    host, token = host_and_token(body["ports"][0]["url"])
    cookie = gateway.redeem(host=host, token=token)
    gateway.admit(host=host, cookie=cookie)
    # when the permission is taken away
    staff.user_permissions.clear()
    # then the same pass is refused
    with pytest.raises(gateway.Refused) as refused:
        gateway.admit(host=host, cookie=cookie)
    assert refused.value.status == 403


def test_staff_without_the_permission_and_learners_get_no_way_in():
    _, session_id = running_machine()
    _, clerk = staff_member(may_enter=False)
    learner = APIClient()
    learner.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=UserFactory())}")
    for client in (clerk, learner):
        response = client.post(f"/api/v1/admin/vms/{session_id}/access/", {"reason": "x"}, format="json")
        assert response.status_code == 403
    assert not MachineAccess.objects.exists()


def test_an_access_without_a_reason_or_to_no_running_machine_is_refused_with_why():
    _, client = staff_member()
    _, session_id = running_machine()
    missing = client.post(f"/api/v1/admin/vms/{session_id}/access/", {}, format="json")
    assert missing.status_code == 400
    assert "reason" in missing.json()["errors"]
    unknown = client.post(
        "/api/v1/admin/vms/00000000-0000-0000-0000-000000000000/access/", {"reason": "x"}, format="json"
    )
    assert unknown.status_code == 404
    provisioning = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    early = client.post(f"/api/v1/admin/vms/{provisioning}/access/", {"reason": "x"}, format="json")
    assert (early.status_code, early.json()["code"]) == (409, "vm_not_running")
    assert not MachineAccess.objects.exists()


def test_a_learners_own_pass_does_not_open_another_learners_machine_as_staff_passes_do():
    # a pass is bound to its machine: the owner's pass for one machine opens no other
    owner, session_id = running_machine()
    _, other_session = running_machine()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=owner)}")
    lab_id = services.VMSession.objects.get(pk=session_id).lab_id
    url = client.get(f"/api/v1/labs/{lab_id}/vm/").json()["connection"]["ports"][0]["url"]
    _, token = host_and_token(url)
    other_row = services.VMSession.objects.get(pk=other_session)
    other_host = urlsplit(gateway.origin(name=other_row.gateway_name)).netloc
    with pytest.raises(gateway.Refused) as refused:
        gateway.redeem(host=other_host, token=token)
    assert refused.value.status == 403


def test_the_live_machines_page_shows_gateway_machines_and_lets_permitted_staff_enter(admin_client):
    # given a machine that publishes nothing on the lab host (the default)
    _, session_id = running_machine()
    # when staff look at the live machines
    page = admin_client.get("/admin/vms/livemachine/")
    # then it is listed, reached through the gateway
    assert page.status_code == 200
    assert "8080/http (through the gateway)" in page.content.decode()
    # when staff enter it with a reason, they go to the machine's entry link
    entered = admin_client.post(f"/admin/vms/livemachine/{session_id}/enter/", {"reason": "demo"})
    assert entered.status_code == 302
    assert gateway.ENTRY_PATH in entered["Location"]
    assert MachineAccess.objects.get().reason == "demo"
    # without a reason nothing is recorded
    assert admin_client.post(f"/admin/vms/livemachine/{session_id}/enter/", {}).status_code == 302
    assert MachineAccess.objects.count() == 1
    # and the record is on the machine's history page
    history = admin_client.get(f"/admin/vms/vmsession/{session_id}/change/").content.decode()
    assert "demo" in history


def test_staff_without_the_permission_cannot_enter_from_the_admin():
    _, session_id = running_machine()
    clerk = UserFactory(is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_livemachine"))
    client = Client()
    client.force_login(clerk)
    assert "Enter" not in client.get("/admin/vms/livemachine/").content.decode()
    assert client.post(f"/admin/vms/livemachine/{session_id}/enter/", {"reason": "x"}).status_code == 403
