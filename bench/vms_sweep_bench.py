"""The sweeper's cost grows with the machines that are due, not with all live machines.

One sweep is timed with 10 machines due among 10 live, then with the same 10 due among
10,000 live (median of BENCH_SWEEPS sweeps each, the due machines put back between
sweeps). A sweep reads `vm:expiry` and the ledger's partial index by expiry as ranges,
marks the due rows stopping and queues their teardowns; no worker runs here, so the
teardowns wait in the queue and no container is involved.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta

from vms_common import setup_django, write_result

SWEEPS = int(os.environ.get("BENCH_SWEEPS", "7"))
DUE = 10
LIVE = int(os.environ.get("BENCH_SWEEP_LIVE", "10000"))
USERS = 100


def main() -> None:
    setup_django({"VM_MAX_TOTAL": str(LIVE * 2)})
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone
    from django_redis import get_redis_connection

    from cyberlab.accounts.models import User
    from labs.models import Course, Lab
    from vms import maintenance, state
    from vms.models import VMSession, VMStatus

    redis = get_redis_connection("default")
    broker = redis.from_url(settings.CELERY_BROKER_URL)
    VMSession.objects.all().delete()
    redis.flushdb()
    broker.flushdb()
    users = [User.objects.get_or_create(username=f"bench-sweep-{n}")[0] for n in range(USERS)]
    course, _ = Course.objects.get_or_create(
        slug="bench-sweep", defaults={"title": "Bench", "published": True}
    )
    labs = list(Lab.objects.filter(course=course))
    labs += Lab.objects.bulk_create(
        [Lab(course=course, title=f"Sweep {n}") for n in range(len(labs), LIVE // USERS + 1)]
    )
    now = timezone.now()

    def add_live(count: int) -> list[VMSession]:
        existing = VMSession.objects.count()
        rows = []
        for index in range(existing, existing + count):
            rows.append(
                VMSession(
                    user=users[index % USERS],
                    lab=labs[index // USERS],
                    provider="docker",
                    image="cyberlab/demo:latest",
                    instance_id=f"{index:064d}",
                    status=VMStatus.RUNNING,
                    started_at=now,
                    expires_at=now + timedelta(hours=2),
                    status_changed_at=now,
                )
            )
        created = VMSession.objects.bulk_create(rows, batch_size=2000)
        for start in range(0, len(created), 1000):
            state.put_many(sessions=created[start : start + 1000])
        return created

    def make_due(rows: list[VMSession]) -> None:
        past = timezone.now() - timedelta(seconds=1)
        VMSession.objects.filter(pk__in=[row.pk for row in rows]).update(
            status=VMStatus.RUNNING, stop_reason="", expires_at=past, status_changed_at=now
        )
        fresh = list(VMSession.objects.filter(pk__in=[row.pk for row in rows]))
        # Dropped first, so the reset state is written whatever version Redis held.
        state.drop_many(entries=[(str(r.pk), r.user_id, r.lab_id) for r in fresh], closed=False)
        state.put_many(sessions=fresh)

    def sweep_times(due: list[VMSession]) -> list[float]:
        times = []
        for _ in range(SWEEPS):
            make_due(due)
            started = time.perf_counter()
            report = maintenance.vm_sweep(use_lock=False)
            times.append(time.perf_counter() - started)
            assert len(report.expired) == DUE, report
        return times

    due = add_live(DUE)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE vms_vmsession")
    small = sweep_times(due)
    add_live(LIVE - DUE)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE vms_vmsession")
    large = sweep_times(due)
    plan = _plan(connection, VMSession, VMStatus, timezone.now())

    live = VMSession.objects.filter(stopped_at__isnull=True).count()
    queued = broker.llen("celery")
    VMSession.objects.all().delete()
    redis.flushdb()
    broker.flushdb()
    small_ms, large_ms = statistics.median(small) * 1000, statistics.median(large) * 1000
    lines = [
        f"Sweeper: one pass, median of {SWEEPS} (ms)",
        "",
        "| machines due | live machines | sweep ms |",
        "|---:|---:|---:|",
        f"| {DUE} | {DUE} | {small_ms:.1f} |",
        f"| {DUE} | {live:,} | {large_ms:.1f} |",
        "",
        f"Ratio {large_ms / small_ms:.2f} for {live / DUE:,.0f} times the live machines "
        f"({queued} teardowns queued in all). Ledger pass planned as: {plan}",
    ]
    write_result("vms_sweep.md", "\n".join(lines))


def _plan(connection, VMSession, VMStatus, now) -> str:
    query = VMSession.objects.filter(
        stopped_at__isnull=True, status__in=[VMStatus.PROVISIONING, VMStatus.RUNNING], expires_at__lte=now
    ).order_by("expires_at")[:500]
    sql, params = query.values_list("pk", flat=True).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        lines = [row[0].strip() for row in cursor.fetchall()]
    return " / ".join(line for line in lines if "Scan" in line or "Index" in line) or " / ".join(lines)


if __name__ == "__main__":
    main()
