"""Settings of a Celery worker subprocess the tests kill mid-start (see slow_provider)."""

from tests.settings import *  # noqa: F403
from tests.vms.platform import TEST_PLATFORM

VM_PLATFORM_NAME = TEST_PLATFORM
VM_PROVIDERS = {**VM_PROVIDERS, "docker": "tests.vms.slow_provider.SlowStartDockerProvider"}  # noqa: F405
