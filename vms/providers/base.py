"""The provider interface and what crosses it."""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


class ProviderError(RuntimeError):
    """The provider could not do what was asked (the message says why)."""


class ProviderUnavailable(ProviderError):
    """The engine behind the provider does not answer."""


class ProviderDisabled(ProviderError):
    """No provider runs machines on this platform (VM_PROVIDER=none)."""


@dataclass(frozen=True)
class PortSpec:
    port: int
    protocol: str  # tcp, http or ssh


@dataclass(frozen=True)
class MachineSpec:
    session_id: str
    user_id: int
    lab_id: int
    image: str
    ports: tuple[PortSpec, ...]
    memory_mb: int
    cpus: float
    environment: dict[str, str]
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Instance:
    """One machine as the provider sees it. `ports` maps the machine's port to the host's."""

    session_id: str
    instance_id: str
    user_id: int | None = None
    lab_id: int | None = None
    running: bool = False
    host: str = ""
    ports: dict[int, int] = field(default_factory=dict)
    address: str = ""  # on the machine's own network, where the gateway reaches it
    created_at: datetime | None = None


class Provider(abc.ABC):
    """Starts and stops machines; every instance it owns is found again by its labels.

    Implementations are safe to call from several threads, and `start` may be called
    again for the same session (a redelivered task): it replaces whatever is left.
    """

    def __init__(self, *, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def ping(self) -> None:
        """Returns when the engine answers; raises ProviderUnavailable otherwise."""

    @abc.abstractmethod
    def start(self, spec: MachineSpec) -> Instance:
        """Creates and starts the machine; on failure leaves nothing behind and raises."""

    @abc.abstractmethod
    def stop(self, *, session_id: str, instance_id: str = "") -> None:
        """Removes everything of the session; a session already gone is fine."""

    @abc.abstractmethod
    def status(self, *, session_id: str) -> Instance | None:
        """The session's instance, or None when there is none."""

    @abc.abstractmethod
    def list(self) -> list[Instance]:
        """Every instance this platform owns, running or not, one per session."""

    def watch(self, *, on_gone: Callable[[str, str, str], None], stop: threading.Event) -> None:  # noqa: B027
        """Calls `on_gone(session_id, instance_id, reason)` as the engine reports one of
        this platform's instances dying or removed, until `stop` is set. A provider
        whose engine reports nothing returns at once: the reconciler notices instead."""

    def prepare(self) -> None:  # noqa: B027 - optional: most providers have nothing to prepare
        """Gets capacity ready for the next starts (after a start, and when reconciling)."""
