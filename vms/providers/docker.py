"""The Docker provider: one container on one network of its own per machine.

Everything it creates carries labels naming the platform and the session, so `list`
finds every instance it owns and `stop` removes a session's leftovers even when the
ledger never learned the container's id (a worker killed mid-start).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import threading
import uuid
from datetime import UTC, datetime

import requests
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import IPAMConfig, IPAMPool

import docker
from cyberlab import redis_client
from vms import state
from vms.providers.base import Instance, MachineSpec, Provider, ProviderError, ProviderUnavailable

logger = logging.getLogger(__name__)

LABEL_PLATFORM = "cyberlab.platform"
LABEL_SESSION = "cyberlab.session"
LABEL_USER = "cyberlab.user"
LABEL_LAB = "cyberlab.lab"
LABEL_POOL = "cyberlab.pool"

# Network options that keep a deliberately vulnerable machine to itself: no outbound
# NAT (nothing beyond the host answers it) and no traffic between containers on the
# bridge. Docker's own isolation chains already drop traffic between bridges.
NETWORK_OPTIONS = {
    "com.docker.network.bridge.enable_ip_masquerade": "false",
    "com.docker.network.bridge.enable_icc": "false",
}
# Connection-level failures: the engine is down or unreachable.
UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)
SUBNET_ATTEMPTS = 8
# Linux allows 15 characters for an interface name: this prefix and 11 hex digits.
BRIDGE_PREFIX = "clvm"


class DockerProvider(Provider):
    def __init__(self, *, name: str) -> None:
        super().__init__(name=name)
        self._local = threading.local()

    # --- clients ---------------------------------------------------------------

    def _client(self, *, timeout: float | None = None) -> docker.DockerClient:
        """A client per thread (requests sessions are not shared across threads)."""
        timeout = settings.VM_DOCKER_TIMEOUT if timeout is None else timeout
        cache_key = f"client_{timeout}"
        client = getattr(self._local, cache_key, None)
        if client is None:
            environment = None
            if settings.VM_DOCKER_HOST:
                environment = {**os.environ, "DOCKER_HOST": settings.VM_DOCKER_HOST}
            try:
                client = docker.from_env(environment=environment, timeout=timeout)
            except DockerException as error:
                raise ProviderUnavailable(f"The Docker engine does not answer: {error}") from error
            setattr(self._local, cache_key, client)
        return client

    def _call(self, what: str, func, *args, **kwargs):
        """Runs a Docker call, turning transport failures into ProviderUnavailable."""
        try:
            return func(*args, **kwargs)
        except UNREACHABLE as error:
            raise ProviderUnavailable(f"The Docker engine does not answer ({what}): {error}") from error

    def _platform_filter(self, *, session_id: str | None = None) -> dict:
        labels = [f"{LABEL_PLATFORM}={settings.VM_PLATFORM_NAME}"]
        if session_id:
            labels.append(f"{LABEL_SESSION}={session_id}")
        return {"label": labels}

    # --- the interface -----------------------------------------------------------

    def ping(self) -> None:
        client = self._client(timeout=settings.VM_DOCKER_PING_TIMEOUT)
        try:
            self._call("ping", client.ping)
        except APIError as error:
            raise ProviderUnavailable(f"The Docker engine does not answer: {error}") from error

    def start(self, spec: MachineSpec) -> Instance:
        labels = {
            LABEL_PLATFORM: settings.VM_PLATFORM_NAME,
            LABEL_SESSION: spec.session_id,
            LABEL_USER: str(spec.user_id),
            LABEL_LAB: str(spec.lab_id),
        }
        name = f"{settings.VM_PLATFORM_NAME}-vm-{spec.session_id}"
        network = None
        try:
            network = self._pooled_network() or self._fresh_network(name=name, labels=labels)
            try:
                return self._create_container(name=name, network=network, spec=spec, labels=labels)
            except _NameTaken:
                # A redelivered start: what the first attempt left goes, then start afresh.
                self.stop(session_id=spec.session_id)
                if network == name:
                    network = self._fresh_network(name=name, labels=labels)
            except _NetworkGone:
                # The warm network was reclaimed between taking and using it.
                network = self._fresh_network(name=name, labels=labels)
            return self._create_container(name=name, network=network, spec=spec, labels=labels)
        except BaseException as error:
            try:
                self.stop(session_id=spec.session_id)
                if network and network != name:
                    self._remove_networks([network])
            except ProviderError as cleanup_error:
                logger.error(
                    "Could not clean up machine %s after a failed start: %s", spec.session_id, cleanup_error
                )
            if isinstance(error, ProviderError):
                raise
            if isinstance(error, UNREACHABLE):
                raise ProviderUnavailable(f"The Docker engine does not answer: {error}") from error
            if isinstance(error, DockerException):
                raise ProviderError(_explain(error)) from error
            raise

    def stop(self, *, session_id: str, instance_id: str = "") -> None:
        api = self._client().api
        try:
            containers = self._call(
                "list", api.containers, all=True, filters=self._platform_filter(session_id=session_id)
            )
            found = {item["Id"]: _network_names(item) for item in containers}
            if instance_id and not any(item.startswith(instance_id) for item in found):
                found.update(self._owned(instance_id=instance_id, session_id=session_id))
            for container_id in found:
                # NotFound: removed meanwhile, which is the goal.
                with contextlib.suppress(NotFound):
                    self._call("remove", api.remove_container, container_id, force=True, v=True)
            networks = self._call(
                "networks", api.networks, filters=self._platform_filter(session_id=session_id)
            )
            # A machine on a warm network takes that network with it: none is ever reused.
            warm = {
                name for names in found.values() for name in names if name.startswith(self._pool_prefix())
            }
            self._remove_networks([network["Id"] for network in networks] + sorted(warm))
        except APIError as error:
            raise ProviderError(f"Could not remove machine {session_id}: {_explain(error)}") from error

    def watch(self, *, on_gone, stop) -> None:
        """Follows the engine's event stream (`docker events`) for this platform's
        containers dying or being removed. The stream is read with a short timeout, so
        `stop` is seen within it; `since` makes a reconnect miss nothing."""
        filters = {
            "type": "container",
            "event": ["die", "destroy"],
            "label": [f"{LABEL_PLATFORM}={settings.VM_PLATFORM_NAME}"],
        }
        since = datetime.now(UTC)
        while not stop.is_set():
            try:
                client = self._client(timeout=settings.VM_WATCH_READ_TIMEOUT)
                stream = client.events(decode=True, filters=filters, since=since)
                for event in stream:
                    since = datetime.fromtimestamp(event.get("time", since.timestamp()), UTC)
                    actor = event.get("Actor", {})
                    attributes = actor.get("Attributes", {})
                    session_id = attributes.get(LABEL_SESSION)
                    if session_id:
                        on_gone(
                            session_id, actor.get("ID", ""), _gone_reason(event.get("Action", ""), attributes)
                        )
                    if stop.is_set():
                        break
            except (DockerException, *UNREACHABLE) as error:
                # A read timeout on a quiet engine, or the engine away: read again.
                logger.debug("Engine events: %s", error)
                stop.wait(0.2 if "timed out" in str(error).lower() else settings.VM_WATCH_RETRY)
            except Exception:
                logger.exception("Engine events: the handler failed; reading on")
                stop.wait(settings.VM_WATCH_RETRY)

    def prepare(self) -> None:
        """Keeps VM_DOCKER_NETWORK_POOL isolated networks ready, and reclaims stray ones.

        Creating a bridge is most of what a machine's isolation costs at start; a warm
        network moves that off the learner's wait. Without Redis there is no pool.
        """
        size = settings.VM_DOCKER_NETWORK_POOL
        platform = settings.VM_PLATFORM_NAME
        try:
            idle = state.network_pool_members(platform=platform)
        except redis_client.RedisUnavailable:
            return
        api = self._client().api
        try:
            pool_filter = {"label": [f"{LABEL_PLATFORM}={platform}", f"{LABEL_POOL}=1"]}
            existing = {item["Name"] for item in self._call("networks", api.networks, filters=pool_filter)}
            in_use = {
                name
                for item in self._call("list", api.containers, all=True, filters=self._platform_filter())
                for name in _network_names(item)
            }
            state.network_pool_forget(platform=platform, names=sorted(idle - existing))
            idle &= existing
            # Taken from the pool but never used (a start that died in between, or a
            # flushed Redis). A start racing this falls back to a fresh network.
            self._remove_networks(sorted(existing - idle - in_use))
            created = []
            for _ in range(max(0, size - len(idle))):
                name = f"{self._pool_prefix()}{uuid.uuid4().hex[:16]}"
                self._create_network(name=name, labels={LABEL_PLATFORM: platform, LABEL_POOL: "1"})
                created.append(name)
            state.network_pool_add(platform=platform, names=created)
        except APIError as error:
            raise ProviderError(f"Could not prepare machine networks: {_explain(error)}") from error
        except _NameTaken as error:
            raise ProviderError(f"Could not prepare machine networks: {error}") from error

    def status(self, *, session_id: str) -> Instance | None:
        found = self._instances(session_id=session_id)
        return found[0] if found else None

    def list(self) -> list[Instance]:
        return self._instances()

    # --- details ---------------------------------------------------------------

    def _owned(self, *, instance_id: str, session_id: str) -> dict[str, set[str]]:
        """`instance_id` and its networks, when it is a container of this platform and session."""
        try:
            attrs = self._call("inspect", self._client().api.inspect_container, instance_id)
        except NotFound:
            return {}
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if (
            labels.get(LABEL_PLATFORM) == settings.VM_PLATFORM_NAME
            and labels.get(LABEL_SESSION) == session_id
        ):
            return {attrs["Id"]: _network_names(attrs)}
        return {}

    def _pool_prefix(self) -> str:
        return f"{settings.VM_PLATFORM_NAME}-net-"

    def _pooled_network(self) -> str | None:
        if settings.VM_DOCKER_NETWORK_POOL <= 0:
            return None
        return redis_client.fallback(
            lambda: state.network_pool_take(platform=settings.VM_PLATFORM_NAME), None
        )

    def _fresh_network(self, *, name: str, labels: dict[str, str]) -> str:
        try:
            self._create_network(name=name, labels=labels)
        except _NameTaken:
            # A redelivered start: what the first attempt left goes, then start afresh.
            self.stop(session_id=labels[LABEL_SESSION])
            self._create_network(name=name, labels=labels)
        return name

    def _remove_networks(self, names_or_ids: list[str]) -> None:
        api = self._client().api
        for network in names_or_ids:
            with contextlib.suppress(NotFound):
                self._call("remove network", api.remove_network, network)

    def _instances(self, *, session_id: str | None = None) -> list[Instance]:
        api = self._client().api
        filters = self._platform_filter(session_id=session_id)
        try:
            containers = self._call("list", api.containers, all=True, filters=filters)
            networks = self._call("networks", api.networks, filters=filters)
        except APIError as error:
            raise ProviderError(f"Could not list machines: {_explain(error)}") from error
        found: dict[str, Instance] = {}
        for item in containers:
            labels = item.get("Labels") or {}
            session = labels.get(LABEL_SESSION, "")
            ports = {
                int(port["PrivatePort"]): int(port["PublicPort"])
                for port in item.get("Ports") or []
                if port.get("PublicPort")
            }
            host = next((port.get("IP", "") for port in item.get("Ports") or [] if port.get("IP")), "")
            found[session] = Instance(
                session_id=session,
                instance_id=item["Id"],
                user_id=_int(labels.get(LABEL_USER)),
                lab_id=_int(labels.get(LABEL_LAB)),
                running=item.get("State") == "running",
                host=host,
                ports=ports,
                created_at=datetime.fromtimestamp(item.get("Created", 0), tz=UTC),
            )
        # A network left without its container is still something this platform owns.
        for item in networks:
            labels = item.get("Labels") or {}
            session = labels.get(LABEL_SESSION, "")
            if session and session not in found:
                found[session] = Instance(
                    session_id=session,
                    instance_id="",
                    user_id=_int(labels.get(LABEL_USER)),
                    lab_id=_int(labels.get(LABEL_LAB)),
                )
        return list(found.values())

    def _create_network(self, *, name: str, labels: dict[str, str]) -> None:
        api = self._client().api
        pool = settings.VM_DOCKER_SUBNET_POOL
        attempts = SUBNET_ATTEMPTS if pool else 1
        for attempt in range(attempts):
            ipam = None
            if pool:
                subnet = _random_subnet(pool, settings.VM_DOCKER_SUBNET_PREFIX)
                ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)])
            try:
                self._call(
                    "create network",
                    api.create_network,
                    name,
                    driver="bridge",
                    # Named under one prefix, so one host firewall rule (scripts/lab-firewall.sh)
                    # keeps every machine from opening connections to the lab host itself.
                    options={
                        **NETWORK_OPTIONS,
                        "com.docker.network.bridge.name": f"{BRIDGE_PREFIX}{uuid.uuid4().hex[:11]}",
                    },
                    ipam=ipam,
                    labels=labels,
                    check_duplicate=True,
                )
                return
            except APIError as error:
                if error.status_code == 409:
                    raise _NameTaken(name) from error
                # Another network took that subnet: draw again.
                if pool and "overlap" in str(error).lower() and attempt + 1 < attempts:
                    continue
                raise ProviderError(f"Could not create the machine's network: {_explain(error)}") from error

    def _create_container(
        self, *, name: str, network: str, spec: MachineSpec, labels: dict[str, str]
    ) -> Instance:
        # The low-level API: create, start and one inspect, as `docker run` does.
        api = self._client().api
        publish = settings.VM_PUBLISH_HOST if settings.VM_PUBLISH_PORTS else ""
        host_config = api.create_host_config(
            network_mode=network,
            # Published on the lab host only when asked to; the gateway needs none.
            port_bindings={port.port: (publish,) for port in spec.ports} if publish else None,
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb}m",
            nano_cpus=int(spec.cpus * 1_000_000_000),
            pids_limit=settings.VM_PIDS_LIMIT,
            security_opt=["no-new-privileges:true"],
            cap_drop=["ALL"],
            cap_add=list(spec.capabilities) or None,
            restart_policy={"Name": "no"},
        )
        try:
            created = self._call(
                "create",
                api.create_container,
                spec.image,
                name=name,
                hostname="lab",
                labels=labels,
                environment=spec.environment,
                ports=[port.port for port in spec.ports],
                host_config=host_config,
                detach=True,
            )
        except ImageNotFound as error:
            raise ProviderError(f"The image {spec.image} is not on the lab engine.") from error
        except NotFound as error:
            raise _NetworkGone(network) from error
        except APIError as error:
            if error.status_code == 409:
                raise _NameTaken(name) from error
            raise
        container_id = created["Id"]
        try:
            self._call("start", api.start, container_id)
        except NotFound as error:
            # Docker checks the network only at start: it was reclaimed meanwhile.
            with contextlib.suppress(NotFound):
                self._call("remove", api.remove_container, container_id, force=True, v=True)
            raise _NetworkGone(network) from error
        attrs = self._call("inspect", api.inspect_container, container_id)
        state = attrs.get("State") or {}
        if not state.get("Running"):
            raise ProviderError(
                f"The machine exited as soon as it started (exit code {state.get('ExitCode')})."
            )
        bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
        ports: dict[int, int] = {}
        for port in spec.ports if publish else ():
            published = bindings.get(f"{port.port}/tcp") or []
            if not published:
                raise ProviderError(f"Port {port.port} of the machine was not published.")
            ports[port.port] = int(published[0]["HostPort"])
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return Instance(
            session_id=spec.session_id,
            instance_id=container_id,
            user_id=spec.user_id,
            lab_id=spec.lab_id,
            running=True,
            host=publish,
            ports=ports,
            address=(networks.get(network) or {}).get("IPAddress", ""),
            created_at=datetime.now(tz=UTC),
        )


class _NameTaken(Exception):
    """A network or container of this name exists already (a start is being redelivered)."""


class _NetworkGone(Exception):
    """The network a container was to join no longer exists."""


def _gone_reason(action: str, attributes: dict) -> str:
    if action == "destroy":
        return "The machine was removed from the engine."
    code = attributes.get("exitCode")
    return f"The machine stopped (exit code {code})." if code is not None else "The machine stopped."


def _network_names(container: dict) -> set[str]:
    """The networks a container (as listed or inspected) is attached to, by name."""
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    names = set(networks)
    mode = (container.get("HostConfig") or {}).get("NetworkMode")
    if mode and mode not in {"default", "bridge", "host", "none"}:
        names.add(mode)
    return names


def _random_subnet(pool: str, prefix: int) -> str:
    network = ipaddress.ip_network(pool)
    count = 2 ** (prefix - network.prefixlen)
    index = random.randrange(count)
    size = 2 ** (network.max_prefixlen - prefix)
    return str(ipaddress.ip_network((int(network.network_address) + index * size, prefix)))


def _explain(error: DockerException) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
