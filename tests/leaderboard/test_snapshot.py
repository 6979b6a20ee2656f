"""The `leaderboard:all` snapshot: the full standings, cached, rebuilt once when stale."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from cyberlab import redis_client
from leaderboard import keys, selectors
from tests.factories import UserFactory
from tests.leaderboard.conftest import award, moment

pytestmark = pytest.mark.django_db


def _full(client):
    response = client.get(reverse("leaderboard"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return json.loads(response.content)


def test_reading_the_board_stores_the_snapshot_redis_cli_shows(board, learner_client, user, redis, settings):
    # given
    award(user, points=30, at=moment())
    # when the full standings are read
    body = _full(learner_client)
    # then GET leaderboard:all holds them as JSON, with the configured TTL
    assert json.loads(redis.get("leaderboard:all")) == body
    assert body["count"] == 1
    assert body["next"] is None
    assert body["previous"] is None
    assert body["results"][0]["user_id"] == user.pk
    assert (
        settings.LEADERBOARD_CACHE_TTL - 2 <= redis.ttl("leaderboard:all") <= settings.LEADERBOARD_CACHE_TTL
    )


def test_a_solve_marks_the_snapshot_stale_and_the_next_reader_rebuilds_it(board, learner_client, user, redis):
    # given a snapshot
    award(user, points=30, at=moment())
    _full(learner_client)
    assert not redis.exists(keys.stale_key())
    # when another learner scores
    rival = UserFactory()
    award(rival, points=50, at=moment())
    assert redis.exists(keys.stale_key())
    # then the next reader is answered at once from the previous snapshot and rebuilds
    # it right after its response; the snapshot and every later reader have the solve
    assert [row["user_id"] for row in _full(learner_client)["results"]] == [user.pk]
    assert json.loads(redis.get("leaderboard:all"))["count"] == 2
    assert not redis.exists(keys.stale_key())
    body = _full(learner_client)
    assert [row["user_id"] for row in body["results"]] == [rival.pk, user.pk]


def test_while_one_reader_rebuilds_the_others_get_the_previous_snapshot(board, learner_client, user, redis):
    # given a snapshot that a solve made stale
    award(user, points=30, at=moment())
    previous = _full(learner_client)
    award(UserFactory(), points=50, at=moment())
    # when another reader holds the rebuild lock
    token = redis_client.lock_acquire(keys.snapshot_lock_key(), ttl=10)
    # then this reader is served the previous snapshot at once, without waiting
    assert _full(learner_client) == previous
    # and once the lock is free the next reader rebuilds it
    redis_client.lock_release(keys.snapshot_lock_key(), token)
    _full(learner_client)
    assert json.loads(redis.get("leaderboard:all"))["count"] == 2
    assert _full(learner_client)["count"] == 2


def test_without_any_snapshot_a_reader_that_lost_the_lock_reads_the_live_board(
    board, learner_client, user, redis
):
    award(user, points=30, at=moment())
    redis_client.lock_acquire(keys.snapshot_lock_key(), ttl=10)
    assert _full(learner_client)["count"] == 1
    assert not redis.exists("leaderboard:all")


def test_without_a_way_to_defer_the_rebuilding_reader_gets_the_new_standings(board, user):
    award(user, points=30, at=moment())
    selectors.leaderboard_standings()
    award(UserFactory(), points=50, at=moment())
    assert json.loads(selectors.leaderboard_standings())["count"] == 2


def test_the_first_reader_of_an_empty_cache_builds_it_on_its_request(board, learner_client, user, redis):
    award(user, points=30, at=moment())
    assert _full(learner_client)["count"] == 1
    assert json.loads(redis.get("leaderboard:all"))["count"] == 1


def test_the_snapshot_is_refreshed_before_it_expires(board, user, redis, settings):
    # given a snapshot close to its end (inside the refresh-ahead window)
    award(user, points=30, at=moment())
    selectors.leaderboard_standings()
    redis.pexpire("leaderboard:all", (settings.LEADERBOARD_SNAPSHOT_REFRESH_AHEAD - 1) * 1000)
    # when read, then it is rebuilt with a full TTL
    selectors.leaderboard_standings()
    assert redis.ttl("leaderboard:all") > settings.LEADERBOARD_SNAPSHOT_REFRESH_AHEAD


def test_a_fresh_snapshot_is_served_as_stored(board, user, redis):
    award(user, points=30, at=moment())
    selectors.leaderboard_standings()
    redis.set("leaderboard:all", b'{"count":0,"next":null,"previous":null,"results":[]}', keepttl=True)
    assert selectors.leaderboard_standings() == b'{"count":0,"next":null,"previous":null,"results":[]}'


def test_a_page_with_a_limit_reads_the_live_board_not_the_snapshot(board, learner_client, user, redis):
    award(user, points=30, at=moment())
    _full(learner_client)
    redis.set("leaderboard:all", b'{"count":0,"next":null,"previous":null,"results":[]}', keepttl=True)
    page = learner_client.get(reverse("leaderboard"), {"limit": 500}).json()
    assert page["count"] == 1
