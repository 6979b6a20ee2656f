"""The gateway end to end: scripts/gateway.sh in front of a real machine on the real Docker
engine, entered with the links the API hands its owner."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import websockets
import websockets.asyncio.client
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from tests.conftest import free_port
from tests.integration.machines import enter, get, learner_with_token, running_machine
from tests.vms import support
from vms import activity, maintenance, tunnel
from vms.models import MachineAccess, VMSession

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def inside_machine(gateway_port: int):
    """A learner inside their running machine: (API client, machine, origin, cookie)."""
    _, client = learner_with_token()
    machine = running_machine(client, support.machine_lab())
    url = machine["connection"]["ports"][0]["url"]
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    cookie = enter(gateway_port, url)
    assert get(gateway_port, f"{origin}/", cookie)[0] == 200
    return client, machine, origin, cookie


def test_the_owner_enters_their_machine_on_its_own_origin_and_nobody_else_does(gateway_port, worker):
    # given a learner's running machine
    _user, client = learner_with_token()
    lab = support.machine_lab()
    flag = lab.flags.get()
    machine = running_machine(client, lab)
    url = machine["connection"]["ports"][0]["url"]
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    # then the link leads to an origin of the machine's own, not the platform's
    assert urlsplit(url).hostname.endswith(".localhost")
    assert urlsplit(url).hostname != "localhost"
    # and the machine publishes nothing on the lab host: the gateway is the only way in
    assert set(machine["connection"]) == {"ports"}
    assert all(set(port) <= {"port", "protocol", "url"} for port in machine["connection"]["ports"])
    (container,) = support.platform_containers(support.docker_client(), session=machine["session_id"])
    assert not container.attrs["HostConfig"]["PortBindings"]
    assert not any(container.attrs["NetworkSettings"]["Ports"].values())
    # when the owner opens it: a cookie for that origin, and the lab with their own flag
    cookie = enter(gateway_port, url)
    status, page, _ = get(gateway_port, f"{origin}/", cookie)
    assert status == 200
    assert b"<html" in page.lower()
    status, own_flag, _ = get(gateway_port, f"{origin}/flag", cookie)
    assert status == 200
    submitted = client.post(
        f"/api/v1/labs/{lab.pk}/flags/{flag.pk}/submit/", {"flag": own_flag.decode().strip()}, format="json"
    )
    assert submitted.json()["correct"] is True
    # and the link works once only, and nothing passes without the cookie
    assert get(gateway_port, url)[0] == 403
    assert get(gateway_port, f"{origin}/flag")[0] == 403
    # when a second learner brings their own machine's link to the first one's origin
    _, other_client = learner_with_token()
    other_url = running_machine(other_client, support.machine_lab())["connection"]["ports"][0]["url"]
    other_entry = urlsplit(other_url)
    assert get(gateway_port, f"{origin}{other_entry.path}?{other_entry.query}")[0] == 403
    # or their own cookie
    other_cookie = enter(gateway_port, other_url)
    assert get(gateway_port, f"{origin}/flag", other_cookie)[0] == 403
    # when the owner stops the machine, its origin is gone
    assert client.delete(f"/api/v1/labs/{lab.pk}/vm/").status_code == 202
    support.wait_for(
        lambda: get(gateway_port, f"{origin}/flag", cookie)[0] in {404, 410}, timeout=30, what="origin gone"
    )


def test_revoking_the_credential_the_link_was_made_for_cuts_access_at_the_next_request(gateway_port, worker):
    # given the owner inside their machine, entered with a link their API token asked for
    client, _machine, origin, cookie = inside_machine(gateway_port)
    # when they revoke their other sessions, which rotates that token
    assert client.post("/api/v1/auth/sessions/revoke-others/").status_code == 200
    # then the very next request through the gateway is refused
    status, body, _ = get(gateway_port, f"{origin}/", cookie)
    assert status == 403, body


def test_an_address_that_names_no_machine_is_not_found_and_nothing_says_which_names_exist(gateway_port):
    status, body, _ = get(gateway_port, f"http://www.localhost:{gateway_port}/")
    assert status == 404
    assert b"No machine" in body
    # a well-formed name is refused alike whether a machine has it or not
    assert get(gateway_port, f"http://{'0' * 24}.localhost:{gateway_port}/")[0] == 403


def tunnel_lab():
    return support.machine_lab(ports=[{"port": 8080, "protocol": "http"}, {"port": 7000, "protocol": "tcp"}])


def tcp_entry(machine: dict) -> dict:
    return next(port for port in machine["connection"]["ports"] if port["port"] == 7000)


async def echo_through(url: str, gateway_port: int, **headers) -> bytes:
    async with websockets.asyncio.client.connect(
        url, host="127.0.0.1", port=gateway_port, additional_headers=headers, open_timeout=10
    ) as ws:
        await ws.send(b"ping through the gateway\n")
        return await asyncio.wait_for(ws.recv(), 10)


def test_a_tcp_port_is_reached_over_a_websocket_with_its_token_and_not_without(gateway_port, worker):
    # given a machine with a TCP echo service on port 7000
    _, client = learner_with_token()
    tcp = tcp_entry(running_machine(client, tunnel_lab()))
    assert tcp["url"].endswith("/_tcp/7000")
    assert tcp["url"].startswith("ws://")
    assert tcp["command"].startswith(f"python -m vms.tunnel {tcp['url']} 7000:7000 --token ")
    # when a raw WebSocket client sends bytes with the port's bearer token, they come back
    echoed = asyncio.run(echo_through(tcp["url"], gateway_port, Authorization=f"Bearer {tcp['token']}"))
    assert echoed == b"ping through the gateway\n"
    # and without it the gateway refuses the tunnel
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(echo_through(tcp["url"], gateway_port))
    assert refused.value.response.status_code == 403


def test_the_shipped_client_opens_a_tcp_port_locally_and_a_stop_closes_it_within_a_second(
    gateway_port, worker
):
    # given the learner's tunnel client listening locally for port 7000
    _, client = learner_with_token()
    lab = tunnel_lab()
    tcp = tcp_entry(running_machine(client, lab))
    local = free_port()

    def stop() -> None:
        try:
            assert client.delete(f"/api/v1/labs/{lab.pk}/vm/").status_code == 202
        finally:
            connection.close()  # this thread's own database connection

    async def scenario() -> tuple[bytes, bytes]:
        server = await tunnel.serve(tcp["url"], local, tcp["token"], via=f"127.0.0.1:{gateway_port}")
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"hello lab\n")
            first = await asyncio.wait_for(reader.readline(), 10)
            # when the machine is stopped, the open tunnel ends within about a second
            await asyncio.to_thread(stop)
            rest = await asyncio.wait_for(reader.read(), 2.5)
            writer.close()
            return first, rest

    first, rest = asyncio.run(scenario())
    assert first == b"hello lab\n"
    assert rest == b""


def test_a_machine_past_its_expiry_is_closed_at_the_next_request(gateway_port, worker):
    # given the owner inside their machine
    _client, machine, origin, cookie = inside_machine(gateway_port)
    # when its lifetime runs out (before any sweeper got to it)
    VMSession.objects.filter(pk=machine["session_id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    # then the gateway no longer lets anyone in
    assert get(gateway_port, f"{origin}/", cookie)[0] == 410


def test_an_idle_machine_is_reaped_and_its_origin_closes(gateway_port, worker, redis, settings):
    # given the owner inside their machine: the gateway recorded the visit
    settings.VM_IDLE_TIMEOUT, settings.VM_IDLE_GRACE = 600, 60
    _client, machine, origin, cookie = inside_machine(gateway_port)
    session = VMSession.objects.get(pk=machine["session_id"])
    member = f"{session.user_id}:{session.lab_id}"
    redis.zrem(activity.KEY, member)
    assert get(gateway_port, f"{origin}/", cookie)[0] == 200
    assert abs(redis.zscore(activity.KEY, member) - time.time()) < 30
    # when nobody uses it past the idle timeout and the grace, as the sweeper sees it
    idle_since = timezone.now() + timedelta(seconds=600 + 1)
    assert maintenance.vm_sweep(now=idle_since).warned == [str(session.pk)]
    reaped = maintenance.vm_sweep(now=idle_since + timedelta(seconds=61))
    # then it is stopped for idleness, and its origin refuses the owner at once
    assert reaped.idle == [str(session.pk)]
    assert get(gateway_port, f"{origin}/", cookie)[0] == 410


def test_a_machine_takes_only_so_many_connections_and_a_silent_tunnel_is_closed(gateway_port, worker):
    # given a machine whose gateway allows it 3 connections, silent ones closed after 3 s
    _, client = learner_with_token()
    tcp = tcp_entry(running_machine(client, tunnel_lab()))
    bearer = {"Authorization": f"Bearer {tcp['token']}"}

    def open_tunnel():
        return websockets.asyncio.client.connect(
            tcp["url"], host="127.0.0.1", port=gateway_port, additional_headers=bearer, open_timeout=10
        )

    async def scenario() -> None:
        held = [await open_tunnel() for _ in range(3)]
        # when a fourth is opened, it is refused; once one closes, there is room again
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await open_tunnel()
        await held.pop().close()
        await asyncio.sleep(0.2)
        held.append(await open_tunnel())
        # and a tunnel that carries nothing is closed after the silence allowed
        started = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(held[0].recv(), 10)
        assert time.monotonic() - started < 6
        for ws in held:
            await ws.close()

    asyncio.run(scenario())


def test_staff_allowed_to_enter_see_a_learners_machine_until_the_permission_goes(gateway_port, worker):
    # given a learner's running machine, and staff allowed to enter machines
    learner_client = learner_with_token()[1]
    lab = support.machine_lab()
    machine = running_machine(learner_client, lab)
    staff, staff_client = learner_with_token()
    staff.is_staff = True
    staff.save()
    staff.user_permissions.add(Permission.objects.get(codename="enter_vmsession"))
    # when they open an access with a reason and use its link
    access = staff_client.post(
        f"/api/v1/admin/vms/{machine['session_id']}/access/",
        {"reason": "learner asked for help"},
        format="json",
    )
    assert access.status_code == 201, access.json()
    url = access.json()["ports"][0]["url"]
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    cookie = enter(gateway_port, url)
    # then they see the learner's machine, and the entry is on record
    status, flag, _ = get(gateway_port, f"{origin}/flag", cookie)
    assert status == 200
    assert flag.strip()
    record = MachineAccess.objects.get(pk=access.json()["access_id"])
    assert (record.reason, record.entries) == ("learner asked for help", 1)
    # when the permission is taken away, the next request is refused
    staff.user_permissions.clear()
    assert get(gateway_port, f"{origin}/flag", cookie)[0] == 403
