"""What a machine template may ask for, checked at start time whatever an author typed.

`template_problems` lists everything wrong with a template (an admin form can show the
list); `machine_spec` builds the provider's spec or refuses with the first problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase

from django.conf import settings

from labs.models import MachineTemplate
from vms.providers import MachineSpec, PortSpec

PROTOCOLS = ("tcp", "http", "ssh")
# A Docker image reference: optional registry[:port]/, lower-case path components,
# optional :tag and @sha256 digest. Anything else is refused before it reaches Docker.
IMAGE_REFERENCE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SSH_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class MachineNotAllowed(ValueError):
    """The template asks for something this platform does not run."""


@dataclass(frozen=True)
class CheckedTemplate:
    image: str
    ports: tuple[PortSpec, ...]
    memory_mb: int
    cpus: float
    environment: dict[str, str]
    capabilities: tuple[str, ...]
    ssh_user: str
    lifetime: timedelta


def normalise_capability(name: str) -> str:
    name = str(name).strip().upper()
    return name.removeprefix("CAP_")


def image_allowed(image: str) -> bool:
    return bool(IMAGE_REFERENCE.match(image)) and any(
        fnmatchcase(image, pattern) for pattern in settings.VM_ALLOWED_IMAGES
    )


def template_problems(template: MachineTemplate) -> list[str]:
    """Every reason this template may not start, in words an author understands."""
    problems: list[str] = []
    image = (template.image or "").strip()
    if not IMAGE_REFERENCE.match(image):
        problems.append(f"{image!r} is not a valid image reference.")
    elif not image_allowed(image):
        allowed = ", ".join(settings.VM_ALLOWED_IMAGES) or "none"
        problems.append(f"The image {image} is not allowed here (VM_ALLOWED_IMAGES: {allowed}).")
    allowed_caps = {normalise_capability(cap) for cap in settings.VM_ALLOWED_CAPABILITIES}
    capabilities = template.capabilities if isinstance(template.capabilities, list) else None
    if capabilities is None:
        problems.append("Capabilities must be a list of names.")
    else:
        refused = sorted({normalise_capability(cap) for cap in capabilities} - allowed_caps)
        if refused:
            problems.append(f"Capabilities not allowed here: {', '.join(refused)}.")
    problems.extend(_port_problems(template.ports))
    memory = template.memory_mb
    if not isinstance(memory, int) or not 16 <= memory <= settings.VM_MAX_MEMORY_MB:
        problems.append(f"Memory must be between 16 and {settings.VM_MAX_MEMORY_MB} MB.")
    try:
        cpus = Decimal(str(template.cpus))
    except InvalidOperation:
        cpus = Decimal(0)
    if not Decimal(0) < cpus <= Decimal(str(settings.VM_MAX_CPUS)):
        problems.append(f"CPUs must be above 0 and at most {settings.VM_MAX_CPUS}.")
    environment = template.environment
    if not isinstance(environment, dict):
        problems.append("The environment must be a mapping of names to values.")
    else:
        for name, value in environment.items():
            if not ENV_NAME.match(str(name)):
                problems.append(f"{name!r} is not a valid environment variable name.")
            elif isinstance(value, dict | list) or value is None:
                problems.append(f"The environment variable {name} must be a string or a number.")
    return problems


def _port_problems(ports) -> list[str]:
    if not isinstance(ports, list):
        return ["Ports must be a list."]
    problems = []
    if len(ports) > settings.VM_MAX_PORTS:
        problems.append(f"At most {settings.VM_MAX_PORTS} ports may be published.")
    seen = set()
    for entry in ports:
        port, protocol = _port_entry(entry)
        if port is None:
            problems.append(f"{entry!r} is not a port: use {{'port': 8080, 'protocol': 'http'}}.")
        elif protocol not in PROTOCOLS:
            problems.append(f"Port {port}: protocol must be one of {', '.join(PROTOCOLS)}.")
        elif port in seen:
            problems.append(f"Port {port} is listed twice.")
        seen.add(port)
    return problems


def _port_entry(entry) -> tuple[int | None, str]:
    if isinstance(entry, int) and not isinstance(entry, bool):
        port, protocol = entry, "tcp"
    elif isinstance(entry, dict):
        port, protocol = entry.get("port"), str(entry.get("protocol", "tcp")).lower()
    else:
        return None, ""
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return None, ""
    return port, protocol


def checked_template(template: MachineTemplate) -> CheckedTemplate:
    """The template's values, normalised; MachineNotAllowed when any is refused."""
    problems = template_problems(template)
    if problems:
        raise MachineNotAllowed(" ".join(problems))
    lifetime = settings.VM_LIFETIME
    if template.lifetime_minutes:
        lifetime = template.lifetime_minutes * 60
    ssh_user = template.ssh_user if SSH_USER.match(template.ssh_user or "") else "user"
    return CheckedTemplate(
        image=template.image.strip(),
        ports=tuple(
            PortSpec(port=port, protocol=protocol) for port, protocol in map(_port_entry, template.ports)
        ),
        memory_mb=template.memory_mb,
        cpus=float(template.cpus),
        environment={str(name): str(value) for name, value in template.environment.items()},
        capabilities=tuple(sorted({normalise_capability(cap) for cap in template.capabilities})),
        ssh_user=ssh_user,
        lifetime=timedelta(seconds=min(lifetime, settings.VM_MAX_LIFETIME)),
    )


def machine_spec(
    *, checked: CheckedTemplate, session_id: str, user_id: int, lab_id: int, flags: dict[str, str]
) -> MachineSpec:
    # The learner's flags win over anything the author put in the environment.
    environment = {**checked.environment, **flags}
    return MachineSpec(
        session_id=session_id,
        user_id=user_id,
        lab_id=lab_id,
        image=checked.image,
        ports=checked.ports,
        memory_mb=checked.memory_mb,
        cpus=checked.cpus,
        environment=environment,
        capabilities=checked.capabilities,
    )


def connection_info(*, host: str, ports: dict[int, int], specs: tuple[PortSpec, ...], ssh_user: str) -> dict:
    """Every port of the machine; for a port published on the lab host (`ports` maps it to
    its host port), the host port and a ready-made string per protocol too."""
    entries = []
    for spec in specs:
        entry: dict = {"port": spec.port, "protocol": spec.protocol}
        host_port = ports.get(spec.port)
        if host_port is not None:
            if spec.protocol == "http":
                address = f"http://{host}:{host_port}/"
            elif spec.protocol == "ssh":
                address = f"ssh -p {host_port} {ssh_user}@{host}"
            else:
                address = f"nc {host} {host_port}"
            entry.update(host_port=host_port, address=address)
        entries.append(entry)
    return {"host": host, "ports": entries} if ports else {"ports": entries}
