"""Fixtures of the machine tests: a fake provider for unit tests, the real Docker
engine and a real Celery worker for the rest."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings

from tests.conftest import require
from tests.factories import UserFactory
from tests.vms import support
from tests.vms.fakes import FakeProvider


@pytest.fixture(autouse=True)
def _vm_settings():
    with override_settings(VM_PLATFORM_NAME=support.TEST_PLATFORM):
        yield


@pytest.fixture
def fake_provider():
    FakeProvider.reset()
    providers = {
        "docker": "vms.providers.docker.DockerProvider",
        "none": "",
        "fake": "tests.vms.fakes.FakeProvider",
    }
    with override_settings(VM_PROVIDERS=providers, VM_PROVIDER="fake"):
        yield FakeProvider
    FakeProvider.reset()


@pytest.fixture
def operator(db):
    """A staff member whose only machine permissions come from the operators group."""
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    return user


@pytest.fixture
def docker_engine():
    client = support.docker_client()
    require(client is not None, "no Docker engine answers")
    support.remove_platform_objects(client)
    yield client
    support.remove_platform_objects(client)
    client.close()


@pytest.fixture
def demo_image(docker_engine):
    require(support.ensure_demo_image(docker_engine), "the demo image could not be built")
    return docker_engine


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker in a thread of this process, on the test broker and database."""
    with support.thread_worker() as app:
        yield app
