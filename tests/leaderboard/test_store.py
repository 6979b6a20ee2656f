"""The live boards' scripts, against the real Redis."""

from __future__ import annotations

import datetime

import pytest

from leaderboard import keys, store
from leaderboard.scores import EPOCH, MAX_POINTS, MAX_SECONDS

pytestmark = pytest.mark.django_db

LAST_SECOND = EPOCH + datetime.timedelta(seconds=MAX_SECONDS)


def _apply(solve_id, user_id, points, seconds, *, name="x"):
    return store.apply_solve(
        solve_id=solve_id,
        user_id=user_id,
        name=name,
        points=points,
        seconds=seconds,
        boards=[(keys.live_key(), 0)],
    )


@pytest.fixture
def built(redis):
    redis.set(keys.cursor_key(), 0)


def test_redis_orders_learners_exactly_at_the_bound(built, redis):
    # given learners at the largest points and the last representable seconds, one second
    # and one point apart, applied through the Lua script
    _apply(1, 10, MAX_POINTS, MAX_SECONDS)  # max points, latest
    _apply(2, 11, MAX_POINTS, MAX_SECONDS - 1)  # max points, a second earlier
    _apply(3, 12, MAX_POINTS - 1, 0)  # one point fewer, earliest possible
    _apply(4, 9, MAX_POINTS, MAX_SECONDS)  # ties with user 10: lower id first
    # when the board is read
    _count, rows = store.page(board=keys.live_key(), start=0, stop=-1)
    # then the order is exact and every score decodes to what was written
    assert [row.user_id for row in rows] == [11, 9, 10, 12]
    assert [row.points for row in rows] == [MAX_POINTS] * 3 + [MAX_POINTS - 1]
    assert rows[0].reached_at == LAST_SECOND - datetime.timedelta(seconds=1)
    assert rows[1].reached_at == LAST_SECOND
    assert rows[3].reached_at == EPOCH


def test_the_script_refuses_to_go_beyond_the_bound(built, redis):
    # given a learner at the maximum
    _apply(1, 10, MAX_POINTS, 100)
    # when one more point arrives, then the script refuses and the entry keeps its exact value
    with pytest.raises(Exception, match="bound exceeded"):
        _apply(2, 10, 1, 200)
    assert store.page(board=keys.live_key(), start=0, stop=0)[1][0].points == MAX_POINTS


def test_adding_points_keeps_the_latest_reach_time_whatever_the_order(built):
    # given a later solve applied before an earlier one
    _apply(2, 10, 50, 2000)
    _apply(1, 10, 30, 1000)
    # then points add up and the reach time is the later one
    row = store.page(board=keys.live_key(), start=0, stop=0)[1][0]
    assert row.points == 80
    assert row.reached_at == EPOCH + datetime.timedelta(seconds=2000)


def test_a_replayed_solve_is_applied_once(built):
    assert _apply(7, 10, 50, 1000) == 1
    assert _apply(7, 10, 50, 1000) == 0
    assert store.page(board=keys.live_key(), start=0, stop=0)[1][0].points == 50


def test_a_solve_at_or_below_the_cursor_is_taken_as_applied(redis):
    redis.set(keys.cursor_key(), 20)
    assert _apply(20, 10, 50, 1000) == 0
    assert _apply(21, 10, 50, 1000) == 1


def test_no_update_without_a_built_board(redis):
    # given no cursor (a flushed Redis)
    # when a solve arrives, then it is refused and the snapshot marked stale
    assert _apply(1, 10, 50, 1000) == store.NOT_BUILT
    assert redis.exists(keys.live_key()) == 0
    assert redis.get(keys.stale_key()) == b"1"


def test_advancing_the_cursor_trims_the_applied_ids(built, redis):
    for solve_id in (3, 5, 9):
        _apply(solve_id, 10, 1, 1)
    store.advance_cursor(solve_id=5)
    assert redis.get(keys.cursor_key()) == b"5"
    assert redis.zrange(keys.applied_key(), 0, -1) == [b"9"]
    # and a cursor never moves back
    store.advance_cursor(solve_id=4)
    assert redis.get(keys.cursor_key()) == b"5"
