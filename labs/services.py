"""Actions on the catalogue and on learners' progress."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from cyberlab.accounts.models import User
from cyberlab.accounts.selectors import user_profile_invalidate
from labs import receivers
from labs.errors import AttemptsExhausted, AttemptTooSoon, InvalidAnswers
from labs.flags import answer_digest, dynamic_flag_value
from labs.models import (
    CheatingSignal,
    Course,
    Enrollment,
    Flag,
    FlagKind,
    IssuedFlag,
    Lab,
    Question,
    QuestionKind,
    Quiz,
    QuizAttempt,
    Solve,
    Submission,
    TextMatch,
    Verdict,
)
from labs.selectors import quiz_next_attempt_at
from labs.signals import points_awarded

logger = logging.getLogger(__name__)

_DYNAMIC_SHAPE = re.compile(r"ctf\{([0-9a-f]{32})\}", re.IGNORECASE)


# --- dynamic flags (called by the machines app) -------------------------------------


def flag_issue(*, user: User, flag: Flag) -> str:
    """The learner's own value of a dynamic flag, recorded so a shared copy is traceable."""
    value = dynamic_flag_value(user_id=user.pk, flag_id=flag.pk)
    if not IssuedFlag.objects.filter(user=user, flag=flag).exists():
        try:
            with transaction.atomic():
                IssuedFlag.objects.create(user=user, flag=flag, digest=answer_digest(value))
        except IntegrityError:
            pass  # issued concurrently by another request: the same value either way
    return value


def lab_machine_flags(*, user: User, lab: Lab) -> dict[str, str]:
    """Environment variables handing a learner's machine their dynamic flags.

    `FLAG` is the lab's first dynamic flag; `FLAG_1`, `FLAG_2`, ... are all of them in order.
    """
    env: dict[str, str] = {}
    dynamic = lab.flags.filter(kind=FlagKind.DYNAMIC).order_by("order", "id")
    for index, flag in enumerate(dynamic, start=1):
        value = flag_issue(user=user, flag=flag)
        env.setdefault("FLAG", value)
        env[f"FLAG_{index}"] = value
    return env


# --- serialising a learner's attempts -------------------------------------------------


def _lock_learner_item(*, scope: str, user_id: int, item_id: int) -> None:
    """Serialises one learner's attempts at one flag or quiz until the transaction ends.

    Counting attempts and then recording one is a read-then-write: without the lock,
    parallel requests would all read the same count and all get through. SQLite takes
    the write lock at BEGIN already, so only Postgres needs this.
    """
    if connection.vendor != "postgresql":
        return
    digest = hashlib.blake2b(f"labs:{scope}:{user_id}:{item_id}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _announce(solves: list[Solve]) -> None:
    """After commit: the points_awarded event per new solve, and a fresh profile."""
    if not solves:
        return
    user_id = solves[0].user_id

    def send() -> None:
        user_profile_invalidate(user_id=user_id)
        for solve in solves:
            responses = points_awarded.send_robust(
                sender=Solve,
                solve_id=solve.pk,
                user_id=solve.user_id,
                source=solve.source,
                course_id=solve.course_id,
                points=solve.points,
                awarded_at=solve.created_at,
            )
            # The solve is committed whatever a subscriber does; a failing one is
            # logged and left to catch up from Postgres.
            for receiver, result in responses:
                if isinstance(result, Exception):
                    logger.error(
                        "points_awarded receiver %r failed for solve %s",
                        receiver,
                        solve.pk,
                        exc_info=(type(result), result, result.__traceback__),
                    )

    transaction.on_commit(send)


# --- flags -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagResult:
    verdict: str
    points: int
    attempts_left: int | None

    @property
    def correct(self) -> bool:
        return self.verdict == Verdict.CORRECT

    @property
    def already_solved(self) -> bool:
        return self.verdict == Verdict.ALREADY_SOLVED


def _same(expected: str, given: str, *, case_sensitive: bool) -> bool:
    if not case_sensitive:
        expected, given = expected.casefold(), given.casefold()
    return hmac.compare_digest(expected.encode(), given.encode())


def flag_matches(*, flag: Flag, user: User, answer: str) -> bool:
    """Whether `answer` is this learner's flag."""
    given = answer.strip()
    if flag.kind == FlagKind.STATIC:
        return bool(flag.value) and _same(flag.value.strip(), given, case_sensitive=flag.case_sensitive)
    if flag.kind == FlagKind.REGEX:
        pattern_flags = 0 if flag.case_sensitive else re.IGNORECASE
        try:
            return re.fullmatch(flag.value, given, pattern_flags) is not None
        except re.error:
            logger.error("Flag %s has an invalid pattern; no answer can match it", flag.pk)
            return False
    expected = dynamic_flag_value(user_id=user.pk, flag_id=flag.pk)
    return _same(expected, given, case_sensitive=flag.case_sensitive)


def _dynamic_owner(*, flag: Flag, answer: str) -> int | None:
    """Whose issued flag this answer is: one lookup by digest, not a loop over learners."""
    match = _DYNAMIC_SHAPE.fullmatch(answer.strip())
    if match is None:
        return None
    canonical = f"CTF{{{match.group(1).lower()}}}"
    return (
        IssuedFlag.objects.filter(digest=answer_digest(canonical), flag=flag)
        .values_list("user_id", flat=True)
        .first()
    )


@transaction.atomic
def flag_submit(*, user: User, flag: Flag, answer: str, ip: str | None = None) -> FlagResult:
    """Checks a flag, records the submission, and awards the points once, ever.

    Attempts are counted from `Submission` rows in Postgres, so no evicted cache entry
    can hand a learner fresh attempts. Another learner's dynamic flag is answered like
    any wrong flag and recorded as a cheating signal for staff.
    """
    if flag.max_attempts is not None:
        _lock_learner_item(scope="flag", user_id=user.pk, item_id=flag.pk)
    solved = Solve.objects.filter(user=user, flag=flag).exists()
    wrong = 0
    if not solved and flag.max_attempts is not None:
        # Counting stops at the limit: past it the answer is the same however many more.
        wrong = (
            Submission.objects.filter(user=user, flag=flag, verdict=Verdict.INCORRECT)
            .order_by()[: flag.max_attempts]
            .count()
        )

    owner_id = None
    new_solve = None
    if solved:
        verdict = Verdict.ALREADY_SOLVED
    elif flag.max_attempts is not None and wrong >= flag.max_attempts:
        verdict = Verdict.LOCKED
    elif flag_matches(flag=flag, user=user, answer=answer):
        try:
            with transaction.atomic():
                new_solve = Solve.objects.create(
                    user=user, flag=flag, course_id=flag.lab.course_id, points=flag.points
                )
            verdict = Verdict.CORRECT
        except IntegrityError:
            verdict = Verdict.ALREADY_SOLVED  # a parallel request won the race
    else:
        verdict = Verdict.INCORRECT
        wrong += 1
        if flag.kind == FlagKind.DYNAMIC:
            owner_id = _dynamic_owner(flag=flag, answer=answer)

    submission = Submission.objects.create(
        user=user, flag=flag, answer_digest=answer_digest(answer), verdict=verdict, ip=ip or None
    )
    if owner_id is not None and owner_id != user.pk:
        CheatingSignal.objects.create(submitter=user, owner_id=owner_id, flag=flag, submission=submission)
    if new_solve is not None:
        _announce([new_solve])

    attempts_left = None
    if flag.max_attempts is not None and verdict in (Verdict.INCORRECT, Verdict.LOCKED):
        attempts_left = max(0, flag.max_attempts - wrong)
    return FlagResult(
        verdict=verdict, points=new_solve.points if new_solve else 0, attempts_left=attempts_left
    )


# --- quizzes -----------------------------------------------------------------------------


def _choice_ids(value, question: Question) -> set[int]:
    items = value if isinstance(value, list) else [value]
    ids: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str) or not str(item).isdigit():
            raise InvalidAnswers(f"Question {question.pk}: choices are given by their ids.")
        ids.add(int(item))
    return ids


def _grade(question: Question, value, *, max_length: int) -> tuple[bool, object]:
    """(correct, the answer as stored) for one question."""
    if question.kind == QuestionKind.TEXT:
        if not isinstance(value, str):
            raise InvalidAnswers(f"Question {question.pk} takes a text answer.")
        if len(value) > max_length:
            raise InvalidAnswers(
                f"Question {question.pk}: the answer is longer than {max_length} characters."
            )
        given = value.strip()
        expected = question.answer.strip()
        if question.match == TextMatch.EXACT:
            return bool(expected) and given == expected, given
        if question.match == TextMatch.IEXACT:
            return bool(expected) and given.casefold() == expected.casefold(), given
        try:
            return re.fullmatch(question.answer, given, re.IGNORECASE) is not None, given
        except re.error:
            logger.error("Question %s has an invalid pattern; no answer can match it", question.pk)
            return False, given
    chosen = _choice_ids(value, question)
    choices = {choice.pk: choice.correct for choice in question.choices.all()}
    unknown = chosen - set(choices)
    if unknown:
        raise InvalidAnswers(f"Question {question.pk} has no choice {sorted(unknown)[0]}.")
    if question.kind == QuestionKind.SINGLE and len(chosen) > 1:
        raise InvalidAnswers(f"Question {question.pk} takes a single choice.")
    correct = {pk for pk, is_correct in choices.items() if is_correct}
    return bool(correct) and chosen == correct, sorted(chosen)


@transaction.atomic
def quiz_attempt_submit(*, user: User, quiz: Quiz, answers: dict, max_text_length: int) -> dict:
    """Grades an attempt on the server, enforcing the quiz's attempt policy.

    Points come only for questions answered correctly for the first time, ever. An
    explanation is shown for a question answered correctly, and for every question once
    no attempt is left: before that it could hand out the answer.
    """
    _lock_learner_item(scope="quiz", user_id=user.pk, item_id=quiz.pk)
    previous = QuizAttempt.objects.filter(user=user, quiz=quiz).order_by("-created_at")
    count = previous.count()
    if quiz.max_attempts is not None and count >= quiz.max_attempts:
        raise AttemptsExhausted("No attempts left for this quiz.")
    last = previous.values_list("created_at", flat=True).first()
    ready_at = quiz_next_attempt_at(last=last, min_wait_seconds=quiz.min_wait_seconds)
    if ready_at is not None:
        raise AttemptTooSoon(ready_at=ready_at)

    questions = list(quiz.questions.order_by("order", "id").prefetch_related("choices"))
    by_id = {str(question.pk): question for question in questions}
    unknown = [key for key in answers if str(key) not in by_id]
    if unknown:
        raise InvalidAnswers(f"This quiz has no question {unknown[0]}.")
    given = {str(key): value for key, value in answers.items()}
    solved_before = set(
        Solve.objects.filter(user=user, question__in=questions).values_list("question_id", flat=True)
    )
    final = quiz.max_attempts is not None and count + 1 >= quiz.max_attempts

    results, stored, new_solves = [], {}, []
    score = max_score = 0
    for question in questions:
        max_score += question.points
        key = str(question.pk)
        answered = key in given and given[key] not in (None, "", [])
        correct = False
        if answered:
            correct, stored[key] = _grade(question, given[key], max_length=max_text_length)
        if correct:
            score += question.points
            if question.pk not in solved_before:
                new_solves.append(
                    Solve(user=user, question=question, course_id=quiz.course_id, points=question.points)
                )
        show_explanation = correct or question.pk in solved_before or final
        results.append(
            {
                "question_id": question.pk,
                "answered": answered,
                "correct": correct,
                "points": question.points if correct and question.pk not in solved_before else 0,
                "explanation": question.explanation if show_explanation else None,
            }
        )
    passed = max_score > 0 and score * 100 >= quiz.pass_mark * max_score
    attempt = QuizAttempt.objects.create(
        user=user,
        quiz=quiz,
        answers=stored,
        results={str(item["question_id"]): item["correct"] for item in results},
        score=score,
        max_score=max_score,
        passed=passed,
    )
    # The quiz lock makes a conflicting insert impossible: one learner's attempts at
    # one quiz run one at a time, and a question belongs to one quiz.
    created = Solve.objects.bulk_create(new_solves)
    _announce(created)
    attempts_used = count + 1
    return {
        "id": attempt.pk,
        "quiz": quiz.pk,
        "score": score,
        "max_score": max_score,
        "percent": round(100 * score / max_score) if max_score else 0,
        "passed": passed,
        "points_awarded": sum(solve.points for solve in created),
        "created_at": attempt.created_at,
        "attempts_left": None if quiz.max_attempts is None else max(0, quiz.max_attempts - attempts_used),
        "next_attempt_at": quiz_next_attempt_at(
            last=attempt.created_at, min_wait_seconds=quiz.min_wait_seconds
        ),
        "results": results,
    }


# --- enrolment and publishing ---------------------------------------------------------


def course_enroll(*, user: User, course: Course) -> tuple[Enrollment, bool]:
    """Enrols the learner; (enrollment, created). Enrolling twice is not an error."""
    # With its course loaded: what the API shows of an enrolment is the course's slug.
    enrollment, created = Enrollment.objects.select_related("course").get_or_create(user=user, course=course)
    return enrollment, created


@transaction.atomic
def catalogue_set_published(*, queryset: QuerySet, published: bool) -> int:
    """Publishes or withdraws courses, labs or quizzes in bulk (the admin's list actions).

    A bulk update sends no save signals, so the cache entries are dropped here.
    """
    model = queryset.model
    # By primary key: the admin's list queryset carries annotations that FOR UPDATE refuses.
    pks = list(queryset.values_list("pk", flat=True))
    changed = list(model.objects.select_for_update().filter(pk__in=pks).exclude(published=published))
    if not changed:
        return 0
    fields = {"published": published}
    if hasattr(model, "updated_at"):
        fields["updated_at"] = timezone.now()
    model.objects.filter(pk__in=[obj.pk for obj in changed]).update(**fields)
    receivers.catalogue_invalidate_on_commit(objects=changed)
    return len(changed)
