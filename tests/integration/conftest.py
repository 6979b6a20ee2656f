"""Fixtures of the served stack's pieces shared by the integration tests."""

from __future__ import annotations

import sys

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import free_port, require
from tests.integration.machines import gateway_answers
from tests.integration.served import ROOT, process, stack_env
from tests.vms import support

NO_THROTTLE = {"user": "", "anon": "", "vm_start": "", "login": "", "register": "", "flag": ""}


@pytest.fixture
def gateway_port(tmp_path):
    """scripts/gateway.sh on a free port of 127.0.0.1, machines at {name}.localhost:<port>."""
    client = support.docker_client()
    require(client is not None, "no Docker engine answers")
    require(support.ensure_demo_image(client), "the demo image could not be built")
    support.remove_platform_objects(client)
    port = free_port()
    pattern = f"http://{{name}}.localhost:{port}/"
    env = stack_env(
        tmp_path,
        # The links are signed here, by the test's own settings, as the web would sign them.
        SECRET_KEY=settings.SECRET_KEY,
        GATEWAY_BIND=f"127.0.0.1:{port}",
        PYTHON=sys.executable,
        GATEWAY_ACCESS_LOG="/dev/null",
        VM_GATEWAY_URL=pattern,
        VM_ACTIVITY_RESOLUTION="0",  # every request recorded, so a test sees the gateway's own
        # Small enough for a test to reach: connections per machine, seconds of silence.
        VM_GATEWAY_MAX_CONNECTIONS="3",
        VM_GATEWAY_IDLE_CLOSE="3",
    )
    settings_for_test = override_settings(
        VM_PLATFORM_NAME=support.TEST_PLATFORM, THROTTLE_RATES=NO_THROTTLE, VM_GATEWAY_URL=pattern
    )
    command = [str(ROOT / "scripts" / "gateway.sh")]
    with settings_for_test, process(command, env, log=tmp_path / "gateway.log"):
        support.wait_for(lambda: gateway_answers(port), timeout=30, what="the gateway listening")
        yield port
    support.remove_platform_objects(client)
    client.close()


@pytest.fixture
def worker(transactional_db):
    with support.thread_worker() as app:
        yield app
