"""A learner's browser through the whole way in: headless Chromium (Debian's, driven by
Playwright) against the served web and scripts/gateway.sh, a real machine on the real
Docker engine. The browser signs in and starts the machine the way the SPA does (fetch
with the session cookie and the CSRF header), opens the entry link, and sees its page."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from tests.conftest import require
from tests.integration.served import served
from tests.vms import support

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# The SPA's way of calling the API, run in the page: the session cookie rides along, and
# unsafe methods send the CSRF cookie back in X-CSRFToken.
CALL = """async ([method, path, body]) => {
  const csrf = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "";
  const response = await fetch("/api/v1/" + path, {
    method,
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
    body: body === null ? undefined : JSON.stringify(body),
  });
  return {status: response.status, body: await response.json().catch(() => null)};
}"""


def in_browser(scenario):
    """Runs `scenario(browser)` with a headless Chromium, in a thread of its own: the sync
    Playwright API runs an event loop in its thread, where Django refuses database calls,
    so the database work stays on the test's thread."""
    require(os.access(CHROMIUM, os.X_OK), f"no Chromium at {CHROMIUM} (make browser installs it)")
    from playwright.sync_api import sync_playwright

    def run():
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                scenario(chromium)
            finally:
                chromium.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result()


@pytest.fixture
def web(tmp_path, gateway_port):
    env = {
        "SECRET_KEY": settings.SECRET_KEY,  # the gateway's, so it trusts the web's links
        "VM_GATEWAY_URL": settings.VM_GATEWAY_URL,
        "VM_PLATFORM_NAME": support.TEST_PLATFORM,
    }
    with served(tmp_path, asgi=True, env=env, log=tmp_path / "web.log") as base:
        yield base


class Learner:
    """One person's browser: a context of its own (cookies), one tab on the platform."""

    def __init__(self, browser, web: str, name: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.page.goto(f"{web}/api/v1/auth/me/")  # sets the CSRF cookie, as the SPA's first call
        account = {"username": name, "email": f"{name}@example.org", "password": "a long passphrase 42"}
        registered = self.call("POST", "auth/register/", account)
        assert registered["status"] == 201, registered

    def call(self, method: str, path: str, body=None) -> dict:
        return self.page.evaluate(CALL, [method, path, body])

    def running_machine(self, lab_id: int) -> dict:
        started = self.call("POST", f"labs/{lab_id}/vm/")
        assert started["status"] == 202, started

        def running():
            state = self.call("GET", f"labs/{lab_id}/vm/")["body"]
            assert state["status"] != "failed", state
            return state if state["status"] == "running" else None

        return support.wait_for(running, timeout=60, interval=0.5, what="machine running")


def test_a_learner_opens_their_machine_in_a_browser_and_nobody_else_can(web, gateway_port, worker):
    lab = support.machine_lab()
    flag = lab.flags.get()

    def scenario(browser):
        alice = Learner(browser, web, "alice")
        machine = alice.running_machine(lab.pk)
        http = next(port for port in machine["connection"]["ports"] if port["protocol"] == "http")
        # when she opens the entry link in a new tab
        tab = alice.context.new_page()
        tab.goto(http["url"])
        # then she is on the machine's own origin, and sees its page with her own flag
        origin = tab.evaluate("location.origin")
        assert origin.endswith(f".localhost:{gateway_port}")
        assert tab.evaluate("location.pathname") == "/"
        assert tab.inner_text("h1") == "CyberLab demo machine"
        tab.wait_for_function("document.getElementById('flag').textContent !== '…'")
        own_flag = tab.inner_text("#flag")
        assert own_flag not in {"", "(no flag)"}
        # and the WebSocket the machine serves answers through the gateway
        tab.wait_for_function("document.getElementById('live').textContent !== 'connecting…'", timeout=10_000)
        assert tab.inner_text("#live") == "hello from the lab machine"
        # and the lab's scripts see none of the platform's cookies (nor the gateway's HttpOnly one)
        assert tab.evaluate("document.cookie") == ""
        # when she submits that flag on the platform
        submitted = alice.call("POST", f"labs/{lab.pk}/flags/{flag.pk}/submit/", {"flag": own_flag})
        assert submitted["body"]["correct"] is True, submitted
        # then a second learner's browser is refused at her machine's origin
        bob = Learner(browser, web, "bob")
        refused = bob.page.goto(f"{origin}/")
        assert refused.status == 403
        assert bob.page.goto(f"{origin}/flag").status == 403
        # and the link she used opens nothing a second time
        assert bob.page.goto(http["url"]).status == 403
        # when she stops the machine, its origin is gone
        assert alice.call("DELETE", f"labs/{lab.pk}/vm/")["status"] == 202
        support.wait_for(
            lambda: tab.goto(f"{origin}/flag").status in {404, 410}, timeout=30, what="origin gone"
        )

    in_browser(scenario)
