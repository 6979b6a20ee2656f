"""Revocation holds on every worker at the next request, even while Redis hangs."""

import http.cookiejar
import json
import os
import signal
import urllib.error
import urllib.request

import pytest

from tests.integration.served import fetch, served

pytestmark = pytest.mark.slow

PASSWORD = "a long enough password 1"
CREDENTIALS = {"username": "revoker", "password": PASSWORD}


class Browser:
    """A client with a cookie jar that sends the CSRF token back, as the SPA does."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.call("/api/v1/auth/me/")  # sets the CSRF cookie

    def call(self, path: str, method: str = "GET", body=None) -> tuple[int, dict]:
        csrf = next((cookie.value for cookie in self.jar if cookie.name == "csrftoken"), "")
        request = urllib.request.Request(
            f"{self.base}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": f"{self.base}/"},
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def hung_redis_stack(transactional_db, private_redis, tmp_path):
    """Two gunicorn workers on a Redis of their own, which the test can pause (SIGSTOP),
    and a learner registered through the API."""
    with served(tmp_path, workers=2, redis_url=private_redis.url) as base:
        status, body = Browser(base).call(
            "/api/v1/auth/register/", "POST", {**CREDENTIALS, "email": "revoker@example.com"}
        )
        assert status == 201, body
        try:
            yield base, private_redis.process.pid
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)


def me_statuses(base: str, headers: dict, rounds: int) -> list[int]:
    return [fetch(f"{base}/api/v1/auth/me/", headers=headers)[0] for _ in range(rounds)]


def test_a_rotated_token_is_refused_by_every_worker_while_redis_hangs(hung_redis_stack):
    base, redis_pid = hung_redis_stack
    # given a token both workers have served (many requests land on each)
    status, body, _ = fetch(f"{base}/api/v1/auth/token/", method="POST", body=CREDENTIALS)
    assert status == 200, body
    old = {"Authorization": f"Token {json.loads(body)['token']}"}
    assert set(me_statuses(base, old, 20)) == {200}
    # when Redis hangs and the learner revokes every other sign-in, which rotates the token
    os.kill(redis_pid, signal.SIGSTOP)
    status, body, _ = fetch(f"{base}/api/v1/auth/sessions/revoke-others/", method="POST", headers=old)
    assert status == 200, body
    # then every worker refuses the old token from the next request on
    assert set(me_statuses(base, old, 30)) <= {401, 403}


def test_a_revoked_session_is_signed_out_on_every_worker_while_redis_hangs(hung_redis_stack):
    base, redis_pid = hung_redis_stack
    # given the learner signed in on two browsers, each served by both workers
    first, second = Browser(base), Browser(base)
    for browser in (first, second):
        status, body = browser.call("/api/v1/auth/login/", "POST", CREDENTIALS)
        assert status == 200, body
        assert {browser.call("/api/v1/auth/me/")[0] for _ in range(10)} == {200}
    _, sessions = second.call("/api/v1/auth/sessions/")
    first_id = next(row["id"] for row in sessions["results"] if not row["current"])
    # when Redis hangs and the second browser revokes the first
    os.kill(redis_pid, signal.SIGSTOP)
    status, body = second.call(f"/api/v1/auth/sessions/{first_id}/", "DELETE")
    assert status == 204, body
    # then the first is signed out on every worker at once, and the second is not
    assert {first.call("/api/v1/auth/me/")[0] for _ in range(20)} == {403}
    assert second.call("/api/v1/auth/me/")[0] == 200
