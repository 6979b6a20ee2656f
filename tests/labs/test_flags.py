"""Submitting flags: verdicts, attempt limits, cheating signals, the points event."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.urls import reverse

from labs import services
from labs.flags import answer_digest, dynamic_flag_value
from labs.models import CheatingSignal, FlagKind, Solve, Submission, Verdict
from labs.signals import points_awarded
from tests.factories import UserFactory
from tests.labs.factories import FlagFactory, LabFactory

pytestmark = pytest.mark.django_db


def _submit(client, flag, answer):
    return client.post(reverse("flag-submit", args=[flag.lab_id, flag.pk]), {"flag": answer}, format="json")


@pytest.fixture
def events():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    points_awarded.connect(receiver, dispatch_uid="test-events")
    yield received
    points_awarded.disconnect(dispatch_uid="test-events")


def test_correct_static_flag_awards_points_once(learner_client, user, django_capture_on_commit_callbacks):
    # given a static flag, and my profile cached with no points
    flag = FlagFactory(value="CTF{abc}", points=100)
    assert learner_client.get(reverse("auth-me")).json()["points"] == 0
    # when I submit it twice
    with django_capture_on_commit_callbacks(execute=True):
        first = _submit(learner_client, flag, "CTF{abc}")
    second = _submit(learner_client, flag, "CTF{abc}")
    # then the first is correct with points, the second already solved without
    assert first.status_code == 200
    assert first.json() == {"correct": True, "already_solved": False, "points": 100, "attempts_left": None}
    assert second.json()["already_solved"] is True
    assert second.json()["points"] == 0
    assert Solve.objects.filter(user=user, flag=flag).count() == 1
    assert learner_client.get(reverse("auth-me")).json()["points"] == 100


def test_wrong_flag_is_recorded_with_a_hash_and_the_ip(learner_client, user):
    flag = FlagFactory(value="CTF{abc}")
    response = _submit(learner_client, flag, "CTF{nope}")
    assert response.json() == {"correct": False, "already_solved": False, "points": 0, "attempts_left": None}
    submission = Submission.objects.get(user=user, flag=flag)
    assert submission.verdict == Verdict.INCORRECT
    assert submission.answer_digest == answer_digest("CTF{nope}")
    assert submission.ip == "127.0.0.1"
    assert "nope" not in submission.answer_digest


def test_behind_a_proxy_a_submission_records_the_learners_address(learner_client, user, settings):
    # given one trusted proxy in front of the platform
    settings.NUM_PROXIES = 1
    flag = FlagFactory(value="CTF{abc}")
    # when a learner's answer reaches the platform through it
    response = learner_client.post(
        reverse("flag-submit", args=[flag.lab_id, flag.pk]),
        {"flag": "CTF{nope}"},
        format="json",
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="203.0.113.7",
    )
    # then the submission shows the learner's address, not the proxy's
    assert response.status_code == 200
    assert Submission.objects.get(user=user, flag=flag).ip == "203.0.113.7"


def test_case_insensitive_flags_accept_any_case(user):
    flag = FlagFactory(value="CTF{MiXeD}", case_sensitive=False)
    assert services.flag_submit(user=user, flag=flag, answer="ctf{mixed}").correct


def test_case_sensitive_flags_refuse_another_case(user):
    flag = FlagFactory(value="CTF{MiXeD}", case_sensitive=True)
    assert not services.flag_submit(user=user, flag=flag, answer="ctf{mixed}").correct


def test_regex_flag_must_match_the_whole_answer(user):
    flag = FlagFactory(kind=FlagKind.REGEX, value=r"CTF\{user-\d+\}")
    assert not services.flag_submit(user=user, flag=flag, answer="CTF{user-12} extra").correct
    assert services.flag_submit(user=user, flag=flag, answer="CTF{user-12}").correct


def test_dynamic_flag_is_correct_only_for_its_learner(user):
    flag = FlagFactory(kind=FlagKind.DYNAMIC, value="")
    mine = services.flag_issue(user=user, flag=flag)
    assert mine == dynamic_flag_value(user_id=user.pk, flag_id=flag.pk)
    assert services.flag_submit(user=user, flag=flag, answer=mine).correct


def test_submitting_another_learners_dynamic_flag_is_wrong_and_a_cheating_signal(learner_client, user):
    # given another learner's issued dynamic flag
    flag = FlagFactory(kind=FlagKind.DYNAMIC, value="")
    owner = UserFactory()
    theirs = services.flag_issue(user=owner, flag=flag)
    # when I submit it
    response = _submit(learner_client, flag, theirs)
    # then I get the answer of any wrong flag, and staff get a signal naming both of us
    assert response.json() == {"correct": False, "already_solved": False, "points": 0, "attempts_left": None}
    signal = CheatingSignal.objects.get()
    assert (signal.submitter, signal.owner, signal.flag) == (user, owner, flag)
    assert signal.submission.user == user


def test_recognising_a_shared_flag_is_one_indexed_lookup(user, django_assert_num_queries):
    # given many learners with issued flags
    flag = FlagFactory(kind=FlagKind.DYNAMIC, value="", lab=LabFactory())
    owners = [UserFactory() for _ in range(5)]
    values = [services.flag_issue(user=owner, flag=flag) for owner in owners]
    flag = type(flag).objects.select_related("lab__course").get(pk=flag.pk)
    # when a shared one is submitted, then the query count does not depend on learners:
    # solved? + issued lookup + submission + signal, inside a savepoint (2 more)
    with django_assert_num_queries(6):
        services.flag_submit(user=user, flag=flag, answer=values[3].upper().replace("CTF", "ctf"))
    assert CheatingSignal.objects.get().owner == owners[3]


def test_max_attempts_locks_the_flag_after_the_last_wrong_answer(learner_client, user):
    # given a flag with two attempts
    flag = FlagFactory(value="CTF{abc}", max_attempts=2)
    # when I answer wrong twice, then right
    first = _submit(learner_client, flag, "a")
    second = _submit(learner_client, flag, "b")
    third = _submit(learner_client, flag, "CTF{abc}")
    # then attempts count down and the right answer comes too late
    assert first.json()["attempts_left"] == 1
    assert second.json()["attempts_left"] == 0
    assert third.status_code == 403
    assert third.json()["code"] == "attempts_exhausted"
    assert not Solve.objects.filter(user=user).exists()
    assert Submission.objects.filter(user=user, verdict=Verdict.LOCKED).count() == 1


def test_attempts_are_counted_in_postgres_so_flushing_redis_gives_none_back(learner_client, redis):
    # given a flag whose only attempt is used
    flag = FlagFactory(value="CTF{abc}", max_attempts=1)
    _submit(learner_client, flag, "wrong")
    # when Redis loses everything
    redis.flushdb()
    # then the flag stays locked
    assert _submit(learner_client, flag, "CTF{abc}").status_code == 403


def test_the_audit_trail_is_indexed_by_learner_flag_and_time():
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, "labs_submission")
    assert any(info["columns"] == ["user_id", "flag_id", "created_at"] for info in indexes.values())


def test_the_attempt_count_reads_the_partial_index_of_wrong_answers(user):
    # given wrong answers on record, and the planner barred from scanning the table
    flag = FlagFactory(value="CTF{abc}", max_attempts=5)
    for index in range(3):
        services.flag_submit(user=user, flag=flag, answer=f"wrong-{index}")
    counted = Submission.objects.filter(user=user, flag=flag, verdict=Verdict.INCORRECT).order_by()[:5]
    sql, params = counted.query.sql_with_params()
    # when the count the service runs is explained
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN SELECT COUNT(*) FROM ({sql}) AS wrong", params)  # noqa: S608 - ORM-built
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # then the wrong-answers index serves it, bounded by the limit
    assert "submission_wrong_attempts" in plan
    assert "Limit" in plan
    assert counted.count() == 3


def test_a_solve_sends_points_awarded_after_commit(user, events, django_capture_on_commit_callbacks):
    flag = FlagFactory(value="CTF{abc}", points=70)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.flag_submit(user=user, flag=flag, answer="CTF{abc}")
        assert events == []
    for callback in callbacks:
        callback()
    solve = Solve.objects.get()
    assert events == [
        {
            "signal": points_awarded,
            "solve_id": solve.pk,
            "user_id": user.pk,
            "source": "flag",
            "course_id": flag.lab.course_id,
            "points": 70,
            "awarded_at": solve.created_at,
        }
    ]


def test_a_failing_subscriber_does_not_fail_the_submission(
    learner_client, django_capture_on_commit_callbacks
):
    def broken(sender, **kwargs):
        raise RuntimeError("subscriber bug")

    points_awarded.connect(broken, dispatch_uid="test-broken")
    try:
        flag = FlagFactory(value="CTF{abc}")
        with django_capture_on_commit_callbacks(execute=True):
            response = _submit(learner_client, flag, "CTF{abc}")
    finally:
        points_awarded.disconnect(dispatch_uid="test-broken")
    assert response.status_code == 200
    assert response.json()["correct"] is True


def test_unknown_flag_or_flag_of_another_lab_is_404(learner_client):
    flag = FlagFactory()
    other_lab = LabFactory()
    assert (
        learner_client.post(reverse("flag-submit", args=[other_lab.pk, flag.pk]), {"flag": "x"}).status_code
        == 404
    )
    assert (
        learner_client.post(reverse("flag-submit", args=[flag.lab_id, 999999]), {"flag": "x"}).status_code
        == 404
    )


def test_flag_of_an_unpublished_lab_is_404_for_learners(learner_client):
    flag = FlagFactory(lab=LabFactory(published=False))
    assert _submit(learner_client, flag, "x").status_code == 404


def test_an_empty_or_overlong_flag_is_a_400(learner_client, settings):
    settings.FLAG_ANSWER_MAX_LENGTH = 10
    flag = FlagFactory()
    empty = _submit(learner_client, flag, "")
    long = _submit(learner_client, flag, "x" * 11)
    assert empty.status_code == 400
    assert long.status_code == 400
    assert long.json()["code"] == "invalid"
    assert not Submission.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_correct_submissions_make_exactly_one_solve(events):
    # given one learner and a flag
    user = UserFactory()
    flag = FlagFactory(value="CTF{race}", points=100)
    flag = type(flag).objects.select_related("lab__course").get(pk=flag.pk)
    barrier = threading.Barrier(20)
    results, errors = [], []

    def submit():
        try:
            barrier.wait()
            results.append(services.flag_submit(user=user, flag=flag, answer="CTF{race}"))
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            connection.close()

    # when twenty threads submit the correct flag at once
    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then one solve, points once, nineteen "already solved", one event
    assert errors == []
    assert Solve.objects.filter(user=user, flag=flag).count() == 1
    assert sum(result.correct for result in results) == 1
    assert sum(result.already_solved for result in results) == 19
    assert sum(result.points for result in results) == 100
    assert len(events) == 1
    assert Submission.objects.filter(user=user, flag=flag).count() == 20


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_submissions_never_exceed_max_attempts():
    # given a flag with three attempts
    user = UserFactory()
    flag = FlagFactory(value="CTF{abc}", max_attempts=3)
    flag = type(flag).objects.select_related("lab__course").get(pk=flag.pk)
    barrier = threading.Barrier(10)
    verdicts = []

    def submit(index):
        try:
            barrier.wait()
            verdicts.append(services.flag_submit(user=user, flag=flag, answer=f"wrong-{index}").verdict)
        finally:
            connection.close()

    # when ten wrong answers arrive at once
    threads = [threading.Thread(target=submit, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then exactly three were judged, the rest locked
    assert sorted(verdicts).count(Verdict.INCORRECT) == 3
    assert sorted(verdicts).count(Verdict.LOCKED) == 7
