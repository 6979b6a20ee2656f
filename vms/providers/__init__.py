"""Providers turn a machine spec into a running instance and back.

`get_provider()` returns the one VM_PROVIDER names; `get_provider(name=...)` the one a
session was started with, so switching the setting never strands running machines.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from vms.providers.base import (
    Instance,
    MachineSpec,
    PortSpec,
    Provider,
    ProviderDisabled,
    ProviderError,
    ProviderUnavailable,
)

__all__ = [
    "Instance",
    "MachineSpec",
    "PortSpec",
    "Provider",
    "ProviderDisabled",
    "ProviderError",
    "ProviderUnavailable",
    "get_provider",
]


def get_provider(*, name: str | None = None) -> Provider:
    """The provider called `name` (VM_PROVIDER by default); ProviderDisabled for "none"."""
    return _provider(name or settings.VM_PROVIDER)


@cache
def _provider(name: str) -> Provider:
    path = settings.VM_PROVIDERS.get(name)
    if path is None:
        raise ProviderDisabled(f"Unknown machine provider {name!r}.")
    if not path:
        raise ProviderDisabled("Lab machines are switched off on this platform.")
    return import_string(path)(name=name)


@receiver(setting_changed)
def _forget_providers(*, setting: str, **kwargs) -> None:
    if setting.startswith("VM_"):
        _provider.cache_clear()
