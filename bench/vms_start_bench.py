"""Start-to-running latency of a lab machine, beside a bare `docker run` of the same image.

The platform's figure is what a learner waits for: the start service (Redis claim,
ledger row, task published), a real Celery worker picking the task up, the provider
creating the machine's own network and its container, and the state turning `running`
in Redis, where the status endpoint reads it. Each figure is the median of
BENCH_VM_STARTS (20) starts, measured alternately with `docker run -d` of the same
image in the same run. Target: at most 1.3 times the bare `docker run`.

A third reference, `docker run` on an isolated bridge network created beforehand (the
options the provider gives each machine's network, as its warm pool does), shows what
the isolation itself costs the engine at start, apart from anything the platform does.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid

from vms_common import PLATFORM, ROOT, remove_machines, setup_django, write_result

STARTS = int(os.environ.get("BENCH_VM_STARTS", "20"))
# Each start begins on an idle engine: removals finish some work in the background.
SETTLE = float(os.environ.get("BENCH_VM_SETTLE", "0.5"))


def main() -> None:
    env = setup_django()
    subprocess.run([str(ROOT / "scripts" / "demo-image.sh")], check=True)
    from django.conf import settings
    from django_redis import get_redis_connection

    import docker
    from cyberlab.celery import app
    from labs.models import Course, Lab, MachineTemplate
    from vms import services, state
    from vms.models import VMSession
    from vms.providers import MachineSpec, PortSpec, get_provider

    image = settings.VM_DEMO_IMAGE
    client = docker.from_env()
    remove_machines(client)
    get_redis_connection("default").flushdb()
    get_redis_connection("default").from_url(settings.CELERY_BROKER_URL).flushdb()

    from cyberlab.accounts.models import User

    user, _ = User.objects.get_or_create(username="bench-vms-starter")
    course, _ = Course.objects.get_or_create(
        slug="bench-vms-start", defaults={"title": "Bench", "published": True}
    )
    lab = Lab.objects.create(course=course, title="Start latency", published=True)
    MachineTemplate.objects.create(
        lab=lab, image=image, ports=[{"port": 8080, "protocol": "http"}], memory_mb=64, cpus="0.5"
    )
    lab = Lab.objects.select_related("machine").get(pk=lab.pk)
    VMSession.objects.filter(user=user).delete()

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "cyberlab",
            "worker",
            "--pool=solo",
            "--loglevel=" + os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING"),
        ],
        env=env,
        cwd=ROOT,
    )
    platform, provider_only, bare, bare_isolated = [], [], [], []
    try:
        _wait_for_worker(app)
        provider = get_provider()
        for _ in range(STARTS):
            time.sleep(SETTLE)
            platform.append(_platform_start(services, state, VMSession, user, lab))
            time.sleep(SETTLE)
            provider_only.append(_provider_start(provider, MachineSpec, PortSpec, image, user, lab))
            time.sleep(SETTLE)
            bare.append(_docker_run(image))
            time.sleep(SETTLE)
            bare_isolated.append(_docker_run_isolated(client, image))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        remove_machines(client)

    med_platform, med_provider, med_bare = (
        statistics.median(v) * 1000 for v in (platform, provider_only, bare)
    )
    lines = [
        f"Lab machine start-to-running, median of {STARTS} (ms), measured alternately in one run",
        "",
        "| what | median ms | p90 ms | x docker run |",
        "|---|---:|---:|---:|",
    ]
    for name, values, median in (
        ("platform: API service -> Celery -> network + container -> Redis `running`", platform, med_platform),
        ("provider.start alone (own network + container)", provider_only, med_provider),
        ("bare `docker run -d -p 127.0.0.1::8080` (CLI)", bare, med_bare),
        (
            "reference: the same `docker run` on an isolated network made beforehand",
            bare_isolated,
            statistics.median(bare_isolated) * 1000,
        ),
    ):
        p90 = sorted(values)[int(len(values) * 0.9) - 1] * 1000
        lines.append(f"| {name} | {median:.0f} | {p90:.0f} | {median / med_bare:.2f} |")
    lines.append("")
    lines.append(f"Target: platform <= 1.3 x docker run; measured {med_platform / med_bare:.2f} x.")
    isolated = statistics.median(bare_isolated) * 1000
    lines.append(
        f"Against `docker run` on an isolated network (what isolation alone costs the engine): "
        f"{med_platform / isolated:.2f} x."
    )
    write_result("vms_start.md", "\n".join(lines))


def _wait_for_worker(app) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise SystemExit("the Celery worker did not answer")


def _platform_start(services, state, VMSession, user, lab) -> float:
    started = time.perf_counter()
    result = services.vm_start(user=user, lab=lab)
    while True:
        status = state.get(user_id=user.pk, lab_id=lab.pk).get("status")
        if status == "running":
            break
        if status == "failed":
            raise SystemExit(f"start failed: {state.get(user_id=user.pk, lab_id=lab.pk).get('reason')}")
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    services.vm_stop(user=user, lab_id=lab.pk)
    session_id = result.state.session_id
    deadline = time.monotonic() + 60
    while VMSession.objects.filter(pk=session_id, stopped_at__isnull=True).exists():
        if time.monotonic() > deadline:
            row = VMSession.objects.filter(pk=session_id).values("status", "stop_reason", "failure").first()
            raise SystemExit(f"teardown of {session_id} did not finish: {row}")
        time.sleep(0.05)
    return elapsed


def _provider_start(provider, MachineSpec, PortSpec, image, user, lab) -> float:
    spec = MachineSpec(
        session_id=str(uuid.uuid4()),
        user_id=user.pk,
        lab_id=lab.pk,
        image=image,
        ports=(PortSpec(8080, "http"),),
        memory_mb=64,
        cpus=0.5,
        environment={"FLAG": "CTF{bench}"},
        capabilities=(),
    )
    started = time.perf_counter()
    provider.start(spec)
    elapsed = time.perf_counter() - started
    provider.stop(session_id=spec.session_id)
    return elapsed


def _docker_run_isolated(client, image: str) -> float:
    from vms.providers.docker import LABEL_PLATFORM, NETWORK_OPTIONS

    network = client.networks.create(
        f"{PLATFORM}-bare-net-{uuid.uuid4().hex[:8]}",
        driver="bridge",
        options=NETWORK_OPTIONS,
        labels={LABEL_PLATFORM: PLATFORM},
    )
    try:
        return _docker_run(image, "--network", network.name)
    finally:
        network.remove()


def _docker_run(image: str, *options: str) -> float:
    name = f"{PLATFORM}-bare-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            *options,
            "--name",
            name,
            "-p",
            "127.0.0.1::8080",
            "-e",
            "FLAG=CTF{bench}",
            "-m",
            "64m",
            image,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    subprocess.run(["docker", "rm", "-f", name], check=True, stdout=subprocess.DEVNULL)
    return elapsed


if __name__ == "__main__":
    main()
