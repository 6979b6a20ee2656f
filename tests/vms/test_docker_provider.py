"""The Docker provider against the real engine and the locally built demo image."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from django.conf import settings
from django.test import override_settings

from tests.vms import support
from vms.providers import MachineSpec, PortSpec, ProviderError, ProviderUnavailable, get_provider

pytestmark = pytest.mark.docker


def spec(**overrides) -> MachineSpec:
    values = {
        "session_id": str(uuid.uuid4()),
        "user_id": 7,
        "lab_id": 11,
        "image": settings.VM_DEMO_IMAGE,
        "ports": (PortSpec(port=8080, protocol="http"),),
        "memory_mb": 64,
        "cpus": 0.25,
        "environment": {"FLAG": "CTF{provider-test}"},
        "capabilities": ("NET_BIND_SERVICE",),
    }
    values.update(overrides)
    return MachineSpec(**values)


def fetch(port: int, path: str) -> str:
    def attempt():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.read().decode()
        except OSError:
            return None

    return support.wait_for(attempt, timeout=15, what=f"GET {path} on port {port}")


@pytest.fixture(autouse=True)
def _published(settings):
    """These machines are reached on their published ports (VM_PUBLISH_PORTS=1); the
    default, nothing published, has a test of its own."""
    settings.VM_PUBLISH_PORTS = True


def test_by_default_nothing_is_published_and_the_machine_answers_on_its_own_network(demo_image, settings):
    # given the default settings
    settings.VM_PUBLISH_PORTS = False
    provider = get_provider(name="docker")
    # when a machine starts
    instance = provider.start(spec())
    # then no port of it is bound on the host, and it answers at its own address
    container = demo_image.containers.get(instance.instance_id)
    assert not container.attrs["HostConfig"]["PortBindings"]
    assert instance.ports == {}
    assert instance.address

    def flag():
        try:
            with urllib.request.urlopen(f"http://{instance.address}:8080/flag", timeout=2) as response:
                return response.read().decode()
        except OSError:
            return None

    assert support.wait_for(flag, timeout=15, what="the flag").strip() == "CTF{provider-test}"
    provider.stop(session_id=instance.session_id, instance_id=instance.instance_id)


def test_start_runs_a_locked_down_container_on_its_own_network(demo_image):
    # given
    machine = spec()
    provider = get_provider(name="docker")
    # when
    instance = provider.start(machine)
    # then it answers on 127.0.0.1 with the flag it was given
    assert instance.host == "127.0.0.1"
    assert fetch(instance.ports[8080], "/flag").strip() == "CTF{provider-test}"
    container = demo_image.containers.get(instance.instance_id)
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 250_000_000
    assert host["PidsLimit"] == settings.VM_PIDS_LIMIT
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["NET_BIND_SERVICE"]
    assert host["Privileged"] is False
    assert host["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert container.labels["cyberlab.session"] == machine.session_id
    assert container.labels["cyberlab.user"] == "7"
    assert container.labels["cyberlab.lab"] == "11"
    # and its only network is its own, with outbound NAT and inter-container traffic off
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [f"{support.TEST_PLATFORM}-vm-{machine.session_id}"]
    network = demo_image.networks.get(next(iter(networks)))
    assert network.attrs["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert network.attrs["Labels"]["cyberlab.session"] == machine.session_id


def test_stop_removes_container_and_network_and_is_idempotent(demo_image):
    # given
    machine = spec()
    provider = get_provider(name="docker")
    instance = provider.start(machine)
    # when
    provider.stop(session_id=machine.session_id, instance_id=instance.instance_id)
    # then
    assert support.platform_containers(demo_image, session=machine.session_id) == []
    assert support.platform_networks(demo_image, session=machine.session_id) == []
    provider.stop(session_id=machine.session_id, instance_id=instance.instance_id)


def test_machine_a_cannot_open_a_connection_to_machine_b(demo_image):
    # given two machines
    provider = get_provider(name="docker")
    a, b = spec(), spec()
    instance_a = provider.start(a)
    provider.start(b)
    container_a = demo_image.containers.get(instance_a.instance_id)
    container_b = demo_image.containers.list(filters={"label": f"cyberlab.session={b.session_id}"})[0]
    ip_a = next(iter(container_a.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    ip_b = next(iter(container_b.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    probe = "printf 'GET /flag HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 8080"
    # when A talks to itself (the probe works), then to B
    own = container_a.exec_run(["sh", "-c", probe.format(ip=ip_a)])
    other = container_a.exec_run(["sh", "-c", probe.format(ip=ip_b)])
    # then
    assert own.exit_code == 0
    assert b"200 OK" in own.output
    assert other.exit_code != 0
    assert b"200 OK" not in other.output


def test_list_finds_every_instance_of_this_platform_and_only_those(demo_image):
    # given one machine of ours and a labelled container of another platform
    provider = get_provider(name="docker")
    ours = provider.start(spec())
    foreign = demo_image.containers.run(
        settings.VM_DEMO_IMAGE,
        detach=True,
        labels={"cyberlab.platform": "someone-else", "cyberlab.session": str(uuid.uuid4())},
    )
    try:
        # when
        found = provider.list()
    finally:
        foreign.remove(force=True)
    # then
    assert [instance.instance_id for instance in found] == [ours.instance_id]
    assert found[0].running is True
    assert found[0].ports == ours.ports


def test_a_start_that_fails_leaves_nothing_behind(demo_image):
    machine = spec(image="cyberlab/does-not-exist:latest")
    with pytest.raises(ProviderError, match="not on the lab engine"):
        get_provider(name="docker").start(machine)
    assert support.platform_containers(demo_image, session=machine.session_id) == []
    assert support.platform_networks(demo_image, session=machine.session_id) == []


def test_a_redelivered_start_replaces_what_the_first_attempt_left(demo_image):
    machine = spec()
    provider = get_provider(name="docker")
    provider.start(machine)
    second = provider.start(machine)
    containers = support.platform_containers(demo_image, session=machine.session_id)
    assert [container.id for container in containers] == [second.instance_id]
    assert len(support.platform_networks(demo_image, session=machine.session_id)) == 1


def test_an_engine_that_does_not_answer_is_reported_as_unavailable(tmp_path):
    with override_settings(VM_DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock"):
        provider = get_provider(name="docker")
        with pytest.raises(ProviderUnavailable):
            provider.ping()
        with pytest.raises(ProviderUnavailable):
            provider.list()


def test_networks_come_from_the_configured_subnet_pool(demo_image):
    machine = spec()
    with override_settings(VM_DOCKER_SUBNET_POOL="10.213.0.0/16", VM_DOCKER_SUBNET_PREFIX=28):
        get_provider(name="docker").start(machine)
    network = support.platform_networks(demo_image, session=machine.session_id)[0]
    subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
    assert subnet.startswith("10.213.")
    assert subnet.endswith("/28")


def pool_networks(client) -> set[str]:
    return {
        network.name
        for network in client.networks.list(
            filters={"label": [f"cyberlab.platform={support.TEST_PLATFORM}", "cyberlab.pool=1"]}
        )
    }


def container_networks(client, session_id: str) -> list[str]:
    container = support.platform_containers(client, session=session_id)[0]
    return list(container.attrs["NetworkSettings"]["Networks"])


def test_prepare_keeps_warm_isolated_networks_ready(demo_image, redis):
    # when
    with override_settings(VM_DOCKER_NETWORK_POOL=2):
        get_provider(name="docker").prepare()
        get_provider(name="docker").prepare()
    # then
    warm = pool_networks(demo_image)
    assert len(warm) == 2
    assert {name.decode() for name in redis.smembers(f"vm:netpool:{support.TEST_PLATFORM}")} == warm
    for name in warm:
        options = demo_image.networks.get(name).attrs["Options"]
        assert options["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert options["com.docker.network.bridge.enable_icc"] == "false"


def test_a_start_takes_a_warm_network_and_its_stop_removes_it(demo_image, redis):
    # given
    provider = get_provider(name="docker")
    provider.prepare()
    warm = pool_networks(demo_image)
    machine = spec()
    # when
    instance = provider.start(machine)
    # then the machine sits alone on a network taken out of the pool
    (network,) = container_networks(demo_image, machine.session_id)
    assert network in warm
    assert network.encode() not in redis.smembers(f"vm:netpool:{support.TEST_PLATFORM}")
    assert fetch(instance.ports[8080], "/flag").strip() == "CTF{provider-test}"
    # when
    provider.stop(session_id=machine.session_id, instance_id=instance.instance_id)
    # then the network went with it: a network never serves two machines
    assert network not in {n.name for n in demo_image.networks.list()}
    assert support.platform_containers(demo_image, session=machine.session_id) == []


def test_machines_on_warm_networks_cannot_reach_each_other(demo_image):
    provider = get_provider(name="docker")
    provider.prepare()
    a, b = spec(), spec()
    provider.start(a)
    provider.start(b)
    container_a = support.platform_containers(demo_image, session=a.session_id)[0]
    container_b = support.platform_containers(demo_image, session=b.session_id)[0]
    assert container_networks(demo_image, a.session_id) != container_networks(demo_image, b.session_id)
    ip_b = next(iter(container_b.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    probe = container_a.exec_run(["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip_b} 8080"])
    assert probe.exit_code != 0
    assert b"200 OK" not in probe.output


def test_prepare_reclaims_warm_networks_taken_but_never_used(demo_image, redis):
    # given a warm network taken by a start that died before using it, and a pool
    # entry whose network is gone
    provider = get_provider(name="docker")
    with override_settings(VM_DOCKER_NETWORK_POOL=1):
        provider.prepare()
    key = f"vm:netpool:{support.TEST_PLATFORM}"
    (taken,) = pool_networks(demo_image)
    redis.spop(key)
    redis.sadd(key, f"{support.TEST_PLATFORM}-net-vanished")
    # when
    with override_settings(VM_DOCKER_NETWORK_POOL=1):
        provider.prepare()
    # then
    (fresh,) = pool_networks(demo_image)
    assert fresh != taken
    assert {name.decode() for name in redis.smembers(key)} == {fresh}


def test_without_redis_a_start_uses_a_fresh_network(demo_image):
    from tests.conftest import dead_redis_caches

    provider = get_provider(name="docker")
    provider.prepare()
    machine = spec()
    dead = dead_redis_caches()
    with override_settings(CACHES=dead):
        get_provider(name="docker").start(machine)
    assert container_networks(demo_image, machine.session_id) == [
        f"{support.TEST_PLATFORM}-vm-{machine.session_id}"
    ]


def test_a_redelivered_start_on_warm_networks_leaves_one_machine_and_no_stray_network(demo_image):
    provider = get_provider(name="docker")
    with override_settings(VM_DOCKER_NETWORK_POOL=3):
        provider.prepare()
    machine = spec()
    provider.start(machine)
    first_network = container_networks(demo_image, machine.session_id)[0]
    second = provider.start(machine)
    assert [c.id for c in support.platform_containers(demo_image, session=machine.session_id)] == [
        second.instance_id
    ]
    assert first_network not in {n.name for n in demo_image.networks.list()}


def test_a_warm_network_gone_from_the_engine_falls_back_to_a_fresh_one(demo_image, redis):
    # given a pool entry whose network was removed behind the pool's back
    redis.sadd(f"vm:netpool:{support.TEST_PLATFORM}", f"{support.TEST_PLATFORM}-net-removed")
    machine = spec()
    # when
    instance = get_provider(name="docker").start(machine)
    # then
    assert container_networks(demo_image, machine.session_id) == [
        f"{support.TEST_PLATFORM}-vm-{machine.session_id}"
    ]
    assert fetch(instance.ports[8080], "/flag").strip() == "CTF{provider-test}"
