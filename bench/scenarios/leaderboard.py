"""The leaderboard with 10,000 learners and 100,000 solves.

Each read is measured from the live Redis board (or the `leaderboard:all` snapshot for
the full standings) and, beside it, computed from Postgres alone by the benchmark's own
views (bench/views.py, under `/bench/pg/`, mounted only when BENCH_CEILING is on):
top-10, a 100-row page deep in the board, the full standings and my rank, all with a
token. Targets: top-10 and my-rank >= 70 % of the ceiling; the ceiling is signed out and
skips the rate limiter, so top-10 is also read signed out (LEADERBOARD_PUBLIC on for the
run) to show what the token lookup costs.

The snapshot's TTL is lowered to LEADERBOARD_CACHE_TTL (20 s) for the whole run, and the
full standings are also read for one run longer than it (`full standings, run over
TTL`): its p99 should be no worse than twice the steady p99. After the HTTP runs, the
first request after a solve (a flag submitted through the API) is timed against the
same request with no solve before it.

    BENCH_ONLY=leaderboard make bench
"""

from __future__ import annotations

import datetime
import io
import json
import os
import random
import statistics
import time
import urllib.request

from bench.common import Context, Endpoint

LEARNERS = int(os.environ.get("BENCH_LEADERBOARD_LEARNERS", "10000"))
SOLVES = int(os.environ.get("BENCH_LEADERBOARD_SOLVES", "100000"))
SNAPSHOT_TTL = int(os.environ.get("BENCH_LEADERBOARD_TTL", "20"))
COURSES, LABS_PER_COURSE, FLAGS_PER_LAB = 5, 10, 4
AFTER_SOLVE_ROUNDS = 100

SERVER_ENV = {
    "LEADERBOARD_CACHE_TTL": str(SNAPSHOT_TTL),
    "LEADERBOARD_SNAPSHOT_REFRESH_AHEAD": "3",
    # Lets the signed-out top-10 be measured beside the (signed-out) ceiling.
    "LEADERBOARD_PUBLIC": "1",
}


def generate(*, learners: int = LEARNERS, solves: int = SOLVES, seed: int = 7) -> list[int]:
    """Learners (bulk_create) and their solves (COPY), spread over the last 60 days.

    Every learner solves `solves // learners` distinct flags (the first few one more);
    flags are worth 50 to 500 points, so equal totals, broken by reach time, are common.
    Returns the learners' ids.
    """
    from django.contrib.auth.hashers import make_password
    from django.db import connection
    from django.utils import timezone

    from cyberlab.accounts.models import User
    from labs.models import Course, Flag, Lab

    rng = random.Random(seed)
    flags: list[tuple[int, int, int]] = []  # id, course id, points
    for course_number in range(COURSES):
        course = Course.objects.create(
            slug=f"bench-board-{course_number}", title=f"Board course {course_number}", published=True
        )
        labs = Lab.objects.bulk_create(
            Lab(course=course, title=f"Lab {n}", order=n, published=True) for n in range(LABS_PER_COURSE)
        )
        created = Flag.objects.bulk_create(
            Flag(
                lab=lab,
                prompt=f"Flag {n}",
                points=50 * rng.randint(1, 10),
                value=f"CTF{{board-{lab.pk}-{n}}}",
            )
            for lab in labs
            for n in range(FLAGS_PER_LAB)
        )
        flags.extend((flag.pk, course.pk, flag.points) for flag in created)

    unusable = make_password(None)
    User.objects.bulk_create(
        (
            User(
                username=f"board-{n}",
                email=f"board-{n}@example.com",
                password=unusable,  # these learners never sign in
                display_name=f"Learner {n}" if n % 3 else "",
            )
            for n in range(learners)
        ),
        batch_size=2000,
    )
    user_ids = list(
        User.objects.filter(username__startswith="board-").order_by("id").values_list("id", flat=True)
    )

    now = timezone.now()
    rows = io.StringIO()
    per_learner, extra = divmod(solves, learners)
    for index, user_id in enumerate(user_ids):
        for flag_id, course_id, points in rng.sample(flags, per_learner + (1 if index < extra else 0)):
            created_at = now - datetime.timedelta(seconds=rng.uniform(0, 60 * 24 * 3600))
            rows.write(f"{user_id}\t{course_id}\t{flag_id}\t{points}\t{created_at.isoformat()}\n")
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            "COPY labs_solve (user_id, course_id, flag_id, points, created_at) FROM STDIN"
        ) as copy:
            copy.write(rows.getvalue())
        cursor.execute("ANALYZE labs_solve")
        cursor.execute("ANALYZE accounts_user")
    return user_ids


def setup(ctx: Context) -> list[Endpoint]:
    from rest_framework.authtoken.models import Token

    from cyberlab.accounts.models import User
    from leaderboard import services

    started = time.perf_counter()
    user_ids = generate()
    generated = time.perf_counter() - started
    started = time.perf_counter()
    result = services.leaderboard_rebuild()
    rebuilt = time.perf_counter() - started
    ctx.notes.append(
        f"leaderboard: {len(user_ids):,} learners and {SOLVES:,} solves generated in {generated:.1f} s; "
        f"`rebuild_leaderboard` of {result.solves:,} solves ({result.learners:,} learners on the board, "
        f"{result.courses} course boards) took {rebuilt:.2f} s. Snapshot TTL {SNAPSHOT_TTL} s for the run."
    )

    # "me": a learner in the middle of the board
    me = User.objects.get(pk=user_ids[len(user_ids) // 2])
    token, _ = Token.objects.get_or_create(user=me)
    auth = ctx.auth(token.key)
    ctx.data["leaderboard"] = {"token": token.key}

    board = "/api/v1/leaderboard/"
    postgres_board = "/bench/pg/leaderboard/"
    pairs = [
        ("top-10", "?limit=10"),
        ("page of 100", "?limit=100&offset=5000"),
        ("full standings", ""),
        ("my rank", "me/"),
    ]
    endpoints = []
    for name, tail in pairs:
        postgres = f"leaderboard {name} (Postgres only)"
        endpoints.append(
            Endpoint(name=f"leaderboard {name}", path=f"{board}{tail}", headers=auth, compare_to=postgres)
        )
        # Two connections: each of these requests takes long enough that sixteen would
        # leave a backlog in the two workers that spills into the next endpoint's run.
        endpoints.append(Endpoint(name=postgres, path=f"{postgres_board}{tail}", headers=auth, connections=2))
    endpoints.append(
        Endpoint(
            name="leaderboard top-10, signed out",
            path=f"{board}?limit=10",
            compare_to="leaderboard top-10",
        )
    )
    endpoints.append(
        Endpoint(
            name="leaderboard full standings, run over TTL",
            path=board,
            headers=auth,
            duration=3 * SNAPSHOT_TTL,
            compare_to="leaderboard full standings",
        )
    )
    return endpoints


def _timed_get(base_url: str, path: str, token: str) -> tuple[float, dict]:
    request = urllib.request.Request(f"{base_url}{path}", headers={"Authorization": f"Token {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, json.loads(body)


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.2f} / {p99:.2f} / {ordered[-1]:.2f}"


def _submit(base_url: str, flag, token: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/api/v1/labs/{flag.lab_id}/flags/{flag.pk}/submit/",
        data=json.dumps({"flag": flag.value}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def after_http(ctx: Context, env: dict) -> None:
    """The first read after a solve, against the same read with no solve before it.

    Each round reads top-10, my rank and the full standings, submits a correct flag
    through the API, and reads them again at once; the solver's points must already
    show in that first read.
    """
    from rest_framework.authtoken.models import Token

    from cyberlab.accounts.models import User
    from labs.models import Course, Flag, Lab

    course = Course.objects.get(slug="bench-board-0")
    lab = Lab.objects.create(course=course, title="After", published=True)
    flags = Flag.objects.bulk_create(
        Flag(lab=lab, prompt=f"After {n}", points=10, value=f"CTF{{after-{n}}}")
        for n in range(AFTER_SOLVE_ROUNDS)
    )
    solver = User.objects.create_user(username="board-after-solver", email="after@example.com")
    token = Token.objects.create(user=solver).key
    reads = {
        "top-10": "/api/v1/leaderboard/?limit=10",
        "my rank": "/api/v1/leaderboard/me/",
        "full standings": "/api/v1/leaderboard/",
    }
    steady: dict[str, list[float]] = {name: [] for name in reads}
    after: dict[str, list[float]] = {name: [] for name in reads}
    missed = 0
    for round_number, flag in enumerate(flags, start=1):
        for name, path in reads.items():
            steady[name].append(_timed_get(ctx.base_url, path, token)[0])
        if not _submit(ctx.base_url, flag, token)["correct"]:
            raise SystemExit(f"leaderboard: flag {flag.pk} was not accepted")
        for name, path in reads.items():
            elapsed, body = _timed_get(ctx.base_url, path, token)
            after[name].append(elapsed)
            if name == "my rank" and body["points"] != 10 * round_number:
                missed += 1
    rows = [
        "| read (one client, sequential) | no solve before it: p50 / p99 / max ms "
        "| first after a solve: p50 / p99 / max ms |",
        "|---|---:|---:|",
    ]
    rows += [f"| {name} | {_summary(steady[name])} | {_summary(after[name])} |" for name in reads]
    ctx.notes.append(
        f"leaderboard, first request after a solve ({AFTER_SOLVE_ROUNDS} rounds; in {missed} of them "
        "my rank did not yet show the solve):\n\n" + "\n".join(rows)
    )
