"""Helpers for tests that reach machines through the gateway process (conftest's
`gateway_port`): requests as a browser sends them, on 127.0.0.1 with the machine's Host."""

from __future__ import annotations

import http.client
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

from rest_framework.test import APIClient

from cyberlab.accounts.services import token_for
from tests.factories import UserFactory
from tests.vms import support
from vms import gateway


def gateway_answers(port: int) -> bool:
    try:
        get(port, f"http://nobody.localhost:{port}/")
    except OSError:
        return False
    return True


def get(port: int, url: str, cookie: str | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
    """One request to the gateway on 127.0.0.1 for `url`'s host, as a browser would send it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": parts.netloc}
    if cookie:
        headers["Cookie"] = cookie
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    connection.request("GET", path or "/", headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body, response.headers


def learner_with_token():
    user = UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    return user, client


def running_machine(client: APIClient, lab) -> dict:
    assert client.post(f"/api/v1/labs/{lab.pk}/vm/").status_code == 202

    def running():
        body = client.get(f"/api/v1/labs/{lab.pk}/vm/").json()
        assert body.get("status") != "failed", body
        return body if body.get("status") == "running" else None

    return support.wait_for(running, timeout=60, what="machine running")


def enter(port: int, url: str) -> str:
    """Trades an entry link for the gateway's cookie; returns the Cookie header to send."""
    status, body, headers = get(port, url)
    assert status == 302, (status, body)
    assert headers["Location"] == "/"
    jar = SimpleCookie(headers["Set-Cookie"])
    morsel = jar[gateway.COOKIE_NAME]
    assert morsel["httponly"]
    assert morsel["samesite"] == "Lax"
    assert not morsel["domain"]
    return f"{gateway.COOKIE_NAME}={morsel.value}"
