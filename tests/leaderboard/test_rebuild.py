"""Postgres is the truth: rebuild, catch-up, a flushed Redis, a Redis or broker that is down."""

from __future__ import annotations

import datetime
import json
from urllib.parse import urlsplit

import pytest
from celery import Celery
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from labs.models import Solve
from leaderboard import keys, selectors, services, store, tasks
from leaderboard.boards import Board
from tests.conftest import free_port
from tests.factories import UserFactory
from tests.leaderboard.conftest import award, broker_queue_length, dead_redis, moment

pytestmark = pytest.mark.django_db


def _every_answer(client, user, course_slug):
    """What the API says, from the global page to my rank, the course and the week."""
    return {
        "page": client.get(reverse("leaderboard"), {"limit": 3, "offset": 1}).json(),
        "full": json.loads(client.get(reverse("leaderboard")).content),
        "me": client.get(reverse("leaderboard-me")).json(),
        "course": client.get(reverse("leaderboard-course", args=[course_slug]), {"limit": 10}).json(),
        "weekly": client.get(reverse("leaderboard-weekly")).json(),
    }


@pytest.fixture
def standings(board, user, course):
    """Six learners with points across two courses and two weeks."""
    learners = [UserFactory(display_name=f"L{index}") for index in range(5)]
    for index, learner in enumerate(learners):
        award(learner, points=10 * (index + 1), course=course, at=moment(minutes=index))
        award(learner, points=5, at=moment(minutes=-90 - index))  # last week
    award(user, points=25, course=course, at=moment(minutes=30))
    return learners


def test_when_redis_is_down_every_answer_comes_from_postgres_unchanged(
    standings, learner_client, user, course
):
    # given the answers Redis gives
    from_redis = _every_answer(learner_client, user, course.slug)
    # when Redis goes away
    with dead_redis():
        from_postgres = _every_answer(learner_client, user, course.slug)
    # then Postgres gives the same answers
    assert from_postgres == from_redis
    assert from_redis["me"]["rank"] == 5  # 55, 45, 35, then 25 reached earlier
    assert from_redis["weekly"]["count"] == 6


@pytest.mark.urls("tests.leaderboard.bench_urls")
def test_the_postgres_only_path_of_the_benchmark_gives_the_same_answers(standings, learner_client, user):
    # given the live answers
    for live_path, reference_path, params in [
        ("leaderboard", "bench-pg-leaderboard", {}),
        ("leaderboard", "bench-pg-leaderboard", {"limit": 3, "offset": 1}),
        ("leaderboard-me", "bench-pg-leaderboard-me", {}),
    ]:
        live = learner_client.get(reverse(live_path), params)
        # when the benchmark's reference computes them from Postgres alone
        reference = learner_client.get(reverse(reference_path), params)
        # then they are the same, but for the links' paths, which are each view's own
        assert live.status_code == reference.status_code == 200
        live_body, reference_body = json.loads(live.content), json.loads(reference.content)
        for links in ("next", "previous"):
            assert _query(live_body.pop(links, None)) == _query(reference_body.pop(links, None))
        assert live_body == reference_body


def _query(link: str | None) -> str | None:
    return None if link is None else urlsplit(link).query


def test_a_flushed_redis_answers_from_postgres_and_queues_one_rebuild(
    standings, learner_client, user, course, redis
):
    # given the answers before a flush
    before = _every_answer(learner_client, user, course.slug)
    # when Redis loses everything and several readers come
    redis.flushdb()
    after = [_every_answer(learner_client, user, course.slug) for _ in range(3)]
    # then they get the same answers, nothing was rebuilt on the request path,
    # and exactly one rebuild is queued
    assert all(answer == before for answer in after)
    assert not redis.exists(keys.live_key())
    assert broker_queue_length() == 1
    # when the worker runs it, then the live board is back and answers the same
    tasks.leaderboard_rebuild_task()
    assert redis.exists(keys.live_key())
    assert not redis.exists(keys.rebuild_lock_key())
    assert _every_answer(learner_client, user, course.slug) == before


def _nothing() -> None:
    return None


def test_a_dead_broker_does_not_fail_the_read(standings, learner_client, user, redis, monkeypatch):
    dead = Celery("dead-broker", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    dead.conf.update(
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        broker_connection_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
    )
    monkeypatch.setattr(tasks, "leaderboard_rebuild_task", dead.task(name="tests.dead_rebuild")(_nothing))
    redis.flushdb()
    response = learner_client.get(reverse("leaderboard"), {"limit": 10})
    assert response.status_code == 200
    assert response.json()["count"] == 6
    # and the lock is released so a later reader may queue it
    assert not redis.exists(keys.rebuild_lock_key())


def test_rebuild_command_restores_the_board_from_solves(standings, redis, capsys):
    # given a board that drifted from Postgres
    expected = selectors.leaderboard_page_from_postgres(board=Board.all_time(), limit=100)
    redis.zadd(keys.live_key(), {keys.member(999999): -1})
    # when
    call_command("rebuild_leaderboard")
    # then
    assert selectors.leaderboard_page(board=Board.all_time(), limit=100) == expected
    assert "Leaderboard rebuilt: 6 learners" in capsys.readouterr().out


def test_rebuild_drops_boards_of_courses_that_no_longer_have_solves(standings, course, redis):
    course_board = keys.course_key(course_id=course.pk)
    assert redis.exists(course_board)
    Solve.objects.filter(course=course).delete()  # a raw bulk delete: no refresh per solve
    services.leaderboard_rebuild()
    assert not redis.exists(course_board)


def test_catch_up_applies_solves_whose_event_was_lost(board, learner_client, user, redis):
    # given solves committed while Redis was down (their events were lost)
    with dead_redis():
        award(user, points=40, at=moment())
        award(UserFactory(), points=60, at=moment())
    assert learner_client.get(reverse("leaderboard"), {"limit": 10}).json()["count"] == 0
    # when the beat task runs
    result = tasks.leaderboard_catch_up_task()
    # then they are on the board, and running it again changes nothing
    assert result["applied"] == 2
    assert learner_client.get(reverse("leaderboard"), {"limit": 10}).json()["count"] == 2
    assert tasks.leaderboard_catch_up_task()["applied"] == 0
    assert learner_client.get(reverse("leaderboard-me")).json()["points"] == 40


def test_the_cursor_moves_only_past_settled_solves(board, user, redis, settings):
    # given an old solve and a recent one, neither announced
    old = award(user, points=10, at=moment() - datetime.timedelta(days=30), send=False)
    recent = award(user, points=20, send=False)
    # when caught up
    services.leaderboard_catch_up()
    # then the cursor sits on the old one; the recent one is remembered as applied
    assert store.read_cursor() == old.pk
    assert redis.zrange(keys.applied_key(), 0, -1) == [str(recent.pk).encode()]
    # and a late event for either is not counted again
    from tests.leaderboard.conftest import announce

    announce(old)
    announce(recent)
    assert selectors.leaderboard_me(user=user).points == 30


def test_catch_up_repairs_a_hide_missed_while_redis_was_down(
    board, learner_client, redis, django_capture_on_commit_callbacks
):
    learner = UserFactory()
    award(learner, points=40, at=moment())
    with dead_redis(), django_capture_on_commit_callbacks(execute=True):
        learner.hidden_from_leaderboard = True
        learner.save()
    assert learner_client.get(reverse("leaderboard"), {"limit": 10}).json()["count"] == 1
    assert services.leaderboard_catch_up().refreshed == 1
    assert learner_client.get(reverse("leaderboard"), {"limit": 10}).json()["count"] == 0


def test_a_new_staff_account_is_left_out_even_before_its_first_solve(
    board, learner_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        staff = UserFactory(is_staff=True)
    assert redis_members(keys.excluded_key()) == {keys.member(staff.pk)}
    award(staff, points=40, at=moment())
    assert learner_client.get(reverse("leaderboard"), {"limit": 10}).json()["count"] == 0


def redis_members(key: str) -> set[str]:
    from django_redis import get_redis_connection

    return {value.decode() for value in get_redis_connection("default").smembers(key)}


def test_deleting_many_learners_solves_at_once_queues_one_rebuild(
    board, course, settings, redis, django_capture_on_commit_callbacks
):
    settings.LEADERBOARD_REFRESH_MAX_LEARNERS = 2
    for _ in range(3):
        award(UserFactory(), points=10, course=course, at=moment())
    with django_capture_on_commit_callbacks(execute=True):
        Solve.objects.filter(course=course).delete()
    assert broker_queue_length() == 1


def test_a_solve_event_while_redis_is_down_does_not_fail_the_flag_submission(
    board, learner_client, user, django_capture_on_commit_callbacks
):
    from tests.labs.factories import FlagFactory

    flag = FlagFactory(value="CTF{down}", points=30)
    with dead_redis(), django_capture_on_commit_callbacks(execute=True):
        response = learner_client.post(
            reverse("flag-submit", args=[flag.lab_id, flag.pk]), {"flag": "CTF{down}"}, format="json"
        )
    assert response.status_code == 200
    assert response.json()["correct"] is True
    services.leaderboard_catch_up()
    assert learner_client.get(reverse("leaderboard-me")).json()["points"] == 30
