"""The catalogue and flag submissions.

* course list, cached: the shared `courses:list` entry, signed out (no query at all) and
  with a token (the token lookup only); target >= 70 % of the ceiling;
* course detail, signed in: the cached `course:{slug}` entry with my progress merged in
  (three small queries), for a course of 12 labs of 3 flags and a quiz;
* wrong flags: one with unlimited attempts, one whose limit is counted from Postgres;
  the second's count reads the partial index of wrong answers (the plan is noted).
"""

from __future__ import annotations

from bench.common import Context, Endpoint

LABS = 12
FLAGS_PER_LAB = 3
COURSES = 6


def setup(ctx: Context) -> list[Endpoint]:
    from labs.models import Course, Flag, Lab, Question, Quiz, Solve

    learner, token = ctx.make_user("bench-labs-learner")
    for number in range(COURSES):
        Course.objects.get_or_create(
            slug=f"bench-course-{number}",
            defaults={
                "title": f"Bench course {number}",
                "summary": "A course for the benchmark.",
                "description": "# Bench\n\nSome *Markdown* with `code`.",
                "tags": ["bench", "web"],
                "order": number,
                "published": True,
            },
        )
    course = Course.objects.get(slug="bench-course-0")
    flags = []
    for lab_number in range(LABS):
        lab = Lab.objects.create(course=course, title=f"Lab {lab_number}", order=lab_number, published=True)
        for flag_number in range(FLAGS_PER_LAB):
            flags.append(
                Flag.objects.create(
                    lab=lab, prompt=f"Flag {flag_number}", value=f"CTF{{bench-{lab_number}-{flag_number}}}"
                )
            )
    quiz = Quiz.objects.create(course=course, title="Bench quiz", published=True)
    for number in range(5):
        Question.objects.create(quiz=quiz, text=f"Question {number}?", kind="text", answer="yes")
    for flag in flags[:5]:
        Solve.objects.create(user=learner, flag=flag, course=course, points=flag.points)

    unlimited = flags[-1]
    limited = flags[-2]
    limited.max_attempts = 1_000_000_000
    limited.save()
    ctx.data["labs"] = {"learner_id": learner.pk, "limited_flag_id": limited.pk}
    auth = ctx.auth(token)
    return [
        Endpoint(name="course list (cached, signed out)", path="/api/v1/courses/"),
        Endpoint(
            name="course list (cached, token)",
            path="/api/v1/courses/",
            headers=auth,
            compare_to="course list (cached, signed out)",
        ),
        Endpoint(
            name="course detail (token, my progress)",
            path=f"/api/v1/courses/{course.slug}/",
            headers=auth,
        ),
        Endpoint(
            name="wrong flag (unlimited)",
            path=f"/api/v1/labs/{unlimited.lab_id}/flags/{unlimited.pk}/submit/",
            method="POST",
            headers=auth,
            body={"flag": "CTF{not-the-flag}"},
        ),
        Endpoint(
            name="wrong flag (attempt limit)",
            path=f"/api/v1/labs/{limited.lab_id}/flags/{limited.pk}/submit/",
            method="POST",
            headers=auth,
            body={"flag": "CTF{not-the-flag}"},
            compare_to="wrong flag (unlimited)",
        ),
    ]


def after_http(ctx: Context, env: dict) -> None:
    from django.db import connection

    from labs.models import Submission, Verdict

    data = ctx.data["labs"]
    wrong = Submission.objects.filter(
        user_id=data["learner_id"], flag_id=data["limited_flag_id"], verdict=Verdict.INCORRECT
    ).order_by()
    total = Submission.objects.count()
    sql, params = wrong[:1_000_000_000].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labs_submission")
        cursor.execute(f"EXPLAIN SELECT COUNT(*) FROM ({sql}) AS wrong", params)  # noqa: S608 - ORM-built
        plan = [row[0].strip() for row in cursor.fetchall()]
    scans = [line for line in plan if "Scan" in line]
    ctx.notes.append(
        f"labs: {total:,} submissions recorded during the run; the attempt-limit count "
        f"({wrong.count():,} wrong answers of one learner on one flag) is planned as: "
        + " / ".join(scans or plan)
    )
