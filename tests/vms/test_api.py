"""The machine endpoints of the API contract (fake provider; Docker runs in integration)."""

from __future__ import annotations

import uuid

import pytest
import redis.connection
from django.test import override_settings
from rest_framework.test import APIClient

from cyberlab import ratelimit
from tests.factories import UserFactory
from tests.vms.support import machine_lab
from vms import services
from vms.models import StopReason, VMSession, VMStatus

pytestmark = pytest.mark.django_db


def url(lab, suffix=""):
    return f"/api/v1/labs/{lab.pk}/vm/{suffix}"


def test_start_answers_202_with_the_provisioning_state(fake_provider, learner_client):
    # given
    lab = machine_lab()
    # when
    response = learner_client.post(url(lab))
    # then
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "provisioning"
    assert uuid.UUID(body["session_id"])
    assert body["lab_id"] == lab.pk
    assert body["connection"] is None
    assert body["renewals_left"] == 2
    assert 7190 <= body["seconds_left"] <= 7200
    assert set(body) == {
        "session_id",
        "lab_id",
        "status",
        "connection",
        "started_at",
        "expires_at",
        "seconds_left",
        "renewals",
        "renewals_left",
        "can_extend",
        "reason",
    }


def test_second_start_answers_200_with_the_live_machine(fake_provider, learner_client):
    lab = machine_lab()
    first = learner_client.post(url(lab)).json()
    response = learner_client.post(url(lab))
    assert response.status_code == 200
    assert response.json()["session_id"] == first["session_id"]


def test_status_shows_connection_strings_once_running(fake_provider, user, learner_client):
    # given
    lab = machine_lab(ports=[{"port": 8080, "protocol": "http"}, {"port": 22, "protocol": "ssh"}])
    started = learner_client.post(url(lab)).json()
    services.vm_provision(session_id=started["session_id"])
    # when
    response = learner_client.get(url(lab))
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "running"
    web, ssh = body["connection"].pop("ports")
    assert body["connection"] == {"host": "127.0.0.1"}  # the gateway's own fields are not shown
    # the published ports, and the owner's ways in through the gateway
    entry = web.pop("url")
    assert entry.startswith("http://")
    assert ".localhost:8001/_cyberlab/enter?token=" in entry
    assert web == {"port": 8080, "host_port": 40000, "protocol": "http", "address": "http://127.0.0.1:40000/"}
    assert ssh.pop("url").endswith("/_tcp/22")
    assert ssh.pop("command").startswith("python -m vms.tunnel ")
    assert ssh.pop("token")
    assert ssh == {
        "port": 22,
        "host_port": 40001,
        "protocol": "ssh",
        "address": "ssh -p 40001 user@127.0.0.1",
    }
    assert body["can_extend"] is False


def test_status_without_a_machine_is_a_404(fake_provider, learner_client):
    response = learner_client.get(url(machine_lab()))
    assert response.status_code == 404
    assert response.json()["code"] == "no_machine"


def test_status_read_from_redis_makes_no_query_and_two_round_trips(
    fake_provider, user, django_assert_num_queries, monkeypatch
):
    # given a running machine, and its learner authenticated (what signing in costs is
    # the same for every endpoint, and not counted here)
    lab = machine_lab()
    session = services.vm_start(user=user, lab=lab).state.session_id
    services.vm_provision(session_id=session)
    client = APIClient()
    client.force_authenticate(user=user)
    client.get(url(lab))
    sent = []
    packed = redis.connection.AbstractConnection.send_packed_command

    def counting_packed(self, command, check_health=True):
        sent.append(b"".join(command) if isinstance(command, list | tuple) else command)
        return packed(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_packed)
    # when
    with django_assert_num_queries(0):
        response = client.get(url(lab))
    # then one round trip for the rate limit, one for the state
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert len(sent) == 2
    assert any(b"HGETALL" in command for command in sent)


def test_a_status_read_after_the_worker_changed_the_state_shows_the_change(
    fake_provider, user, learner_client
):
    # given a learner who saw their machine provisioning
    lab = machine_lab()
    session = learner_client.post(url(lab)).json()["session_id"]
    assert learner_client.get(url(lab)).json()["status"] == "provisioning"
    # when the worker brings it up, then the very next read shows it running
    services.vm_provision(session_id=session)
    assert learner_client.get(url(lab)).json()["status"] == "running"


def test_stop_answers_202_and_the_machine_goes(fake_provider, user, learner_client, redis):
    # given
    lab = machine_lab()
    started = learner_client.post(url(lab)).json()
    services.vm_provision(session_id=started["session_id"])
    # when
    response = learner_client.delete(url(lab))
    # then
    assert response.status_code == 202
    assert response.json()["status"] == "stopping"
    services.vm_teardown(session_id=started["session_id"])
    assert learner_client.get(url(lab)).status_code == 404
    assert redis.keys("vm:state:*") == []


def test_extend_too_early_is_a_409_with_a_clear_code(fake_provider, user, learner_client):
    lab = machine_lab()
    started = learner_client.post(url(lab)).json()
    services.vm_provision(session_id=started["session_id"])
    response = learner_client.post(url(lab, "extend/"))
    assert response.status_code == 409
    assert response.json()["code"] == "vm_extend_too_early"
    assert "last 30 minutes" in response.json()["detail"]


def test_reset_answers_202_with_a_new_session(fake_provider, user, learner_client):
    lab = machine_lab()
    started = learner_client.post(url(lab)).json()
    services.vm_provision(session_id=started["session_id"])
    response = learner_client.post(url(lab, "reset/"))
    assert response.status_code == 202
    assert response.json()["session_id"] != started["session_id"]
    assert response.json()["status"] == "provisioning"


def test_reset_without_a_machine_is_a_404(fake_provider, learner_client):
    assert learner_client.post(url(machine_lab(), "reset/")).status_code == 404


def test_start_of_an_unpublished_lab_is_a_404_for_a_learner(fake_provider, learner_client):
    lab = machine_lab()
    lab.published = False
    lab.save()
    assert learner_client.post(url(lab)).status_code == 404


def test_start_of_a_lab_without_a_machine_is_a_404(fake_provider, learner_client):
    from tests.labs.factories import LabFactory

    response = learner_client.post(f"/api/v1/labs/{LabFactory().pk}/vm/")
    assert response.status_code == 404
    assert response.json()["code"] == "no_machine_template"


def test_disallowed_image_is_a_422_with_the_reason(fake_provider, learner_client):
    response = learner_client.post(url(machine_lab(image="docker.io/library/ubuntu:latest")))
    assert response.status_code == 422
    assert response.json()["code"] == "machine_not_allowed"
    assert "not allowed" in response.json()["detail"]


def test_machines_switched_off_is_a_503(learner_client):
    with override_settings(VM_PROVIDER="none"):
        response = learner_client.post(url(machine_lab()))
    assert response.status_code == 503
    assert response.json()["code"] == "vm_disabled"


def test_engine_down_is_a_503(fake_provider, learner_client):
    fake_provider.down = True
    response = learner_client.post(url(machine_lab()))
    assert response.status_code == 503
    assert response.json()["code"] == "vm_engine_unavailable"


def test_second_lab_over_the_per_learner_limit_is_a_409(fake_provider, learner_client):
    learner_client.post(url(machine_lab()))
    response = learner_client.post(url(machine_lab()))
    assert response.status_code == 409
    assert response.json()["code"] == "vm_user_limit"


@pytest.fixture
def start_limit(settings):
    """The `vm_start` scope at its default rate, with the general per-user limit off."""
    from cyberlab.settings import _THROTTLE_DEFAULTS

    assert _THROTTLE_DEFAULTS["vm_start"] == "20/hour"
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "vm_start": "20/hour", "user": "none"}


def start_and_stop(client, lab):
    started = client.post(url(lab))
    assert started.status_code == 202, started.json()
    assert client.delete(url(lab)).status_code == 202
    services.vm_teardown(session_id=started.json()["session_id"])
    return started


def starts_counted(redis, user) -> int:
    return redis.zcard(ratelimit.key(scope="vm_start", ident=str(user.pk)))


def test_twenty_starts_and_stops_in_a_row_then_the_next_start_is_a_429_with_retry_after(
    fake_provider, start_limit, user, learner_client
):
    # given twenty machines started and stopped in a row
    lab = machine_lab()
    remaining = [start_and_stop(learner_client, lab)["RateLimit-Remaining"] for _ in range(20)]
    # when the learner starts a twenty-first
    refused = learner_client.post(url(lab))
    # then the one start limit refuses it, and no machine was created
    assert remaining == [str(left) for left in range(19, -1, -1)]
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert VMSession.objects.filter(user=user).count() == 20


def test_a_start_returning_the_live_machine_and_status_polls_cost_no_start(
    fake_provider, start_limit, user, learner_client, redis
):
    # given a machine just started
    lab = machine_lab()
    assert learner_client.post(url(lab)).status_code == 202
    # when the learner clicks start again and polls its status
    again = [learner_client.post(url(lab)) for _ in range(5)]
    polls = [learner_client.get(url(lab)) for _ in range(5)]
    # then only the machine that was created counts
    assert [r.status_code for r in again] == [200] * 5
    assert [r["RateLimit-Remaining"] for r in again] == ["19"] * 5
    assert [r.status_code for r in polls] == [200] * 5
    assert starts_counted(redis, user) == 1


def test_with_the_start_limit_spent_a_start_still_returns_the_live_machine(
    fake_provider, settings, user, learner_client, redis
):
    # given a learner who used up their starts, the last one still live
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "vm_start": "2/hour", "user": "none"}
    lab = machine_lab()
    start_and_stop(learner_client, lab)
    live = learner_client.post(url(lab))
    assert live.status_code == 202
    # when they press start again
    again = learner_client.post(url(lab))
    # then they get their live machine, as any second start does, and nothing counted
    assert again.status_code == 200
    assert again.json()["session_id"] == live.json()["session_id"]
    assert again["RateLimit-Remaining"] == "0"
    assert starts_counted(redis, user) == 2
    # while once it is stopped, a start is refused again
    assert learner_client.delete(url(lab)).status_code == 202
    services.vm_teardown(session_id=live.json()["session_id"])
    assert learner_client.post(url(lab)).status_code == 429


def test_a_learner_over_the_general_limit_is_refused_even_with_a_live_machine(
    fake_provider, settings, learner_client
):
    # given a live machine, and the learner's general per-user limit spent
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "vm_start": "20/hour", "user": "2/min"}
    lab = machine_lab()
    assert learner_client.post(url(lab)).status_code == 202
    assert learner_client.get(url(lab)).status_code == 200
    # when they press start again, then the general limit refuses it
    assert learner_client.post(url(lab)).status_code == 429


def test_a_refused_start_costs_no_start(fake_provider, start_limit, user, learner_client, redis):
    # given a live machine, the most a learner may hold at once
    assert learner_client.post(url(machine_lab())).status_code == 202
    # when the learner starts a machine for another lab
    refused = learner_client.post(url(machine_lab()))
    # then the machine limit refuses it, and the start limit did not count it
    assert refused.status_code == 409
    assert refused.json()["code"] == "vm_user_limit"
    assert starts_counted(redis, user) == 1


def test_a_reset_counts_as_a_start(fake_provider, start_limit, user, learner_client, redis):
    # given a live machine
    lab = machine_lab()
    learner_client.post(url(lab))
    # when the learner resets it
    reset = learner_client.post(url(lab, "reset/"))
    # then the fresh machine counted as a second start
    assert reset.status_code == 202
    assert reset["RateLimit-Remaining"] == "18"
    assert starts_counted(redis, user) == 2


def test_with_the_start_limit_off_a_learner_starts_as_many_machines_as_they_stop(
    fake_provider, settings, user, learner_client
):
    # given the vm_start scope switched off: no other hourly limit remains in vms
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "vm_start": "none", "user": "none"}
    lab = machine_lab()
    # when the learner starts and stops 25 machines in a row, then every start is a 202
    for _ in range(25):
        start_and_stop(learner_client, lab)
    assert VMSession.objects.filter(user=user).count() == 25


def test_my_machines_lists_only_mine(fake_provider, user, learner_client):
    # given
    lab = machine_lab()
    mine = learner_client.post(url(lab)).json()
    services.vm_start(user=UserFactory(), lab=lab)
    # when
    response = learner_client.get("/api/v1/vms/")
    # then
    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert [item["session_id"] for item in response.json()["results"]] == [mine["session_id"]]


def test_another_learners_session_id_is_a_404(fake_provider, learner_client):
    # given
    other = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    # when / then
    assert learner_client.get(f"/api/v1/vms/{other}/").status_code == 404
    assert learner_client.delete(f"/api/v1/vms/{other}/").status_code == 404
    assert VMSession.objects.get(pk=other).status == VMStatus.PROVISIONING


def test_my_session_id_shows_and_stops_my_machine(fake_provider, user, learner_client):
    mine = learner_client.post(url(machine_lab())).json()["session_id"]
    assert learner_client.get(f"/api/v1/vms/{mine}/").json()["session_id"] == mine
    assert learner_client.delete(f"/api/v1/vms/{mine}/").status_code == 202
    assert VMSession.objects.get(pk=mine).status == VMStatus.STOPPING


def test_learners_cannot_use_the_staff_endpoints(fake_provider, learner_client):
    session = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    assert learner_client.get("/api/v1/admin/vms/").status_code == 403
    assert learner_client.delete(f"/api/v1/admin/vms/{session}/").status_code == 403


def test_staff_list_every_live_machine_soonest_expiring_first(fake_provider, staff_client):
    # given
    first = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    second = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    # when
    response = staff_client.get("/api/v1/admin/vms/?limit=1")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [item["session_id"] for item in body["results"]] == [first]
    assert set(body["results"][0]) >= {"user_id", "provider", "instance_id"}
    assert (
        staff_client.get("/api/v1/admin/vms/?limit=1&offset=1").json()["results"][0]["session_id"] == second
    )


def test_staff_force_stop(fake_provider, staff_client):
    session = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    response = staff_client.delete(f"/api/v1/admin/vms/{session}/")
    assert response.status_code == 202
    row = VMSession.objects.get(pk=session)
    assert (row.status, row.stop_reason) == (VMStatus.STOPPING, StopReason.ADMIN)
    assert staff_client.delete(f"/api/v1/admin/vms/{uuid.uuid4()}/").status_code == 404


def test_operators_group_may_list_and_stop_machines(fake_provider, operator):
    # given a staff member who is only an operator
    client = APIClient()
    client.force_login(operator)
    session = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    # when / then
    assert client.get("/api/v1/admin/vms/").status_code == 200
    assert client.delete(f"/api/v1/admin/vms/{session}/").status_code == 202


def test_signed_out_requests_are_refused(fake_provider, api_client):
    lab = machine_lab()
    assert api_client.post(url(lab)).status_code in (401, 403)
    assert api_client.get(url(lab)).status_code in (401, 403)


def test_a_list_asked_for_a_page_it_cannot_have_is_a_400_that_names_the_parameter(
    fake_provider, learner_client, staff_client
):
    mine = learner_client.get("/api/v1/vms/?limit=0")
    everyone = staff_client.get("/api/v1/admin/vms/?offset=-1")
    assert (mine.status_code, list(mine.json()["errors"])) == (400, ["limit"])
    assert (everyone.status_code, list(everyone.json()["errors"])) == (400, ["offset"])


def test_the_schema_documents_each_machine_endpoint_as_it_answers(api_client):
    schema = api_client.get("/api/v1/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path, method, codes in [
        ("/api/v1/labs/{lab_id}/vm/", "post", {"200", "202", "403", "404", "409", "422", "429", "503"}),
        ("/api/v1/labs/{lab_id}/vm/", "get", {"200", "403", "404", "429"}),
        ("/api/v1/labs/{lab_id}/vm/", "delete", {"202", "403", "404", "429"}),
        ("/api/v1/labs/{lab_id}/vm/extend/", "post", {"200", "403", "404", "409", "429"}),
        ("/api/v1/labs/{lab_id}/vm/reset/", "post", {"202", "403", "404", "422", "429", "503"}),
        ("/api/v1/vms/", "get", {"200", "400", "403", "429"}),
        ("/api/v1/vms/{session_id}/", "get", {"200", "403", "404", "429"}),
        ("/api/v1/admin/vms/", "get", {"200", "400", "403", "429"}),
        ("/api/v1/admin/vms/{session_id}/", "delete", {"202", "403", "404", "429"}),
    ]:
        assert set(paths[path][method]["responses"]) == codes, (method, path)
    for path in ("/api/v1/vms/", "/api/v1/admin/vms/"):
        operation = paths[path]["get"]
        assert {parameter["name"] for parameter in operation["parameters"]} >= {"limit", "offset"}
        envelope = _resolve(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
        assert {"count", "next", "previous", "results"} <= set(envelope["properties"]), path


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_my_machines_read_from_redis_make_no_query_and_one_round_trip_besides_the_rate_limit(
    fake_provider, user, django_assert_num_queries, monkeypatch
):
    # given a learner with a machine, authenticated (signing in is not counted here)
    lab = machine_lab()
    session = services.vm_start(user=user, lab=lab).state.session_id
    client = APIClient()
    client.force_authenticate(user=user)
    client.get("/api/v1/vms/")
    sent = []
    packed = redis.connection.AbstractConnection.send_packed_command

    def counting_packed(self, command, check_health=True):
        sent.append(command)
        return packed(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_packed)
    # when
    with django_assert_num_queries(0):
        response = client.get("/api/v1/vms/")
    # then
    assert [item["session_id"] for item in response.json()["results"]] == [session]
    assert len(sent) == 2


def test_staff_see_when_each_machine_was_last_used(fake_provider, staff_client):
    # given a running machine (its start counts as use) and one still starting
    running_id = services.vm_start(user=UserFactory(), lab=machine_lab()).state.session_id
    services.vm_provision(session_id=running_id)
    services.vm_start(user=UserFactory(), lab=machine_lab())
    # when
    results = staff_client.get("/api/v1/admin/vms/").json()["results"]
    # then
    seen = {item["session_id"]: item["last_activity_at"] for item in results}
    assert seen.pop(running_id) is not None
    assert list(seen.values()) == [None]
