"""HTTP benchmark of the real stack: gunicorn (2 workers) on Postgres and Redis, driven by wrk.

    make bench                      # everything
    BENCH_ONLY=labs make bench      # scenario modules whose name contains "labs"

wrk is pinned to core 0 and the server to core 1 (taskset), and the endpoints are
measured round-robin (A B C A B C ...), so a noisy minute hits every endpoint alike.
Every figure is the median of BENCH_RUNS runs. The ceiling -- a DRF view returning a
constant small JSON through the same server -- is always measured in the same run, so
each figure is also given as a share of what the framework allows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Context, Endpoint, bench_env  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DURATION = int(os.environ.get("BENCH_DURATION", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
PORT = int(os.environ.get("BENCH_PORT", "8765"))
ONLY = os.environ.get("BENCH_ONLY", "")
SIGNED_IN_CEILING = "ceiling, signed in (token)"
RESULTS = ROOT / "bench" / "results"


@dataclass
class Measured:
    endpoint: Endpoint
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: int = 0

    def median(self, values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")


def load_scenarios() -> list:
    modules = []
    for path in sorted((ROOT / "bench" / "scenarios").glob("*.py")):
        if path.name.startswith("_") or (ONLY and ONLY not in path.stem):
            continue
        spec = importlib.util.spec_from_file_location(f"bench.scenarios.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def prepare_database(env: dict[str, str]) -> None:
    import psycopg

    name = env["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT)


def wrk_script(endpoint: Endpoint, directory: Path) -> Path:
    lines = [f"wrk.method = {json.dumps(endpoint.method)}"]
    if endpoint.body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(endpoint.body))}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    for name, value in endpoint.headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    path = directory / f"{abs(hash(endpoint.name))}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(endpoint: Endpoint, script: Path, duration: int) -> tuple[float, float, float, int]:
    command = [
        "taskset", "-c", "0", "wrk", "-t1", f"-c{endpoint.connections or CONNECTIONS}", f"-d{duration}s",
        "--latency", "-s", str(script), f"http://127.0.0.1:{PORT}{endpoint.path}",
    ]  # fmt: skip
    return parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Requests per second, p50 and p99 in ms, and failed requests from wrk's report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    # Anchored to the latency distribution's own lines: the thread summary above it
    # ends in a percentage too ("+/- Stdev 90.99%").
    p50 = _milliseconds(re.search(r"^\s+50%\s+(\S+)$", output, re.MULTILINE).group(1))
    p99 = _milliseconds(re.search(r"^\s+99%\s+(\S+)$", output, re.MULTILINE).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(n) for n in socket_errors.groups())
    return rps, p50, p99, failed


def start_server(env: dict[str, str]) -> subprocess.Popen:
    command = [
        "taskset", "-c", "1", str(Path(sys.executable).parent / "gunicorn"), "cyberlab.wsgi",
        "--workers", "2", "--bind", f"127.0.0.1:{PORT}", "--log-level", "warning",
        "--access-logfile", "-" if os.environ.get("BENCH_ACCESS_LOG") else "/dev/null",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not come up")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def settle() -> None:
    """Waits until the server has drained what the last run left queued.

    wrk stops sending at its deadline, but requests still in the server's backlog keep
    the workers busy: after an endpoint of slow requests, they would land in the next
    endpoint's first requests and show as its tail latency.
    """
    deadline = time.monotonic() + 10
    quick = 0
    while time.monotonic() < deadline and quick < 2:
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=10):
            pass
        quick = quick + 1 if time.perf_counter() - started < 0.02 else 0


def check(endpoint: Endpoint) -> None:
    """One request before measuring, so a broken endpoint fails loudly instead of being timed."""
    data = json.dumps(endpoint.body).encode() if endpoint.body is not None else None
    headers = {"Content-Type": "application/json", **endpoint.headers} if data else dict(endpoint.headers)
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{endpoint.path}", data=data, headers=headers, method=endpoint.method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    if status != endpoint.expect_status:
        raise SystemExit(f"{endpoint.name}: {endpoint.method} {endpoint.path} answered {status}")


def format_table(results: list[Measured]) -> str:
    by_name = {r.endpoint.name: r for r in results}
    ceiling_rps = by_name["ceiling"].median(by_name["ceiling"].rps)
    signed_in_rps = by_name[SIGNED_IN_CEILING].median(by_name[SIGNED_IN_CEILING].rps)
    rows = [
        "| endpoint | req/s | p50 ms | p99 ms | % of ceiling | % of signed-in ceiling | vs | errors |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for result in results:
        rps = result.median(result.rps)
        signed_in = f"{100 * rps / signed_in_rps:.0f} %" if "Authorization" in result.endpoint.headers else ""
        versus = ""
        if result.endpoint.compare_to and result.endpoint.compare_to in by_name:
            other = by_name[result.endpoint.compare_to]
            versus = f"{rps / other.median(other.rps):.2f}x {result.endpoint.compare_to}"
        rows.append(
            f"| {result.endpoint.name} | {rps:,.0f} | {result.median(result.p50):.2f} | "
            f"{result.median(result.p99):.2f} | {100 * rps / ceiling_rps:.0f} % | {signed_in} | {versus} "
            f"| {result.errors} |"
        )
    return "\n".join(rows)


def main() -> None:
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (apt-get install wrk util-linux)")
    env = bench_env()
    scenarios = load_scenarios()
    for module in scenarios:
        env.update(getattr(module, "SERVER_ENV", {}))
    os.environ.update(env)
    prepare_database(env)

    import django

    django.setup()
    from django_redis import get_redis_connection

    get_redis_connection("default").flushdb()
    context = Context(base_url=f"http://127.0.0.1:{PORT}")
    _, token = context.make_user("bench-ceiling")
    endpoints = [
        Endpoint(name="ceiling", path="/bench/ceiling/"),
        Endpoint(name=SIGNED_IN_CEILING, path="/bench/ceiling/signed-in/", headers=context.auth(token)),
    ]
    for module in scenarios:
        endpoints.extend(module.setup(context))

    server = start_server(env)
    results = [Measured(endpoint) for endpoint in endpoints]
    try:
        with tempfile.TemporaryDirectory() as directory:
            scripts = {e.name: wrk_script(e, Path(directory)) for e in endpoints}
            for endpoint in endpoints:
                check(endpoint)
                run_wrk(endpoint, scripts[endpoint.name], 1)  # warm caches and connections
            for run in range(RUNS):
                print(f"run {run + 1}/{RUNS}", flush=True)
                for result in results:
                    endpoint = result.endpoint
                    settle()
                    rps, p50, p99, errors = run_wrk(
                        endpoint, scripts[endpoint.name], endpoint.duration or DURATION
                    )
                    result.rps.append(rps)
                    result.p50.append(p50)
                    result.p99.append(p99)
                    result.errors += errors
            for module in scenarios:
                after = getattr(module, "after_http", None)
                if after:
                    after(context, env)
    finally:
        stop_server(server)

    table = format_table(results)
    header = (
        f"gunicorn 2 workers on core 1, wrk 1 thread {CONNECTIONS} connections on core 0, "
        f"median of {RUNS} runs of {DURATION} s, round-robin"
    )
    print(f"\n{header}\n\n{table}\n")
    for note in context.notes:
        print(note)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http.md").write_text(f"{header}\n\n{table}\n\n" + "\n".join(context.notes) + "\n")


if __name__ == "__main__":
    main()
