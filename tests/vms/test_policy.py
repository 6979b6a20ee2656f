"""What a template may ask for, whatever its author typed."""

from __future__ import annotations

import pytest
from django.test import override_settings

from labs.models import MachineTemplate
from vms.policy import MachineNotAllowed, checked_template, connection_info, image_allowed, template_problems
from vms.providers import PortSpec


def template(**values) -> MachineTemplate:
    defaults = {
        "image": "cyberlab/demo:latest",
        "ports": [{"port": 8080, "protocol": "http"}],
        "memory_mb": 128,
        "cpus": "0.5",
        "environment": {},
        "capabilities": [],
        "ssh_user": "user",
    }
    defaults.update(values)
    return MachineTemplate(**defaults)


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("cyberlab/demo:latest", True),
        ("cyberlab/demo", True),
        ("cyberlab/web/sqli:1.2", True),
        ("cyberlab/demo@sha256:" + "a" * 64, True),
        ("docker.io/cyberlab/demo:latest", False),
        ("ubuntu:latest", False),
        ("evil.example/cyberlab/demo", False),
        ("cyberlab/demo; rm -rf /", False),
        ("Cyberlab/Demo", False),
        ("", False),
    ],
)
def test_only_images_matching_the_allowed_patterns_start(image, allowed):
    assert image_allowed(image) is allowed


def test_allowed_patterns_come_from_the_setting():
    with override_settings(VM_ALLOWED_IMAGES=["registry.local:5000/labs/*"]):
        assert image_allowed("registry.local:5000/labs/xss:2") is True
        assert image_allowed("cyberlab/demo:latest") is False


def test_capabilities_are_normalised_and_checked_against_the_allowed_list():
    checked = checked_template(template(capabilities=["cap_net_bind_service", " CHOWN "]))
    assert checked.capabilities == ("CHOWN", "NET_BIND_SERVICE")
    problems = template_problems(template(capabilities=["SYS_ADMIN", "NET_ADMIN", "ALL"]))
    assert problems == ["Capabilities not allowed here: ALL, NET_ADMIN, SYS_ADMIN."]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"ports": [{"port": 0}]}, "is not a port"),
        ({"ports": [{"port": 22, "protocol": "telnet"}]}, "protocol must be one of"),
        ({"ports": [8080, 8080]}, "listed twice"),
        ({"ports": "8080"}, "Ports must be a list"),
        ({"ports": list(range(1, 20))}, "At most 8 ports"),
        ({"memory_mb": 999999}, "Memory must be between"),
        ({"cpus": "64"}, "CPUs must be"),
        ({"environment": {"BAD NAME": "x"}}, "not a valid environment variable name"),
        ({"environment": {"X": {"nested": 1}}}, "must be a string or a number"),
        ({"capabilities": "NET_ADMIN"}, "Capabilities must be a list"),
    ],
)
def test_malformed_templates_are_refused_with_a_reason(values, problem):
    problems = template_problems(template(**values))
    assert any(problem in text for text in problems), problems
    with pytest.raises(MachineNotAllowed):
        checked_template(template(**values))


def test_lifetime_is_the_templates_or_the_default_capped_by_the_max():
    assert checked_template(template()).lifetime.total_seconds() == 7200
    assert checked_template(template(lifetime_minutes=30)).lifetime.total_seconds() == 1800
    assert checked_template(template(lifetime_minutes=10_000)).lifetime.total_seconds() == 4 * 3600


def test_connection_strings_per_protocol():
    info = connection_info(
        host="127.0.0.1",
        ports={80: 49154, 22: 49155, 1337: 49153},
        specs=(PortSpec(1337, "tcp"), PortSpec(80, "http"), PortSpec(22, "ssh")),
        ssh_user="student",
    )
    assert [port["address"] for port in info["ports"]] == [
        "nc 127.0.0.1 49153",
        "http://127.0.0.1:49154/",
        "ssh -p 49155 student@127.0.0.1",
    ]
