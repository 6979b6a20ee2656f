"""The gateway's cost: one demo machine, measured through scripts/gateway.sh and straight at
its address on its own network, alternately in the same run.

* HTTP: wrk (core 0) against the machine's page, through the gateway (core 1, one worker,
  with the owner's cookie) and direct; requests per second, p50 and p99;
* a tunnel's bulk throughput: bytes pushed through `/_tcp/7000` (the demo's echo service)
  and read back, MB/s one way;
* BENCH_TUNNELS (500) tunnels held open at once: the gateway's memory per tunnel.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import statistics
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import parse_wrk
from bench.vms_common import ROOT, remove_machines, setup_django, write_result

PORT = int(os.environ.get("BENCH_GATEWAY_PORT", "8801"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DURATION = int(os.environ.get("BENCH_DURATION", "5"))
TUNNELS = int(os.environ.get("BENCH_TUNNELS", "500"))
BULK_MB = int(os.environ.get("BENCH_TUNNEL_MB", "64"))


def main() -> None:
    # The echo service forks once per connection: room for every held tunnel.
    env = setup_django(
        {
            "VM_GATEWAY_URL": f"http://{{name}}.localhost:{PORT}/",
            "ALLOWED_HOSTS": "*",
            "VM_PIDS_LIMIT": "2048",
        }
    )
    import websockets.asyncio.client
    from rest_framework.test import APIClient

    import docker
    from cyberlab.accounts.models import User
    from cyberlab.accounts.services import token_for
    from labs.models import Course, Lab, MachineTemplate
    from vms import services
    from vms.models import VMSession

    engine = docker.from_env()
    remove_machines(engine)
    user, _ = User.objects.get_or_create(username="bench-gateway")
    VMSession.objects.filter(user=user).delete()
    course, _ = Course.objects.get_or_create(
        slug="bench-gateway", defaults={"title": "Gateway", "published": True}
    )
    lab = Lab.objects.create(course=course, title="Gateway lab", published=True)
    MachineTemplate.objects.create(
        lab=lab,
        image=os.environ.get("VM_DEMO_IMAGE", "cyberlab/demo:latest"),
        ports=[{"port": 8080, "protocol": "http"}, {"port": 7000, "protocol": "tcp"}],
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    session_id = client.post(f"/api/v1/labs/{lab.pk}/vm/", SERVER_NAME="127.0.0.1").json()["session_id"]
    services.vm_provision(session_id=session_id)
    machine = client.get(f"/api/v1/labs/{lab.pk}/vm/", SERVER_NAME="127.0.0.1").json()
    ports = {entry["port"]: entry for entry in machine["connection"]["ports"]}
    upstream = VMSession.objects.get(pk=session_id).connection["upstream"]
    gateway_env = {
        **env,
        "GATEWAY_BIND": f"127.0.0.1:{PORT}",
        "GATEWAY_ACCESS_LOG": "/dev/null",
        "PYTHON": sys.executable,
    }
    server = subprocess.Popen(
        ["taskset", "-c", "1", str(ROOT / "scripts" / "gateway.sh")], env=gateway_env, cwd=ROOT
    )
    try:
        _wait_listening(PORT)
        entry = urlsplit(ports[8080]["url"])
        host = entry.netloc
        cookie = _enter(host, f"{entry.path}?{entry.query}")
        lines = [_http(upstream, host, cookie)]
        tcp = ports[7000]
        lines.append(asyncio.run(_bulk(tcp["url"], tcp["token"], websockets.asyncio.client)))
        lines.append(asyncio.run(_held(tcp["url"], tcp["token"], server.pid, websockets.asyncio.client)))
    finally:
        server.terminate()
        server.wait(timeout=20)
        services.vm_stop_session(session_id=session_id, reason="user")
        services.vm_teardown(session_id=session_id)
        remove_machines(engine)
    write_result("gateway.md", "\n\n".join(lines))


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/", headers={"Host": "nobody"})
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the gateway did not start")


def _enter(host: str, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    response.read()
    assert response.status == 302, response.status
    morsel = next(iter(SimpleCookie(response.headers["Set-Cookie"]).values()))
    return f"{morsel.key}={morsel.value}"


def _wrk(url: str, *headers: str) -> tuple[float, float, float, int]:
    command = ["taskset", "-c", "0", "wrk", "-t1", "-c16", f"-d{DURATION}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def _http(upstream: str, host: str, cookie: str) -> str:
    direct, through = [], []
    for _ in range(RUNS):
        direct.append(_wrk(f"http://{upstream}:8080/"))
        through.append(_wrk(f"http://127.0.0.1:{PORT}/", f"Host: {host}", f"Cookie: {cookie}"))

    def median(rows, index):
        return statistics.median(row[index] for row in rows)

    rows = [
        "| HTTP to the demo machine's page | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {median(r, 0):,.0f} | {median(r, 1):.2f} | {median(r, 2):.2f} "
            f"| {sum(x[3] for x in r)} |"
            for name, r in (("direct (the machine's address)", direct), ("through the gateway", through))
        ),
    ]
    ratio = median(through, 0) / median(direct, 0)
    added = median(through, 1) - median(direct, 1)
    return "\n".join(rows) + f"\n\nthrough / direct: {ratio:.2f}x throughput, {added:+.2f} ms at p50"


async def _bulk(url: str, token: str, client) -> str:
    chunk = os.urandom(64 * 1024)
    total = BULK_MB * 1024 * 1024
    async with client.connect(
        url,
        host="127.0.0.1",
        port=PORT,
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
    ) as ws:

        async def write() -> None:
            for _ in range(total // len(chunk)):
                await ws.send(chunk)

        started = time.perf_counter()
        writer = asyncio.ensure_future(write())
        received = 0
        while received < total:
            received += len(await ws.recv())
        await writer
        elapsed = time.perf_counter() - started
    return (
        f"Tunnel bulk throughput (`/_tcp/7000`, the demo's echo service, {BULK_MB} MiB each way at once): "
        f"{BULK_MB * 1.048576 / elapsed:.1f} MB/s one way"
    )


async def _held(url: str, token: str, pid: int, client) -> str:
    before = _rss_of_tree(pid)
    sockets = []
    for _ in range(TUNNELS):
        sockets.append(
            await client.connect(
                url, host="127.0.0.1", port=PORT, additional_headers={"Authorization": f"Bearer {token}"}
            )
        )
    await asyncio.sleep(2)
    after = _rss_of_tree(pid)
    alive = 0
    for ws in sockets:
        await ws.send(b"x")
        alive += await asyncio.wait_for(ws.recv(), 10) == b"x"
    for ws in sockets:
        await ws.close()
    per_tunnel = (after - before) / TUNNELS
    return (
        f"{TUNNELS} tunnels held open at once ({alive} answered): gateway memory "
        f"{before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB, **{per_tunnel / 1024:.1f} KiB per tunnel** "
        "(the machine's side not counted)"
    )


def _rss_of_tree(pid: int) -> int:
    pids = [
        pid,
        *map(
            int,
            re.findall(
                r"\d+", subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
            ),
        ),
    ]
    total = 0
    for each in pids:
        status = Path(f"/proc/{each}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            total += int(match.group(1)) * 1024 if match else 0
    return total


if __name__ == "__main__":
    main()
