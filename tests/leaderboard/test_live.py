"""The live boards: updates from the points event, reads through the API."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from labs.models import Solve
from tests.factories import UserFactory
from tests.labs.factories import CourseFactory, FlagFactory
from tests.leaderboard.conftest import award, moment

pytestmark = pytest.mark.django_db


def _board(client, **params):
    response = client.get(reverse("leaderboard"), params)
    assert response.status_code == 200, response.content
    return response.json()


def _ranking(client, **params):
    return [(row["user_id"], row["points"]) for row in _board(client, limit=100, **params)["results"]]


def test_a_flag_solved_through_the_api_shows_on_the_board_in_the_next_request(
    board, learner_client, user, django_capture_on_commit_callbacks
):
    # given a board with another learner on it
    rival = UserFactory(display_name="Rival")
    award(rival, points=50, at=moment())
    flag = FlagFactory(value="CTF{next-request}", points=100)
    # when I submit the flag (its transaction commits, the event fires)
    with django_capture_on_commit_callbacks(execute=True):
        submitted = learner_client.post(
            reverse("flag-submit", args=[flag.lab_id, flag.pk]), {"flag": "CTF{next-request}"}, format="json"
        )
    assert submitted.json()["correct"] is True
    # then the very next reads show me first, with no rebuild in between
    page = _board(learner_client, limit=10)
    assert [(row["user_id"], row["points"]) for row in page["results"]] == [(user.pk, 100), (rival.pk, 50)]
    assert page["results"][0]["display_name"] == user.username
    me = learner_client.get(reverse("leaderboard-me")).json()
    assert (me["rank"], me["points"]) == (1, 100)


def test_more_points_rank_first_then_earlier_reach_time_then_lower_user_id(board, learner_client):
    # given learners with equal points reached at different times, and a tie in the same second
    early, late, tied_a, tied_b, leader = (UserFactory() for _ in range(5))
    award(late, points=100, at=moment(minutes=10))
    award(early, points=60, at=moment(minutes=1))
    award(early, points=40, at=moment(minutes=5))
    award(tied_b, points=100, at=moment(minutes=7))
    award(tied_a, points=100, at=moment(minutes=7))
    award(leader, points=150, at=moment(minutes=30))
    # then
    first_tied, second_tied = sorted([tied_a.pk, tied_b.pk])
    assert _ranking(learner_client) == [
        (leader.pk, 150),
        (early.pk, 100),
        (first_tied, 100),
        (second_tied, 100),
        (late.pk, 100),
    ]


def test_entries_carry_rank_name_points_and_the_second_the_points_were_reached(board, learner_client):
    learner = UserFactory(display_name="Ada")
    award(learner, points=70, at=moment(minutes=3).replace(microsecond=654321))
    page = _board(learner_client, limit=10)
    assert page == {
        "count": 1,
        "next": None,
        "previous": None,
        "results": [
            {
                "rank": 1,
                "user_id": learner.pk,
                "display_name": "Ada",
                "points": 70,
                "last_scored_at": moment(minutes=3).isoformat().replace("+00:00", "Z"),
            }
        ],
    }


def test_pages_have_count_and_links_and_start_at_the_offset(board, learner_client):
    learners = [UserFactory() for _ in range(5)]
    for index, learner in enumerate(learners):
        award(learner, points=100 - index, at=moment())
    page = _board(learner_client, limit=2, offset=2)
    assert page["count"] == 5
    assert [row["rank"] for row in page["results"]] == [3, 4]
    assert [row["user_id"] for row in page["results"]] == [learners[2].pk, learners[3].pk]
    assert page["next"].endswith("limit=2&offset=4")
    assert page["previous"].endswith("?limit=2")


def test_page_links_keep_other_parameters_in_order(board, learner_client):
    for index in range(5):
        award(UserFactory(), points=100 - index, at=moment())
    page = learner_client.get("/api/v1/leaderboard/?offset=2&limit=2&zone=eu").json()
    assert page["next"].endswith("/api/v1/leaderboard/?limit=2&offset=4&zone=eu")
    assert page["previous"].endswith("/api/v1/leaderboard/?limit=2&zone=eu")


def test_the_board_needs_a_signed_in_user(api_client, course):
    for path in (
        reverse("leaderboard"),
        reverse("leaderboard-weekly"),
        reverse("leaderboard-course", args=["web"]),
    ):
        assert api_client.get(path).status_code in (401, 403)
    assert api_client.get(reverse("leaderboard-me")).status_code in (401, 403)


def test_a_public_board_is_readable_signed_out_but_my_rank_is_not(board, api_client, user, course, settings):
    settings.LEADERBOARD_PUBLIC = True
    award(user, points=10, at=moment())
    assert api_client.get(reverse("leaderboard"), {"limit": 10}).json()["count"] == 1
    assert api_client.get(reverse("leaderboard-weekly")).status_code == 200
    assert api_client.get(reverse("leaderboard-course", args=["web"])).status_code == 200
    assert api_client.get(reverse("leaderboard-me")).status_code in (401, 403)


def test_my_rank_and_the_standings_around_me(board, learner_client, user, settings):
    # given eleven learners ahead of me and five behind
    settings.LEADERBOARD_AROUND = 2
    ahead = [UserFactory() for _ in range(11)]
    behind = [UserFactory() for _ in range(5)]
    for index, learner in enumerate(ahead):
        award(learner, points=1000 - index, at=moment())
    award(user, points=500, at=moment())
    for learner in behind:
        award(learner, points=100, at=moment())
    # when
    me = learner_client.get(reverse("leaderboard-me")).json()
    # then
    assert me["rank"] == 12
    assert me["points"] == 500
    assert me["count"] == 17
    assert [row["rank"] for row in me["around"]] == [10, 11, 12, 13, 14]
    assert me["around"][2]["user_id"] == user.pk


def test_a_learner_without_points_has_no_rank(board, learner_client):
    me = learner_client.get(reverse("leaderboard-me")).json()
    assert me == {"rank": None, "points": 0, "last_scored_at": None, "count": 0, "around": []}


def test_hidden_learners_and_staff_are_left_out(board, learner_client, user):
    hidden = UserFactory(hidden_from_leaderboard=True)
    staff = UserFactory(is_staff=True)
    award(hidden, points=500, at=moment())
    award(staff, points=400, at=moment())
    award(user, points=10, at=moment())
    assert _ranking(learner_client) == [(user.pk, 10)]
    # and a hidden learner still sees their own points, without a rank
    hidden_client = learner_client.__class__()
    hidden_client.force_login(hidden)
    me = hidden_client.get(reverse("leaderboard-me")).json()
    assert (me["rank"], me["points"]) == (None, 500)


def test_staff_are_on_the_board_when_the_setting_includes_them(learner_client, settings, db):
    settings.LEADERBOARD_INCLUDE_STAFF = True
    from leaderboard import services

    services.leaderboard_rebuild()
    staff = UserFactory(is_staff=True)
    award(staff, points=400, at=moment())
    assert _ranking(learner_client) == [(staff.pk, 400)]


def test_hiding_and_unhiding_a_learner_updates_the_board_at_once(
    board, learner_client, user, django_capture_on_commit_callbacks
):
    # given a learner on the board
    learner = UserFactory()
    award(learner, points=80, at=moment(minutes=1))
    award(learner, points=20, at=moment(minutes=2))
    award(user, points=50, at=moment())
    # when staff hide them
    with django_capture_on_commit_callbacks(execute=True):
        learner.hidden_from_leaderboard = True
        learner.save()
    # then they are gone from the next read, and their solves are not re-added by replays
    assert _ranking(learner_client) == [(user.pk, 50)]
    award(learner, points=5, at=moment(minutes=3))
    assert _ranking(learner_client) == [(user.pk, 50)]
    # when un-hidden, they come back with every point, reach time intact
    with django_capture_on_commit_callbacks(execute=True):
        learner.hidden_from_leaderboard = False
        learner.save()
    assert _ranking(learner_client) == [(learner.pk, 105), (user.pk, 50)]
    assert _board(learner_client, limit=1)["results"][0]["last_scored_at"].startswith(
        moment(minutes=3).isoformat()[:19]
    )


def test_making_a_learner_staff_takes_them_off_the_board(
    board, learner_client, django_capture_on_commit_callbacks
):
    learner = UserFactory()
    award(learner, points=80, at=moment())
    with django_capture_on_commit_callbacks(execute=True):
        learner.is_staff = True
        learner.save(update_fields=["is_staff"])
    assert _ranking(learner_client) == []


def test_a_save_that_does_not_touch_leaderboard_fields_changes_nothing(
    board, learner_client, django_capture_on_commit_callbacks
):
    learner = UserFactory()
    award(learner, points=80, at=moment())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        learner.last_login = timezone.now()
        learner.save(update_fields=["last_login"])
        learner.email = "new@example.com"
        learner.save()
    assert [callback for callback in callbacks if callback.__module__.startswith("leaderboard")] == []


def test_deleting_a_solve_updates_the_board_at_once(
    board, learner_client, user, django_capture_on_commit_callbacks
):
    # given
    learner = UserFactory()
    first = award(learner, points=80, at=moment(minutes=1))
    last = award(learner, points=20, at=moment(minutes=9))
    award(user, points=90, at=moment(minutes=5))
    assert _ranking(learner_client) == [(learner.pk, 100), (user.pk, 90)]
    # when staff delete the later solve (as the admin does)
    with django_capture_on_commit_callbacks(execute=True):
        last.delete()
    # then the learner drops, reach time back to the first solve
    assert _ranking(learner_client) == [(user.pk, 90), (learner.pk, 80)]
    assert _board(learner_client, limit=5)["results"][1]["last_scored_at"].startswith(
        moment(minutes=1).isoformat()[:19]
    )
    # and when the last one goes, so does the learner, from the course board too
    with django_capture_on_commit_callbacks(execute=True):
        first.delete()
    assert _ranking(learner_client) == [(user.pk, 90)]
    course_page = learner_client.get(reverse("leaderboard-course", args=[first.course.slug])).json()
    assert course_page["results"] == []


def test_renaming_a_learner_shows_the_new_name(board, learner_client, django_capture_on_commit_callbacks):
    learner = UserFactory(display_name="Old")
    award(learner, points=10, at=moment())
    with django_capture_on_commit_callbacks(execute=True):
        learner.display_name = "New"
        learner.save()
    assert _board(learner_client, limit=1)["results"][0]["display_name"] == "New"


def test_a_replayed_event_does_not_count_twice(board, learner_client, user):
    from tests.leaderboard.conftest import announce

    solve = award(user, points=40, at=moment())
    announce(solve)
    announce(solve)
    assert _ranking(learner_client) == [(user.pk, 40)]


def test_course_board_counts_only_that_courses_points(board, learner_client, user, course):
    other = CourseFactory()
    rival = UserFactory()
    award(user, points=30, course=course, at=moment())
    award(rival, points=20, course=course, at=moment())
    award(rival, points=500, course=other, at=moment())
    page = learner_client.get(reverse("leaderboard-course", args=[course.slug]), {"limit": 10}).json()
    assert [(row["user_id"], row["points"]) for row in page["results"]] == [(user.pk, 30), (rival.pk, 20)]
    assert page["count"] == 2


def test_course_board_of_an_unknown_or_unpublished_course_is_404(learner_client, staff_client):
    hidden = CourseFactory(published=False)
    assert learner_client.get(reverse("leaderboard-course", args=["nope"])).status_code == 404
    response = learner_client.get(reverse("leaderboard-course", args=[hidden.slug]))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert staff_client.get(reverse("leaderboard-course", args=[hidden.slug])).status_code == 200


def test_weekly_board_counts_points_since_monday(board, learner_client, user):
    # given points from last week and from this week
    rival = UserFactory()
    monday = moment(minutes=-60)  # this Monday 00:00 UTC
    award(rival, points=900, at=monday - datetime.timedelta(seconds=1))
    award(rival, points=10, at=monday)
    award(user, points=20, at=moment(minutes=5))
    # when
    page = learner_client.get(reverse("leaderboard-weekly")).json()
    # then only this week's points count
    assert [(row["user_id"], row["points"]) for row in page["results"]] == [(user.pk, 20), (rival.pk, 10)]
    assert page["since"] == monday.isoformat().replace("+00:00", "Z")
    assert _ranking(learner_client) == [(rival.pk, 910), (user.pk, 20)]


def test_quiz_question_points_count_like_flags(board, learner_client, user):
    from tests.labs.factories import QuestionFactory
    from tests.leaderboard.conftest import announce

    question = QuestionFactory(points=15)
    solve = Solve.objects.create(user=user, question=question, course=question.quiz.course, points=15)
    announce(solve)
    assert _ranking(learner_client) == [(user.pk, 15)]


def test_zero_point_solves_change_nothing(board, learner_client, user):
    award(user, points=0, at=moment())
    assert _ranking(learner_client) == []
