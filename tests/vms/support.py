"""What the machine tests share: labs with a machine, the Docker cleanup, the worker."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from django.conf import settings

import docker
from labs.models import FlagKind
from tests.labs.factories import FlagFactory, LabFactory, MachineTemplateFactory
from tests.vms.platform import TEST_PLATFORM

ROOT = Path(__file__).resolve().parents[2]
LABEL_PLATFORM = "cyberlab.platform"


def machine_lab(*, image: str | None = None, **template):
    """A published lab with a machine template and one dynamic flag."""
    lab = LabFactory()
    MachineTemplateFactory(lab=lab, image=image or settings.VM_DEMO_IMAGE, **template)
    FlagFactory(lab=lab, kind=FlagKind.DYNAMIC, value="", points=50)
    return lab


def docker_client() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:  # no engine at all, or one that does not answer: both mean "skip"
        return None
    return client


def ensure_demo_image(client: docker.DockerClient) -> bool:
    tag = settings.VM_DEMO_IMAGE
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        result = subprocess.run(
            [str(ROOT / "scripts" / "demo-image.sh")], capture_output=True, text=True, check=False
        )
        return result.returncode == 0


def remove_platform_objects(client: docker.DockerClient, platform: str = TEST_PLATFORM) -> int:
    """Removes every container and network labelled with the tests' platform name."""
    removed = 0
    label = {"label": [f"{LABEL_PLATFORM}={platform}"]}
    for container in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
            removed += 1
    for network in client.networks.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
            removed += 1
    return removed


def platform_containers(client: docker.DockerClient, **labels: str) -> list:
    filters = [f"{LABEL_PLATFORM}={TEST_PLATFORM}"] + [f"cyberlab.{k}={v}" for k, v in labels.items()]
    return client.containers.list(all=True, filters={"label": filters})


def platform_networks(client: docker.DockerClient, **labels: str) -> list:
    filters = [f"{LABEL_PLATFORM}={TEST_PLATFORM}"] + [f"cyberlab.{k}={v}" for k, v in labels.items()]
    return client.networks.list(filters={"label": filters})


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Polls until `predicate()` is truthy and returns it; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def thread_worker():
    """A real Celery worker (solo pool) in a thread of this process, until the block ends.

    A thread's database connections can only be closed from that thread, and the worker
    keeps its own between tasks (CELERY_DB_REUSE_MAX): here they are closed after each
    task, so none outlives the test and its database.
    """
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun
    from django.db import connections

    from cyberlab.celery import app

    def close_connections(**kwargs):
        connections.close_all()

    task_postrun.connect(close_connections, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            yield app
    finally:
        task_postrun.disconnect(close_connections)
