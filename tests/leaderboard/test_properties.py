"""Property: however solves arrive, the live boards equal a rebuilt one and a plain SQL ranking.

Random learners (some hidden, some staff) solve random flags at random (often equal)
seconds across two courses and two weeks; events come in a random order, some twice,
some never (left to the catch-up); then solves are deleted and learners hidden or shown
again. Against the real Postgres and Redis.
"""

from __future__ import annotations

import datetime

import pytest
from django.db import connection, transaction
from django_redis import get_redis_connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labs.models import Solve
from leaderboard import keys, selectors, services
from leaderboard.boards import Board, week_start
from tests.factories import UserFactory
from tests.labs.factories import CourseFactory, FlagFactory, LabFactory
from tests.leaderboard.conftest import announce, moment

pytestmark = pytest.mark.django_db

FLAGS_PER_COURSE = 6
POINTS = st.sampled_from([0, 1, 5, 50, 100, 250])
# Few distinct seconds, on both sides of Monday 00:00, so ties and the week boundary are common.
WHEN = st.sampled_from([-3601, -1, 0, 1, 0, 0, 5, 5, 3600, 3600])

# Mostly visible learners, some hidden, some staff.
learner_spec = st.sampled_from(
    [{"hidden": False, "staff": False}] * 4
    + [{"hidden": True, "staff": False}, {"hidden": False, "staff": True}]
)


@pytest.fixture
def catalogue(db):
    courses = [CourseFactory(), CourseFactory()]
    return [FlagFactory(lab=LabFactory(course=course)) for course in courses for _ in range(FLAGS_PER_COURSE)]


def _plain_sql(*, course_id: int | None = None, since: datetime.datetime | None = None) -> list[tuple]:
    """The ranking written by hand against the tables, independent of the ORM query."""
    where, params = "", []
    if course_id is not None:
        where += " AND s.course_id = %s"
        params.append(course_id)
    if since is not None:
        where += " AND s.created_at >= %s AND s.created_at < %s"
        params += [since, since + datetime.timedelta(days=7)]
    sql = f"""
        SELECT s.user_id, SUM(s.points), date_trunc('second', MAX(s.created_at))
        FROM labs_solve s JOIN accounts_user u ON u.id = s.user_id
        WHERE s.points > 0 AND NOT u.hidden_from_leaderboard AND NOT u.is_staff {where}
        GROUP BY s.user_id
        ORDER BY SUM(s.points) DESC, date_trunc('second', MAX(s.created_at)), s.user_id
    """  # noqa: S608 -- only fixed fragments are formatted in; values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(user_id, int(points), reached) for user_id, points, reached in cursor.fetchall()]


def _board(board: Board) -> list[tuple]:
    page = selectors.leaderboard_page(board=board, limit=500)
    assert page.count == len(page.results)
    assert [standing.rank for standing in page.results] == list(range(1, page.count + 1))
    return [(s.user_id, s.points, s.last_scored_at) for s in page.results]


def _all_boards(course_ids, week) -> dict:
    return {
        "global": _board(Board.all_time()),
        **{f"course {c}": _board(Board.course(c)) for c in course_ids},
        "week": _board(Board.weekly(week)),
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_incremental_board_equals_rebuilt_board_equals_plain_sql(
    catalogue, django_capture_on_commit_callbacks, data
):
    learners_spec = data.draw(st.lists(learner_spec, min_size=2, max_size=6), label="learners")
    solves_spec = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, len(learners_spec) - 1),
                st.integers(0, len(catalogue) - 1),
                POINTS,
                WHEN,
            ),
            min_size=1,
            max_size=20,
            unique_by=lambda solve: (solve[0], solve[1]),
        ),
        label="solves",
    )
    monday = moment(minutes=-60)
    this_week = week_start(monday)
    course_ids = sorted({flag.lab.course_id for flag in catalogue})
    with transaction.atomic():
        get_redis_connection("default").flushdb()
        services.leaderboard_rebuild()
        learners = [
            UserFactory(hidden_from_leaderboard=s["hidden"], is_staff=s["staff"]) for s in learners_spec
        ]
        with django_capture_on_commit_callbacks(execute=True):
            pass  # new hidden/staff accounts reach the excluded set as after their commit
        for learner in learners:
            services.leaderboard_user_refresh(user_id=learner.pk)
        solves = []
        for learner_index, flag_index, points, offset in solves_spec:
            flag = catalogue[flag_index]
            solve = Solve.objects.create(
                user=learners[learner_index], flag=flag, course_id=flag.lab.course_id, points=points
            )
            Solve.objects.filter(pk=solve.pk).update(created_at=monday + datetime.timedelta(seconds=offset))
            solve.refresh_from_db()
            solves.append(solve)

        # events in a random order, some replayed, some lost
        order = data.draw(st.permutations(range(len(solves))), label="event order")
        lost = data.draw(st.sets(st.sampled_from(range(len(solves))), max_size=3), label="lost")
        replays = data.draw(st.lists(st.sampled_from(order), max_size=5), label="replays")
        for index in [*order, *replays]:
            if index not in lost:
                announce(solves[index])
        if data.draw(st.booleans(), label="catch up before the changes"):
            services.leaderboard_catch_up()

        # staff delete solves, hide and un-hide learners
        deleted = data.draw(st.sets(st.sampled_from(range(len(solves))), max_size=2), label="deleted")
        toggled = data.draw(st.sets(st.sampled_from(range(len(learners))), max_size=1), label="toggled")
        with django_capture_on_commit_callbacks(execute=True):
            for index in sorted(deleted):
                solves[index].delete()
            for index in sorted(toggled):
                learner = learners[index]
                learner.hidden_from_leaderboard = not learner.hidden_from_leaderboard
                learner.save()
        services.leaderboard_catch_up()

        # then: incremental == plain SQL == rebuilt
        incremental = _all_boards(course_ids, this_week)
        sql = {
            "global": _plain_sql(),
            **{f"course {c}": _plain_sql(course_id=c) for c in course_ids},
            "week": _plain_sql(since=monday),
        }
        assert incremental == sql
        services.leaderboard_rebuild()
        assert _all_boards(course_ids, this_week) == sql
        assert get_redis_connection("default").exists(keys.cursor_key())
        transaction.set_rollback(True)
