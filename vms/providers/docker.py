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
from datetime import UTC, datetime

import requests
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import IPAMConfig, IPAMPool

import docker
from vms.providers.base import Instance, MachineSpec, Provider, ProviderError, ProviderUnavailable

logger = logging.getLogger(__name__)

LABEL_PLATFORM = "cyberlab.platform"
LABEL_SESSION = "cyberlab.session"
LABEL_USER = "cyberlab.user"
LABEL_LAB = "cyberlab.lab"

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
        # A redelivered start finds what the first attempt left and starts afresh.
        self.stop(session_id=spec.session_id)
        labels = {
            LABEL_PLATFORM: settings.VM_PLATFORM_NAME,
            LABEL_SESSION: spec.session_id,
            LABEL_USER: str(spec.user_id),
            LABEL_LAB: str(spec.lab_id),
        }
        name = f"{settings.VM_PLATFORM_NAME}-vm-{spec.session_id}"
        try:
            self._create_network(name=name, labels=labels)
            instance = self._create_container(name=name, spec=spec, labels=labels)
        except BaseException as error:
            try:
                self.stop(session_id=spec.session_id)
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
        return instance

    def stop(self, *, session_id: str, instance_id: str = "") -> None:
        api = self._client().api
        try:
            containers = self._call(
                "list", api.containers, all=True, filters=self._platform_filter(session_id=session_id)
            )
            ids = {item["Id"] for item in containers}
            if instance_id and not any(item.startswith(instance_id) for item in ids):
                ids |= self._owned(instance_id=instance_id, session_id=session_id)
            for container_id in ids:
                # NotFound: removed meanwhile, which is the goal.
                with contextlib.suppress(NotFound):
                    self._call("remove", api.remove_container, container_id, force=True, v=True)
            networks = self._call(
                "networks", api.networks, filters=self._platform_filter(session_id=session_id)
            )
            for network in networks:
                with contextlib.suppress(NotFound):
                    self._call("remove network", api.remove_network, network["Id"])
        except APIError as error:
            raise ProviderError(f"Could not remove machine {session_id}: {_explain(error)}") from error

    def status(self, *, session_id: str) -> Instance | None:
        found = self._instances(session_id=session_id)
        return found[0] if found else None

    def list(self) -> list[Instance]:
        return self._instances()

    # --- details ---------------------------------------------------------------

    def _owned(self, *, instance_id: str, session_id: str) -> set[str]:
        """`instance_id` when it is a container of this platform and session."""
        try:
            attrs = self._call("inspect", self._client().api.inspect_container, instance_id)
        except NotFound:
            return set()
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if (
            labels.get(LABEL_PLATFORM) == settings.VM_PLATFORM_NAME
            and labels.get(LABEL_SESSION) == session_id
        ):
            return {attrs["Id"]}
        return set()

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
            if session not in found:
                found[session] = Instance(
                    session_id=session,
                    instance_id="",
                    user_id=_int(labels.get(LABEL_USER)),
                    lab_id=_int(labels.get(LABEL_LAB)),
                )
        return list(found.values())

    def _create_network(self, *, name: str, labels: dict[str, str]) -> None:
        client = self._client()
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
                    client.networks.create,
                    name,
                    driver="bridge",
                    options=NETWORK_OPTIONS,
                    ipam=ipam,
                    labels=labels,
                    check_duplicate=True,
                )
                return
            except APIError as error:
                # Another network took that subnet: draw again.
                if pool and "overlap" in str(error).lower() and attempt + 1 < attempts:
                    continue
                raise ProviderError(f"Could not create the machine's network: {_explain(error)}") from error

    def _create_container(self, *, name: str, spec: MachineSpec, labels: dict[str, str]) -> Instance:
        client = self._client()
        publish = settings.VM_PUBLISH_HOST
        try:
            container = self._call(
                "create",
                client.containers.create,
                spec.image,
                name=name,
                hostname="lab",
                labels=labels,
                environment=spec.environment,
                network=name,
                ports={f"{port.port}/tcp": (publish,) for port in spec.ports},
                mem_limit=f"{spec.memory_mb}m",
                memswap_limit=f"{spec.memory_mb}m",
                nano_cpus=int(spec.cpus * 1_000_000_000),
                pids_limit=settings.VM_PIDS_LIMIT,
                security_opt=["no-new-privileges:true"],
                cap_drop=["ALL"],
                cap_add=list(spec.capabilities) or None,
                restart_policy={"Name": "no"},
                detach=True,
            )
        except ImageNotFound as error:
            raise ProviderError(f"The image {spec.image} is not on the lab engine.") from error
        self._call("start", container.start)
        self._call("inspect", container.reload)
        state = container.attrs.get("State") or {}
        if not state.get("Running"):
            raise ProviderError(
                f"The machine exited as soon as it started (exit code {state.get('ExitCode')})."
            )
        bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        ports: dict[int, int] = {}
        for port in spec.ports:
            published = bindings.get(f"{port.port}/tcp") or []
            if not published:
                raise ProviderError(f"Port {port.port} of the machine was not published.")
            ports[port.port] = int(published[0]["HostPort"])
        return Instance(
            session_id=spec.session_id,
            instance_id=container.id,
            user_id=spec.user_id,
            lab_id=spec.lab_id,
            running=True,
            host=publish,
            ports=ports,
            created_at=datetime.now(tz=UTC),
        )


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
