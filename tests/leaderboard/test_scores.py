"""The score encoding: exact at its bounds, refusing what it cannot hold."""

from __future__ import annotations

import datetime

import pytest

from leaderboard import scores

LAST_SECOND = scores.EPOCH + datetime.timedelta(seconds=scores.MAX_SECONDS)


def test_encoding_round_trips_at_the_bounds():
    for points, seconds in [
        (1, 0),
        (scores.MAX_POINTS, 0),
        (scores.MAX_POINTS, scores.MAX_SECONDS),
        (1, scores.MAX_SECONDS),
    ]:
        score = scores.encode(points=points, seconds=seconds)
        assert abs(score) < 2**53
        assert float(score) == score  # exact in a double
        assert scores.decode(float(score)) == (points, scores.EPOCH + datetime.timedelta(seconds=seconds))


def test_encoding_refuses_values_beyond_the_bound():
    with pytest.raises(scores.BoundExceeded):
        scores.encode(points=scores.MAX_POINTS + 1, seconds=0)
    with pytest.raises(scores.BoundExceeded):
        scores.encode(points=0, seconds=0)
    with pytest.raises(scores.BoundExceeded):
        scores.reach_seconds(LAST_SECOND + datetime.timedelta(seconds=1))
    with pytest.raises(scores.BoundExceeded):
        scores.reach_seconds(scores.EPOCH - datetime.timedelta(seconds=1))
    assert scores.reach_seconds(LAST_SECOND) == scores.MAX_SECONDS
