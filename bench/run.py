"""HTTP benchmark of the real stack: the web server (2 workers) on Postgres and Redis, driven by wrk.

    make bench                      # everything
    BENCH_ONLY=labs make bench      # scenario modules whose name contains "labs"
    BENCH_COMPARE=REV make bench    # also serve commit REV (a temporary worktree) beside
                                    # this tree, on the same data, measured in the same rounds

With BENCH_COMPARE, each entry of BENCH_COMPARE_VARIANTS (`name=VAR=value,VAR=value;...`,
default `before=`) is one more server of REV with those variables. Two are the harness's
own: `REV=...` serves another commit (`HEAD` for this tree's commit), `PYTHON=...` runs it
with another interpreter (a virtualenv without hiredis, say; default BENCH_COMPARE_PYTHON),
`SERVER=asgi` serves it as scripts/serve.sh does (default: WSGI, as commits before the
ASGI edge were served). This tree is served as scripts/serve.sh serves it.
An endpoint a server does not answer is left out for that server.

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
COMPARE = os.environ.get("BENCH_COMPARE", "")
COMPARE_VARIANTS = os.environ.get("BENCH_COMPARE_VARIANTS", "before=")
COMPARE_PYTHON = os.environ.get("BENCH_COMPARE_PYTHON", sys.executable)
RESULTS = ROOT / "bench" / "results"
THIS = "this tree"


@dataclass
class Server:
    """One benchmarked gunicorn: this tree, or a variant of the commit compared with."""

    name: str
    root: Path
    python: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    interface: str = "asgi"
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def compared_servers() -> list[Server]:
    """The servers of BENCH_COMPARE's variants, each commit checked out in a temporary worktree."""
    if not COMPARE:
        return []
    worktrees: dict[str, Path] = {}
    servers = []
    for number, variant in enumerate(filter(None, COMPARE_VARIANTS.split(";")), start=1):
        name, _, assignments = variant.partition("=")
        env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
        rev = env.pop("REV", COMPARE)
        python = env.pop("PYTHON", COMPARE_PYTHON)
        interface = env.pop("SERVER", "wsgi")
        if rev not in worktrees:
            worktrees[rev] = Path(tempfile.mkdtemp(prefix="cyberlab-bench-"))
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(worktrees[rev]), rev], cwd=ROOT, check=True
            )
        servers.append(Server(f"{name} ({rev})", worktrees[rev], python, PORT + number, env, interface))
    return servers


def remove_worktrees(servers: list[Server]) -> None:
    for root in {server.root for server in servers}:
        subprocess.run(["git", "worktree", "remove", "--force", str(root)], cwd=ROOT, check=False)


@dataclass
class Measured:
    endpoint: Endpoint
    server: Server
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


def run_wrk(
    endpoint: Endpoint, script: Path, duration: int, server: Server
) -> tuple[float, float, float, int]:
    command = [
        "taskset", "-c", "0", "wrk", "-t1", f"-c{endpoint.connections or CONNECTIONS}", f"-d{duration}s",
        "--latency", "-s", str(script), f"{server.base_url}{endpoint.path}",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    measured = parse_wrk(output)
    if measured[1] != measured[1]:  # nan: nothing completed
        print(f"{endpoint.name} on {server.name}: no request completed\n{output}", flush=True)
    return measured


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Requests per second, p50 and p99 in ms, and failed requests from wrk's report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    # Anchored to the latency distribution's own lines: the thread summary above it
    # ends in a percentage too ("+/- Stdev 90.99%").
    # A run in which no request completed has no distribution at all.
    p50 = _percentile(output, "50%")
    p99 = _percentile(output, "99%")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(n) for n in socket_errors.groups())
    return rps, p50, p99, failed


def _percentile(output: str, label: str) -> float:
    found = re.search(rf"^\s+{label}\s+(\S+)$", output, re.MULTILINE)
    return _milliseconds(found.group(1)) if found else float("nan")


def start_server(server: Server, env: dict[str, str]) -> None:
    """gunicorn with 2 workers: ASGI (uvicorn workers, as scripts/serve.sh runs it) or,
    for the variable SERVER=wsgi, Django's WSGI handler in sync workers."""
    gunicorn = str(Path(server.python).parent / "gunicorn")
    if server.interface == "asgi":
        app = ["cyberlab.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker"]
    else:
        app = ["cyberlab.wsgi"]
    command = [
        "taskset", "-c", "1", gunicorn, *app,
        "--workers", "2", "--bind", f"127.0.0.1:{server.port}", "--log-level", "warning",
        "--access-logfile", "-" if os.environ.get("BENCH_ACCESS_LOG") else "/dev/null",
    ]  # fmt: skip
    server.process = subprocess.Popen(
        command, env={**env, **server.env}, cwd=server.root, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    server.process.kill()
    raise SystemExit(f"gunicorn of {server.name} did not come up")


def stop_server(server: Server) -> None:
    if server.process is None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)


def settle(server: Server) -> None:
    """Waits until the server has drained what the last run left queued.

    wrk stops sending at its deadline, but requests still in the server's backlog keep
    the workers busy: after an endpoint of slow requests, they would land in the next
    endpoint's first requests and show as its tail latency.
    """
    deadline = time.monotonic() + 10
    quick = 0
    while time.monotonic() < deadline and quick < 2:
        started = time.perf_counter()
        with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=10):
            pass
        quick = quick + 1 if time.perf_counter() - started < 0.02 else 0


def answers(endpoint: Endpoint, server: Server) -> bool:
    """One request before measuring: whether the server answers as expected."""
    data = json.dumps(endpoint.body).encode() if endpoint.body is not None else None
    headers = {"Content-Type": "application/json", **endpoint.headers} if data else dict(endpoint.headers)
    request = urllib.request.Request(
        f"{server.base_url}{endpoint.path}", data=data, headers=headers, method=endpoint.method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status == endpoint.expect_status


def format_table(results: list[Measured], server: Server) -> str:
    by_name = {r.endpoint.name: r for r in results if r.server is server}
    ceiling_rps = by_name["ceiling"].median(by_name["ceiling"].rps)
    signed_in_rps = by_name[SIGNED_IN_CEILING].median(by_name[SIGNED_IN_CEILING].rps)
    rows = [
        "| endpoint | req/s | p50 ms | p99 ms | % of ceiling | % of signed-in ceiling | vs | errors |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for result in by_name.values():
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


def format_comparison(results: list[Measured], servers: list[Server]) -> str:
    """Per endpoint: each server's share of its own ceiling, and this tree against each."""
    shares: dict[str, dict[str, tuple[float, float]]] = {}
    for server in servers:
        mine = {r.endpoint.name: r for r in results if r.server is server}
        ceiling = mine["ceiling"].median(mine["ceiling"].rps)
        for name, result in mine.items():
            rps = result.median(result.rps)
            shares.setdefault(name, {})[server.name] = (rps, 100 * rps / ceiling)
    this, others = servers[0], servers[1:]
    head = ["endpoint", *[f"{s.name}: req/s (% of its ceiling)" for s in servers]]
    head += [f"this / {s.name}" for s in others]
    rows = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, figures in shares.items():
        cells = [name]
        for server in servers:
            rps, share = figures.get(server.name, (float("nan"), float("nan")))
            cells.append(f"{rps:,.0f} ({share:.0f} %)" if server.name in figures else "")
        for server in others:
            if this.name in figures and server.name in figures:
                cells.append(f"{figures[this.name][0] / figures[server.name][0]:.2f}x")
            else:
                cells.append("")
        rows.append("| " + " | ".join(cells) + " |")
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

    servers = [Server(THIS, ROOT, sys.executable, PORT), *compared_servers()]
    results: list[Measured] = []
    try:
        for server in servers:
            start_server(server, env)
        with tempfile.TemporaryDirectory() as directory:
            scripts = {e.name: wrk_script(e, Path(directory)) for e in endpoints}
            for endpoint in endpoints:
                for server in servers:
                    if answers(endpoint, server):
                        run_wrk(endpoint, scripts[endpoint.name], 1, server)  # warm caches and connections
                        results.append(Measured(endpoint, server))
                    elif server.name == THIS:
                        raise SystemExit(
                            f"{endpoint.name}: {endpoint.method} {endpoint.path} is not answered"
                        )
            for run in range(RUNS):
                print(f"run {run + 1}/{RUNS}", flush=True)
                for result in results:
                    endpoint = result.endpoint
                    settle(result.server)
                    rps, p50, p99, errors = run_wrk(
                        endpoint, scripts[endpoint.name], endpoint.duration or DURATION, result.server
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
        for server in servers:
            stop_server(server)
        remove_worktrees(servers[1:])

    header = (
        "web server 2 workers on core 1 (this tree: ASGI, as scripts/serve.sh), "
        f"wrk 1 thread {CONNECTIONS} connections on core 0, median of {RUNS} runs of {DURATION} s, "
        "round-robin"
    )
    report = [header, "", format_table(results, servers[0]), ""]
    if len(servers) > 1:
        report += [
            "Side by side in the same rounds, on the same data:",
            "",
            format_comparison(results, servers),
            "",
        ]
    report += context.notes
    text = "\n".join(report) + "\n"
    print(f"\n{text}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http.md").write_text(text)


if __name__ == "__main__":
    main()
