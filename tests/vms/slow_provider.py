"""The Docker provider, pausing after it created the machine: a worker killed during the
pause dies mid-start, with a container running and the ledger still provisioning."""

from __future__ import annotations

import os
import time

from vms.providers.docker import DockerProvider


class SlowStartDockerProvider(DockerProvider):
    def start(self, spec):
        instance = super().start(spec)
        time.sleep(float(os.environ.get("VM_TEST_START_PAUSE", "120")))
        return instance
