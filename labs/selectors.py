"""Reads of the catalogue and of learners' progress.

The catalogue has a shared part (published content, the same for every learner, cached
in Redis) and a personal part (my solves, my attempts) merged in per request and never
stored in a shared entry. A shared entry is stored as its entry serializer
(labs.serializers) rendered it, so a cached read does no serializer work; the functions
here that fill an entry are the only ones that render one. Staff see unpublished content
and always read Postgres, so a preview neither reads nor fills the shared entries.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AnonymousUser
from django.db.models import Count, Max, Prefetch, Q, Sum, prefetch_related_objects
from django.utils import timezone
from rest_framework.exceptions import NotFound

from cyberlab.accounts.models import User
from cyberlab.text import render_markdown
from labs import cache
from labs.models import (
    Course,
    Enrollment,
    Flag,
    Lab,
    Question,
    Quiz,
    QuizAttempt,
    Solve,
    Submission,
    Verdict,
)
from labs.serializers import (
    CourseEntrySerializer,
    CourseListItemSerializer,
    LabEntrySerializer,
    QuizEntrySerializer,
)


def is_preview(user: User | AnonymousUser) -> bool:
    """Staff see drafts and bypass the shared cache."""
    return bool(user.is_authenticated and user.is_staff)


def _learner(user: User | AnonymousUser) -> User | None:
    return user if user.is_authenticated else None


# --- shared parts (what a cache entry holds) --------------------------------------
#
# Each builder reads the rows of one entry and attaches what is computed rather than
# stored (counts, points, rendered Markdown); the entry serializer renders the result.


def _visible_courses(preview: bool):
    return Course.objects.all() if preview else Course.objects.filter(published=True)


def _count_by(queryset, field: str) -> dict[int, int]:
    """Rows per value of `field`, in one grouped query."""
    return dict(
        queryset.order_by().values_list(field).annotate(count=Count("id")).values_list(field, "count")
    )


def _totals_by(queryset, field: str) -> dict[int, dict]:
    """{"count", "points"} of the flags or questions per value of `field`, in one grouped query."""
    return {
        row[field]: row
        for row in queryset.order_by().values(field).annotate(count=Count("id"), points=Sum("points"))
    }


_NO_ROWS = {"count": 0, "points": 0}


def _course_list_build(*, preview: bool) -> list[dict]:
    courses = list(_visible_courses(preview).order_by("order", "id"))
    ids = [course.pk for course in courses]
    published = Q() if preview else Q(published=True)
    labs = _count_by(Lab.objects.filter(published, course_id__in=ids), "course_id")
    flag_filter = Q(lab__course_id__in=ids) & (Q() if preview else Q(lab__published=True))
    flags = _totals_by(Flag.objects.filter(flag_filter), "lab__course_id")
    quizzes = _count_by(Quiz.objects.filter(published, course_id__in=ids), "course_id")
    question_filter = Q(quiz__course_id__in=ids) & (Q() if preview else Q(quiz__published=True))
    questions = _totals_by(Question.objects.filter(question_filter), "quiz__course_id")
    for course in courses:
        flag_row = flags.get(course.pk, _NO_ROWS)
        question_row = questions.get(course.pk, _NO_ROWS)
        course.lab_count = labs.get(course.pk, 0)
        course.quiz_count = quizzes.get(course.pk, 0)
        course.flag_count = flag_row["count"]
        course.question_count = question_row["count"]
        course.total_points = (flag_row["points"] or 0) + (question_row["points"] or 0)
    return CourseListItemSerializer(courses, many=True).data


def _course_get(*, slug: str, preview: bool) -> Course:
    course = _visible_courses(preview).filter(slug=slug).first()
    if course is None:
        raise NotFound("No such course.")
    return course


def _course_detail_build(*, slug: str, preview: bool) -> dict:
    course = _course_get(slug=slug, preview=preview)
    visible = Q() if preview else Q(published=True)
    labs = list(course.labs.filter(visible).select_related("machine").order_by("order", "id"))
    flag_totals = _totals_by(Flag.objects.filter(lab__in=labs), "lab_id")
    quizzes = list(course.quizzes.filter(visible).order_by("order", "id"))
    question_totals = _totals_by(Question.objects.filter(quiz__in=quizzes), "quiz_id")
    for lab in labs:
        lab.has_machine = _has_machine(lab)
        lab.flag_count = flag_totals.get(lab.pk, _NO_ROWS)["count"]
        lab.points = flag_totals.get(lab.pk, _NO_ROWS)["points"] or 0
    for quiz in quizzes:
        quiz.question_count = question_totals.get(quiz.pk, _NO_ROWS)["count"]
        quiz.points = question_totals.get(quiz.pk, _NO_ROWS)["points"] or 0
    course.visible_labs = labs
    course.visible_quizzes = quizzes
    course.description_html = render_markdown(course.description)
    course.total_points = sum(item.points for item in labs + quizzes)
    return CourseEntrySerializer(course).data


def _has_machine(lab: Lab) -> bool:
    try:
        return lab.machine is not None
    except Lab.machine.RelatedObjectDoesNotExist:
        return False


def _lab_detail_build(*, lab_id: int, preview: bool) -> dict:
    queryset = Lab.objects.select_related("course", "machine").prefetch_related(
        Prefetch("flags", queryset=Flag.objects.order_by("order", "id"))
    )
    if not preview:
        queryset = queryset.filter(published=True, course__published=True)
    lab = queryset.filter(pk=lab_id).first()
    if lab is None:
        raise NotFound("No such lab.")
    lab.description_html = render_markdown(lab.description)
    lab.total_points = sum(flag.points for flag in lab.flags.all())
    return LabEntrySerializer(lab).data


def _quiz_get(*, quiz_id: int, preview: bool) -> Quiz:
    queryset = Quiz.objects.select_related("course")
    if not preview:
        queryset = queryset.filter(published=True, course__published=True)
    quiz = queryset.filter(pk=quiz_id).first()
    if quiz is None:
        raise NotFound("No such quiz.")
    return quiz


def _quiz_detail_build(*, quiz_id: int, preview: bool) -> dict:
    quiz = _quiz_get(quiz_id=quiz_id, preview=preview)
    questions = Question.objects.order_by("order", "id").prefetch_related("choices")
    prefetch_related_objects([quiz], Prefetch("questions", queryset=questions))
    quiz.total_points = sum(question.points for question in quiz.questions.all())
    return QuizEntrySerializer(quiz).data


def _shared(user: User | AnonymousUser, key: str, build) -> dict | list:
    preview = is_preview(user)
    if preview:
        return build(preview=True)
    return cache.catalogue_cached(key, lambda: build(preview=False))


# --- the public selectors -------------------------------------------------------------


@dataclass(frozen=True)
class CourseDetail:
    """A course as one learner sees it: the shared entry, and my progress when signed in.

    `labs` and `quizzes` are the entry's, each with my `progress` added; None signed out.
    """

    entry: dict
    labs: list[dict] | None = None
    quizzes: list[dict] | None = None
    progress: dict | None = None


@dataclass(frozen=True)
class LabDetail:
    """A lab's shared entry, its flags with `solved` and `attempts_left` (mine), my progress."""

    entry: dict
    flags: list[dict]
    progress: dict


@dataclass(frozen=True)
class QuizDetail:
    """A quiz's shared entry, its questions in my order with `solved`, my attempts so far."""

    entry: dict
    questions: list[dict]
    progress: dict


def course_list(*, user: User | AnonymousUser) -> list[dict]:
    """Visible courses, rendered: from the shared `courses:list` entry, zero queries when cached."""
    return _shared(user, cache.courses_list_key(), _course_list_build)


def course_detail(*, user: User | AnonymousUser, slug: str) -> CourseDetail:
    """A course with its labs and quizzes, and my progress in each when signed in."""
    entry = _shared(
        user, cache.course_key(slug=slug), lambda preview: _course_detail_build(slug=slug, preview=preview)
    )
    learner = _learner(user)
    if learner is None:
        return CourseDetail(entry=entry)
    lab_ids = {lab["id"] for lab in entry["labs"]}
    quiz_ids = {quiz["id"] for quiz in entry["quizzes"]}
    solved_by_lab: dict[int, list[int]] = defaultdict(list)
    solved_by_quiz: dict[int, list[int]] = defaultdict(list)
    for lab_id, quiz_id, points in Solve.objects.filter(user=learner, course_id=entry["id"]).values_list(
        "flag__lab_id", "question__quiz_id", "points"
    ):
        if lab_id in lab_ids:
            solved_by_lab[lab_id].append(points)
        elif quiz_id in quiz_ids:
            solved_by_quiz[quiz_id].append(points)
    attempts = {
        row["quiz_id"]: row
        for row in QuizAttempt.objects.filter(user=learner, quiz_id__in=quiz_ids)
        .order_by()
        .values("quiz_id")
        .annotate(count=Count("id"), best=Max("score"), passed=Count("id", filter=Q(passed=True)))
    }
    labs = []
    for lab in entry["labs"]:
        solved = solved_by_lab.get(lab["id"], [])
        labs.append(
            {
                **lab,
                "progress": {
                    "solved": len(solved),
                    "points": sum(solved),
                    "completed": lab["flag_count"] > 0 and len(solved) >= lab["flag_count"],
                },
            }
        )
    quizzes = []
    for quiz in entry["quizzes"]:
        solved = solved_by_quiz.get(quiz["id"], [])
        row = attempts.get(quiz["id"])
        quizzes.append(
            {
                **quiz,
                "progress": {
                    "attempts": row["count"] if row else 0,
                    "best_score": row["best"] if row else None,
                    "passed": bool(row and row["passed"]),
                    "solved": len(solved),
                    "points": sum(solved),
                },
            }
        )
    solved_total = sum(item["progress"]["solved"] for item in labs + quizzes)
    total = sum(lab["flag_count"] for lab in labs) + sum(quiz["question_count"] for quiz in quizzes)
    progress = {
        "enrolled": Enrollment.objects.filter(user=learner, course_id=entry["id"]).exists(),
        "points": sum(item["progress"]["points"] for item in labs + quizzes),
        "solved": solved_total,
        "total": total,
        "percent": _percent(solved_total, total),
        "completed": total > 0 and solved_total >= total,
    }
    return CourseDetail(entry=entry, labs=labs, quizzes=quizzes, progress=progress)


def lab_detail(*, user: User, lab_id: int) -> LabDetail:
    """A lab with its flags (never their values), each marked solved-by-me."""
    entry = _shared(
        user, cache.lab_key(lab_id=lab_id), lambda preview: _lab_detail_build(lab_id=lab_id, preview=preview)
    )
    flag_ids = [flag["id"] for flag in entry["flags"]]
    solved = set(Solve.objects.filter(user=user, flag_id__in=flag_ids).values_list("flag_id", flat=True))
    limited = [flag["id"] for flag in entry["flags"] if flag["max_attempts"] is not None]
    wrong = flag_wrong_attempts(user=user, flag_ids=limited) if limited else {}
    flags = []
    for flag in entry["flags"]:
        attempts_left = None
        if flag["max_attempts"] is not None and flag["id"] not in solved:
            attempts_left = max(0, flag["max_attempts"] - wrong.get(flag["id"], 0))
        flags.append({**flag, "solved": flag["id"] in solved, "attempts_left": attempts_left})
    progress = {
        "solved": len(solved),
        "total": len(flags),
        "points": sum(flag["points"] for flag in flags if flag["solved"]),
        "completed": bool(flags) and len(solved) >= len(flags),
    }
    return LabDetail(entry=entry, flags=flags, progress=progress)


def quiz_detail(*, user: User, quiz_id: int) -> QuizDetail:
    """A quiz's questions and choices, never which are correct, with my attempts so far."""
    entry = _shared(
        user,
        cache.quiz_key(quiz_id=quiz_id),
        lambda preview: _quiz_detail_build(quiz_id=quiz_id, preview=preview),
    )
    question_ids = [question["id"] for question in entry["questions"]]
    solved = set(
        Solve.objects.filter(user=user, question_id__in=question_ids).values_list("question_id", flat=True)
    )
    questions = [{**question, "solved": question["id"] in solved} for question in entry["questions"]]
    if entry["shuffle"]:
        # Seeded by learner and quiz: the order differs between learners but stays put
        # when one learner reloads the page.
        rng = random.Random(f"{user.pk}:{entry['id']}")
        rng.shuffle(questions)
        for question in questions:
            question["choices"] = list(question["choices"])
            rng.shuffle(question["choices"])
    progress = quiz_progress(user=user, quiz_id=entry["id"], policy=entry)
    progress["solved"] = len(solved)
    return QuizDetail(entry=entry, questions=questions, progress=progress)


def quiz_progress(*, user: User, quiz_id: int, policy: dict) -> dict:
    """My attempts at a quiz and what its attempt policy still allows."""
    row = QuizAttempt.objects.filter(user=user, quiz_id=quiz_id).aggregate(
        count=Count("id"),
        best=Max("score"),
        passed=Count("id", filter=Q(passed=True)),
        last=Max("created_at"),
    )
    return {
        "attempts": row["count"],
        "attempts_left": None
        if policy["max_attempts"] is None
        else max(0, policy["max_attempts"] - row["count"]),
        "next_attempt_at": quiz_next_attempt_at(
            last=row["last"], min_wait_seconds=policy["min_wait_seconds"]
        ),
        "best_score": row["best"],
        "passed": bool(row["passed"]),
    }


def quiz_next_attempt_at(*, last: datetime | None, min_wait_seconds: int) -> datetime | None:
    """When the minimum wait after the last attempt ends; None when one may start now."""
    if last is None or not min_wait_seconds:
        return None
    ready = last + timedelta(seconds=min_wait_seconds)
    return ready if ready > timezone.now() else None


def flag_wrong_attempts(*, user: User, flag_ids: list[int]) -> dict[int, int]:
    """Wrong submissions per flag, counted from Postgres (indexed by learner, flag, time)."""
    return _count_by(
        Submission.objects.filter(user=user, flag_id__in=flag_ids, verdict=Verdict.INCORRECT), "flag_id"
    )


def user_points(*, user: User) -> int:
    return Solve.objects.filter(user=user).aggregate(total=Sum("points"))["total"] or 0


def user_progress(*, user: User) -> dict:
    """My points, my solves (`Solve` rows, newest first) and my completion of every
    course I enrolled in or scored in."""
    solves = list(
        Solve.objects.filter(user=user)
        .select_related("flag", "question", "course")
        .only(
            "flag",
            "question",
            "course",
            "points",
            "created_at",
            "flag__lab",
            "question__quiz",
            "course__slug",
        )
        .order_by("-created_at", "-id")
    )
    enrolled = set(Enrollment.objects.filter(user=user).values_list("course_id", flat=True))
    catalogue = {course["id"]: course for course in course_list(user=user)}
    solved_by_course: dict[int, list[int]] = defaultdict(list)
    for solve in solves:
        solved_by_course[solve.course_id].append(solve.points)
    courses = []
    for course_id in sorted(enrolled | set(solved_by_course), key=lambda cid: _course_order(catalogue, cid)):
        course = catalogue.get(course_id)
        if course is None:
            continue  # unpublished since: its points still count in the total above
        total = course["flag_count"] + course["question_count"]
        solved = len(solved_by_course.get(course_id, []))
        courses.append(
            {
                "slug": course["slug"],
                "title": course["title"],
                "enrolled": course_id in enrolled,
                "points": sum(solved_by_course.get(course_id, [])),
                "total_points": course["total_points"],
                "solved": solved,
                "total": total,
                "percent": _percent(solved, total),
                "completed": total > 0 and solved >= total,
            }
        )
    return {"points": sum(solve.points for solve in solves), "solves": solves, "courses": courses}


def _course_order(catalogue: dict[int, dict], course_id: int) -> tuple[int, int]:
    course = catalogue.get(course_id)
    return (course["order"] if course else 0, course_id)


def _percent(solved: int, total: int) -> int:
    return min(100, round(100 * solved / total)) if total else 0


# --- lookups for the write side -------------------------------------------------------


def flag_get_for_user(*, user: User, lab_id: int, flag_id: int) -> Flag:
    """The flag, if it belongs to this lab and the user may see the lab (404 otherwise)."""
    flag = Flag.objects.select_related("lab__course").filter(pk=flag_id, lab_id=lab_id).first()
    if flag is None or not (is_preview(user) or (flag.lab.published and flag.lab.course.published)):
        raise NotFound("No such flag.")
    return flag


def quiz_get_for_user(*, user: User, quiz_id: int) -> Quiz:
    return _quiz_get(quiz_id=quiz_id, preview=is_preview(user))


def course_get_for_user(*, user: User, slug: str) -> Course:
    return _course_get(slug=slug, preview=is_preview(user))
