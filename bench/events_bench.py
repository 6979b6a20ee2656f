"""The event stream under load: BENCH_STREAMS (5,000) open streams on the ASGI server of
scripts/serve.sh (2 workers, core 1), held by one asyncio client on core 0.

Measured in one run:
* memory per idle stream: the server's resident memory (every worker) with the streams
  open, less before, divided by their number;
* the CPU they cost while idle: the server's CPU time over BENCH_IDLE_SECONDS;
* a fan-out: one broadcast event (as a first solve publishes it) to every stream,
  publish -> receipt p50 / p99 / max, BENCH_FANOUTS times;
* the hot reads (top-10, machine status) by wrk, alternately with the streams open and
  closed (the ratio should stay >= 0.8).

    .venv/bin/python bench/events_bench.py
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from vms_common import ROOT, setup_django, write_result

STREAMS = int(os.environ.get("BENCH_STREAMS", "5000"))
LEARNERS = max(1, STREAMS // 4)  # within EVENTS_MAX_STREAMS_PER_USER (5)
IDLE_SECONDS = int(os.environ.get("BENCH_IDLE_SECONDS", "10"))
FANOUTS = int(os.environ.get("BENCH_FANOUTS", "5"))
PORT = int(os.environ.get("BENCH_EVENTS_PORT", "8790"))
WRK_SECONDS = int(os.environ.get("BENCH_DURATION", "5"))
ROUNDS = int(os.environ.get("BENCH_RUNS", "3"))


def server_pids(master: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [master, *map(int, children)]


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


class Streams:
    """STREAMS open streams in this process's event loop, and when each saw an event."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []
        self.received: dict[str, list[float]] = {}

    async def open(self) -> None:
        for index in range(STREAMS):
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
            token = self.tokens[index % len(self.tokens)]
            writer.write(
                f"GET /api/v1/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            await writer.drain()
            status = await reader.readline()
            if b" 200 " not in status:
                raise SystemExit(f"stream {index} answered {status!r}")
            self.writers.append(writer)
            self.tasks.append(asyncio.get_running_loop().create_task(self._read(reader)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: ") and b'"bench_id"' in line:
                data = json.loads(line[6:])
                self.received.setdefault(data["bench_id"], []).append(time.time())

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.writers, self.tasks = [], []


def wrk(path: str, headers: dict[str, str]) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        for name, value in headers.items():
            script.write(f'wrk.headers["{name}"] = "{value}"\n')
    output = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c16", f"-d{WRK_SECONDS}s", "-s", script.name,
         f"http://127.0.0.1:{PORT}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    return float(output.split("Requests/sec:")[1].split()[0])


async def run(master: int, tokens: list[str], reads: list[tuple[str, str, dict]]) -> list[str]:
    from cyberlab.events import services

    pids = server_pids(master)
    lines = []
    before = rss_bytes(pids)
    streams = Streams(tokens)
    opened = time.monotonic()
    await streams.open()
    opening = time.monotonic() - opened
    await asyncio.sleep(2)
    after = rss_bytes(pids)
    per_stream = (after - before) / STREAMS
    cpu_before, idle_started = cpu_seconds(pids), time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    idle_cpu = (cpu_seconds(pids) - cpu_before) / (time.monotonic() - idle_started)
    lines.append(
        f"{STREAMS:,} streams opened in {opening:.1f} s; server memory {before / 2**20:.0f} MiB -> "
        f"{after / 2**20:.0f} MiB: **{per_stream / 1024:.1f} KiB per idle stream**; CPU while idle "
        f"{100 * idle_cpu:.1f} % of one core over {IDLE_SECONDS} s (heartbeats every "
        f"{os.environ.get('EVENTS_HEARTBEAT', '15')} s)."
    )

    latencies = []
    for number in range(FANOUTS):
        bench_id = f"fanout-{number}"
        sent = time.time()
        await asyncio.to_thread(
            services.events_publish,
            services.FIRST_BLOOD,
            {"bench_id": bench_id, "sent": sent},
            broadcast=True,
        )
        deadline = time.monotonic() + 10
        while len(streams.received.get(bench_id, [])) < STREAMS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        arrived = streams.received.get(bench_id, [])
        latencies += [(at - sent) * 1000 for at in arrived]
        lines.append(f"fan-out {number + 1}: {len(arrived):,} of {STREAMS:,} streams received it")
        await asyncio.sleep(1)
    latencies.sort()
    lines.append(
        f"publish -> receipt over {FANOUTS} fan-outs to {STREAMS:,} streams: p50 "
        f"{statistics.median(latencies):.0f} ms, p99 {latencies[int(len(latencies) * 0.99) - 1]:.0f} ms, "
        f"max {latencies[-1]:.0f} ms"
    )

    rows = [
        "| read | req/s, streams closed | req/s, 5,000 streams open | open / closed |",
        "|---|---:|---:|---:|",
    ]
    figures: dict[str, dict[bool, list[float]]] = {name: {True: [], False: []} for name, _, _ in reads}
    for _ in range(ROUNDS):
        for name, path, headers in reads:
            figures[name][True].append(await asyncio.to_thread(wrk, path, headers))
    await streams.close()
    await asyncio.sleep(2)
    for _ in range(ROUNDS):
        for name, path, headers in reads:
            figures[name][False].append(await asyncio.to_thread(wrk, path, headers))
    for name, _, _ in reads:
        with_streams, without = (statistics.median(figures[name][flag]) for flag in (True, False))
        rows.append(f"| {name} | {without:,.0f} | {with_streams:,.0f} | {with_streams / without:.2f}x |")
    lines += ["", f"Hot reads, median of {ROUNDS} wrk runs of {WRK_SECONDS} s each way:", "", *rows]
    return lines


def main() -> None:
    os.sched_setaffinity(0, {0})  # the client on core 0, the server on core 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, STREAMS * 2 + 1000)), hard))
    env = setup_django({"LEADERBOARD_PUBLIC": "1", "EVENTS_MAX_STREAMS_PER_USER": "5"})
    from django_redis import get_redis_connection
    from rest_framework.authtoken.models import Token

    from bench.common import Context
    from bench.scenarios import vms as vms_scenario
    from cyberlab.accounts.models import User

    get_redis_connection("default").flushdb()
    User.objects.filter(username__startswith="bench-stream-").delete()
    users = User.objects.bulk_create(User(username=f"bench-stream-{n}") for n in range(LEARNERS))
    tokens = [
        token.key
        for token in Token.objects.bulk_create(Token(user=user, key=Token.generate_key()) for user in users)
    ]
    context = Context(base_url=f"http://127.0.0.1:{PORT}")
    machine = next(e for e in vms_scenario.setup(context) if e.name.startswith("machine status"))
    reads = [
        ("leaderboard top-10", "/api/v1/leaderboard/?limit=10", {}),
        (machine.name, machine.path, machine.headers),
    ]

    server = subprocess.Popen(
        ["taskset", "-c", "1", str(ROOT / "scripts" / "serve.sh")],
        env={**env, "BIND": f"127.0.0.1:{PORT}", "WEB_CONCURRENCY": "2", "PYTHON": sys.executable,
             "WEB_ACCESS_LOG": "/dev/null"},
        cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the ASGI server did not come up") from None
                time.sleep(0.2)
        for _, path, headers in reads:
            wrk(path, headers)  # warm
        lines = asyncio.run(run(server.pid, tokens, reads))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    header = "Event streams on scripts/serve.sh (2 uvicorn workers on core 1), one asyncio client on core 0"
    write_result("events.md", "\n".join([header, "", *lines]))


if __name__ == "__main__":
    main()
