"""What the standalone machine benchmarks share: the bench stack's database and Django."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_env  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PLATFORM = "cyberlab-bench"


def setup_django(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The bench environment (its own database, migrated; its own Redis databases)."""
    env = bench_env()
    env.update({"VM_PLATFORM_NAME": PLATFORM})
    env.update(extra or {})
    os.environ.update(env)
    _ensure_database(env)
    import django

    django.setup()
    return env


def _ensure_database(env: dict[str, str]) -> None:
    import psycopg

    name = env["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], env=env, check=True, cwd=ROOT
    )


def write_result(name: str, text: str) -> None:
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(text + "\n")


def remove_machines(client) -> None:
    """Removes every container and network the benchmarks' platform label marks."""
    import contextlib

    import docker

    label = {"label": [f"cyberlab.platform={PLATFORM}"]}
    for container in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
