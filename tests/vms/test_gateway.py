"""The gateway's decisions (vms.gateway): names, links, passes. The proxy itself is tested
end to end in tests/integration/test_gateway.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vms import gateway

NAME = "0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("http://{name}.localhost:8001/", f"{NAME}.localhost:8001", (NAME, None)),
        ("http://{name}.localhost:8001/", f"{NAME}-8081.localhost:8001", (NAME, 8081)),
        ("http://{name}.localhost:8001/", f"{NAME.upper()}.LOCALHOST:8001", (NAME, None)),
        ("https://{name}.Labs.Example.org/", f"{NAME}.labs.example.org", (NAME, None)),
        ("http://{name}.localhost:8001/", f"{NAME}.localhost:8002", None),
        ("http://{name}.localhost:8001/", "localhost:8001", None),
        ("http://{name}.localhost:8001/", f"x{NAME}.localhost:8001", None),
    ],
)
def test_a_host_names_a_machine_only_in_the_gateways_own_pattern(settings, pattern, host, expected):
    settings.VM_GATEWAY_URL = pattern
    assert gateway.parse_host(host) == expected


def connection():
    return {
        "host": "127.0.0.1",
        "ports": [{"port": 8080, "protocol": "http"}, {"port": 22, "protocol": "ssh"}],
        "gateway": NAME,
        "upstream": "172.18.0.2",
    }


def request_of(user_id: int):
    return SimpleNamespace(
        user=SimpleNamespace(pk=user_id), auth=None, session=SimpleNamespace(session_key="k")
    )


def test_the_owner_gets_an_entry_link_and_a_tunnel_and_nobody_else_gets_any(settings):
    settings.VM_GATEWAY_URL = "https://{name}.labs.example.org/"
    links = gateway.links(request=request_of(7), connection=connection(), session_id="s", user_id=7)
    assert links[8080]["url"].startswith(f"https://{NAME}.labs.example.org{gateway.ENTRY_PATH}?token=")
    assert links[22]["url"] == f"wss://{NAME}.labs.example.org/_tcp/22"
    assert (
        links[22]["command"]
        == f"python -m vms.tunnel {links[22]['url']} 2022:22 --token {links[22]['token']}"
    )
    assert gateway.links(request=request_of(8), connection=connection(), session_id="s", user_id=7) == {}


def test_without_a_gateway_there_are_no_links(settings):
    settings.VM_GATEWAY_URL = ""
    assert gateway.links(request=request_of(7), connection=connection(), session_id="s", user_id=7) == {}


def test_a_forged_or_foreign_pass_is_refused(db, settings):
    settings.VM_GATEWAY_URL = "http://{name}.localhost:8001/"
    for cookie in (None, "", "not-signed", "x:y:z"):
        with pytest.raises(gateway.Refused) as refused:
            gateway.admit(host=f"{NAME}.localhost:8001", cookie=cookie)
        assert refused.value.status == 403
    with pytest.raises(gateway.Refused) as refused:
        gateway.redeem(host=f"{NAME}.localhost:8001", token="tampered")
    assert refused.value.status == 403
