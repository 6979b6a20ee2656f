"""A machine cannot open a connection to the lab host: not to the platform's services, not
to anything else listening on the host's own addresses (scripts/lab-firewall.sh)."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import uuid

import pytest
from django.conf import settings

from tests.conftest import free_port, require
from tests.integration.served import ROOT, process, stack_env
from tests.vms import support
from vms.providers import MachineSpec, PortSpec, get_provider

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def host_addresses() -> list[str]:
    """Every IPv4 address of this host but loopback (a machine has its own loopback)."""
    output = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    found = []
    for line in output.splitlines():
        address = line.split()[3].split("/")[0]
        if not ipaddress.ip_address(address).is_loopback:
            found.append(address)
    return found


def reachable_from_host(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def reachable_from_machine(container, address: str, port: int) -> bool:
    result = container.exec_run(["sh", "-c", f"echo | nc -w 1 {address} {port} >/dev/null 2>&1"])
    return result.exit_code == 0


@pytest.fixture
def machine(settings):
    client = support.docker_client()
    require(client is not None, "no Docker engine answers")
    require(support.ensure_demo_image(client), "the demo image could not be built")
    settings.VM_PLATFORM_NAME = support.TEST_PLATFORM
    support.remove_platform_objects(client)
    spec = MachineSpec(
        session_id=str(uuid.uuid4()),
        user_id=1,
        lab_id=1,
        image=settings.VM_DEMO_IMAGE,
        ports=(PortSpec(port=8080, protocol="http"),),
        memory_mb=64,
        cpus=0.25,
        environment={},
        capabilities=(),
    )
    instance = get_provider(name="docker").start(spec)
    yield client.containers.get(instance.instance_id), instance
    support.remove_platform_objects(client)
    client.close()


def test_a_machine_reaches_no_service_on_any_of_the_hosts_addresses(machine, tmp_path):
    container, instance = machine
    # given the web server and the gateway listening on every address of the host, as a
    # careless operator might bind them, besides Postgres, Redis and the engine
    web_port, gateway_port = free_port(), free_port()
    env = stack_env(tmp_path, ALLOWED_HOSTS="*", PYTHON=sys.executable)
    web = process(
        [str(ROOT / "scripts" / "serve.sh")],
        {**env, "BIND": f"0.0.0.0:{web_port}", "WEB_CONCURRENCY": "1", "WEB_ACCESS_LOG": "/dev/null"},
    )
    gateway = process(
        [str(ROOT / "scripts" / "gateway.sh")],
        {**env, "GATEWAY_BIND": f"0.0.0.0:{gateway_port}", "GATEWAY_ACCESS_LOG": "/dev/null"},
    )
    database = settings.DATABASES["default"]
    redis_port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    services = {
        "web": web_port,
        "gateway": gateway_port,
        "postgres": int(database["PORT"] or 5432),
        "redis": redis_port,
        "docker engine (tcp)": 2375,
    }
    with web, gateway:
        addresses = host_addresses()
        assert addresses, "the host has no address besides loopback"
        for port in (web_port, gateway_port):
            support.wait_for(
                lambda port=port: reachable_from_host(addresses[0], port), timeout=30, what="listening"
            )
        # when the machine tries each of them on each address, nothing answers it
        reached = [
            (name, address, port)
            for address in addresses
            for name, port in services.items()
            if reachable_from_machine(container, address, port)
        ]
        assert reached == []
        # while the host (the gateway's side) still reaches the machine
        assert reachable_from_host(instance.address, 8080)
