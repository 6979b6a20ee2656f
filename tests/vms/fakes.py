"""An in-memory provider for unit tests of the lifecycle (Docker tests use the real one)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from vms.providers import Instance, MachineSpec, Provider, ProviderError, ProviderUnavailable


class FakeProvider(Provider):
    """Shared by every instance, so a test can look at what "the engine" holds."""

    lock = threading.Lock()
    instances: dict[str, Instance] = {}
    specs: dict[str, MachineSpec] = {}
    down = False
    fail_start: str | None = None
    starts = 0
    after_start = None
    publish = True  # False: like VM_PUBLISH_PORTS=0, reached at its own address only

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.instances = {}
            cls.specs = {}
            cls.down = False
            cls.fail_start = None
            cls.starts = 0
            cls.after_start = None
            cls.publish = True

    def _check(self) -> None:
        if type(self).down:
            raise ProviderUnavailable("The fake engine is down.")

    def ping(self) -> None:
        self._check()

    def start(self, spec: MachineSpec) -> Instance:
        self._check()
        cls = type(self)
        if cls.fail_start:
            raise ProviderError(cls.fail_start)
        published = {port.port: 40000 + index for index, port in enumerate(spec.ports)}
        with cls.lock:
            cls.starts += 1
            instance = Instance(
                session_id=spec.session_id,
                instance_id=uuid.uuid4().hex,
                user_id=spec.user_id,
                lab_id=spec.lab_id,
                running=True,
                host="127.0.0.1",
                ports=published if cls.publish else {},
                address="192.0.2.10",
                created_at=datetime.now(tz=UTC),
            )
            cls.instances[spec.session_id] = instance
            cls.specs[spec.session_id] = spec
        if cls.after_start is not None:
            cls.after_start(spec)
        return instance

    def stop(self, *, session_id: str, instance_id: str = "") -> None:
        self._check()
        with type(self).lock:
            type(self).instances.pop(session_id, None)

    def status(self, *, session_id: str) -> Instance | None:
        self._check()
        return type(self).instances.get(session_id)

    def list(self) -> list[Instance]:
        self._check()
        with type(self).lock:
            return list(type(self).instances.values())

    @classmethod
    def plant(cls, *, session_id: str, running: bool = True) -> Instance:
        """An instance the platform did not start (or that crashed: running=False)."""
        instance = Instance(session_id=session_id, instance_id=uuid.uuid4().hex, running=running)
        with cls.lock:
            cls.instances[session_id] = instance
        return instance
