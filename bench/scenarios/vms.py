"""Lab machine status: the SPA polls it while a machine starts and runs.

* machine status, running: one HGETALL of `vm:state:{user}:{lab}`, the token from the
  credential cache and the rate limit (one Lua call); no database query;
* my machines: the learner's set, then their hashes in one pipeline.

The machine's state is written as the worker would write it; no container is needed
to read it. Start latency and the sweeper are measured by bench/vms_start_bench.py and
bench/vms_sweep_bench.py.
"""

from __future__ import annotations

from bench.common import Context, Endpoint


def setup(ctx: Context) -> list[Endpoint]:
    from datetime import timedelta

    from django.utils import timezone

    from labs.models import Course, Lab, MachineTemplate
    from vms import state
    from vms.models import VMSession, VMStatus

    learner, token = ctx.make_user("bench-vms-learner")
    course, _ = Course.objects.get_or_create(
        slug="bench-vms", defaults={"title": "Bench machines", "published": True}
    )
    lab = Lab.objects.create(course=course, title="Bench machine lab", published=True)
    MachineTemplate.objects.create(
        lab=lab, image="cyberlab/demo:latest", ports=[{"port": 8080, "protocol": "http"}]
    )
    now = timezone.now()
    session = VMSession.objects.create(
        user=learner,
        lab=lab,
        provider="docker",
        instance_id="0" * 64,
        image="cyberlab/demo:latest",
        status=VMStatus.RUNNING,
        connection={
            "host": "127.0.0.1",
            "ports": [
                {"port": 8080, "host_port": 49154, "protocol": "http", "address": "http://127.0.0.1:49154/"}
            ],
        },
        started_at=now,
        expires_at=now + timedelta(hours=2),
        status_changed_at=now,
    )
    state.put(session=session)
    auth = ctx.auth(token)
    return [
        Endpoint(
            name="machine status (running)",
            path=f"/api/v1/labs/{lab.pk}/vm/",
            headers=auth,
            compare_to="ceiling",
        ),
        Endpoint(name="my machines", path="/api/v1/vms/", headers=auth, compare_to="ceiling"),
    ]


def after_http(ctx: Context, env: dict) -> None:
    """Where a status request's time goes: the machine's own work against the token lookup."""
    import time

    from rest_framework.authentication import TokenAuthentication
    from rest_framework.authtoken.models import Token

    from vms import selectors
    from vms.models import VMSession
    from vms.serializers import MachineStateSerializer

    session = VMSession.objects.filter(user__username="bench-vms-learner").first()
    key = Token.objects.get(user_id=session.user_id).key

    def per_call(func, count: int = 2000) -> float:
        func()
        started = time.perf_counter()
        for _ in range(count):
            func()
        return (time.perf_counter() - started) / count * 1_000_000

    own = per_call(
        lambda: (
            MachineStateSerializer(
                selectors.vm_state_for_user(user_id=session.user_id, lab_id=session.lab_id)
            ).data
        )
    )
    token = per_call(lambda: TokenAuthentication().authenticate_credentials(key))
    ctx.notes.append(
        f"vms: a status request's own work (one HGETALL and the view) takes {own:.0f} us in process; "
        f"the token authentication every token-authenticated endpoint pays (one Postgres lookup) takes "
        f"{token:.0f} us, and the ceiling authenticates nobody. Redis round trips per status request: "
        "two -- the rate limiter's and the HGETALL (tests/vms/test_api.py counts them)."
    )
