"""Reads of the leaderboard: from Redis when it is there, from Postgres otherwise.

Pages and my-rank read the live sorted sets, so a solve shows on the next request. The
full standings are the `leaderboard:all` snapshot. When Redis is down the same answers
are computed from Postgres; when the boards are missing (a flushed Redis) too, and one
rebuild is queued -- never run on the request path.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from django.conf import settings
from django.db.models import Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf, TruncSecond

from cyberlab import redis_client
from cyberlab.accounts.models import User
from labs.models import Solve
from leaderboard import keys, services, snapshot, store
from leaderboard.boards import Board, excluded_filter

T = TypeVar("T")


@dataclass(frozen=True)
class Standing:
    rank: int
    user_id: int
    display_name: str
    points: int
    last_scored_at: datetime.datetime


class StandingsPage(NamedTuple):
    """How many learners the board has, and the standings of one page: the pair
    `cyberlab.api.Pagination.paginate_fetched` asks for."""

    count: int
    results: list[Standing]


@dataclass(frozen=True)
class MyStanding:
    rank: int | None
    points: int
    last_scored_at: datetime.datetime | None
    count: int
    around: list[Standing] = field(default_factory=list)


def _standings(rows: list[store.Row], first_rank: int) -> list[Standing]:
    return [
        Standing(first_rank + index, row.user_id, row.name, row.points, row.reached_at)
        for index, row in enumerate(rows)
    ]


def _live(read: Callable[[], T | None]) -> T | None:
    """What `read` finds on the live boards, or None for the caller to answer from Postgres.

    None when Redis is down, or when the boards are not built: then one rebuild is queued.
    """
    try:
        found = read()
    except redis_client.RedisUnavailable:
        return None
    if found is None:
        redis_client.fallback(services.leaderboard_rebuild_request, False)
    return found


# --- Postgres: the truth, and the answer when Redis cannot give one ------------------------


def leaderboard_ranking(*, board: Board) -> QuerySet:
    """The board as one grouped query, in board order (points, reach second, user id)."""
    return (
        Solve.objects.filter(points__gt=0)
        .filter(board.solve_filter())
        .exclude(excluded_filter("user__"))
        .values("user_id")
        .annotate(
            total=Sum("points"),
            reached_at=TruncSecond(Max("created_at")),
            name=Coalesce(NullIf("user__display_name", Value("")), "user__username"),
        )
        .order_by("-total", "reached_at", "user_id")
    )


def _postgres_standings(rows, first_rank: int) -> list[Standing]:
    return [
        Standing(first_rank + index, row["user_id"], row["name"], row["total"], row["reached_at"])
        for index, row in enumerate(rows)
    ]


def leaderboard_page_from_postgres(*, board: Board, limit: int | None, offset: int = 0) -> StandingsPage:
    """`leaderboard_page` computed from Postgres alone (`limit` None: every standing)."""
    ranking = leaderboard_ranking(board=board)
    rows = list(ranking[offset : offset + limit] if limit is not None else ranking[offset:])
    count = ranking.count() if limit is not None or offset else len(rows)
    return StandingsPage(count=count, results=_postgres_standings(rows, offset + 1))


def leaderboard_me_from_postgres(
    *, user: User, board: Board | None = None, radius: int | None = None
) -> MyStanding:
    """`leaderboard_me` computed from Postgres alone."""
    board = board or Board.all_time()
    radius = settings.LEADERBOARD_AROUND if radius is None else radius
    ranking = leaderboard_ranking(board=board)
    mine = ranking.filter(user_id=user.pk).first()
    count = ranking.count()
    if mine is None:
        return MyStanding(rank=None, points=_points_off_board(board, user), last_scored_at=None, count=count)
    points, reached_at = mine["total"], mine["reached_at"]
    ahead = ranking.filter(
        Q(total__gt=points)
        | Q(total=points, reached_at__lt=reached_at)
        | Q(total=points, reached_at=reached_at, user_id__lt=user.pk)
    ).count()
    start = max(0, ahead - radius)
    rows = ranking[start : ahead + radius + 1]
    return MyStanding(
        rank=ahead + 1,
        points=points,
        last_scored_at=reached_at,
        count=count,
        around=_postgres_standings(rows, start + 1),
    )


def _points_off_board(board: Board, user: User) -> int:
    """A learner's own points on a board they are not shown on (hidden, staff or none)."""
    total = (
        Solve.objects.filter(user=user, points__gt=0)
        .filter(board.solve_filter())
        .aggregate(total=Sum("points"))
    )
    return total["total"] or 0


# --- reads --------------------------------------------------------------------------


def leaderboard_page(*, board: Board, limit: int, offset: int = 0) -> StandingsPage:
    """`limit` standings from rank `offset + 1`, and how many learners the board has."""
    found = _live(lambda: _live_page(board, limit, offset))
    if found is not None:
        return found
    return leaderboard_page_from_postgres(board=board, limit=limit, offset=offset)


def leaderboard_live_page(*, board: Board, limit: int, offset: int = 0) -> StandingsPage | None:
    """The page from the live board; None when Redis cannot answer (then the caller asks
    Postgres, and a rebuild is queued if the board is missing)."""
    return _live(lambda: _live_page(board, limit, offset))


def leaderboard_live_me(*, user: User, board: Board, radius: int) -> MyStanding | None:
    """My standing from the live board; None when Redis cannot answer."""
    return _live(lambda: _live_me(board, user, radius))


def _live_page(board: Board, limit: int, offset: int) -> StandingsPage | None:
    """A page of the live board (one round trip); None when it is not built."""
    found = store.page(board=board.key, start=offset, stop=offset + limit - 1)
    if found is None:
        return None
    count, rows = found
    return StandingsPage(count=count, results=_standings(rows, offset + 1))


def leaderboard_me(*, user: User, board: Board | None = None, radius: int | None = None) -> MyStanding:
    """My rank (None when I am not on the board), my points and the standings around me."""
    board = board or Board.all_time()
    radius = settings.LEADERBOARD_AROUND if radius is None else radius
    found = _live(lambda: _live_me(board, user, radius))
    if found is not None:
        return found
    return leaderboard_me_from_postgres(user=user, board=board, radius=radius)


def _live_me(board: Board, user: User, radius: int) -> MyStanding | None:
    """My standing from the live board (one round trip); None when it is not built."""
    found = store.around(board=board.key, user_id=user.pk, radius=radius)
    if found is None:
        return None
    count, rank, start, rows = found
    if rank is None:
        return MyStanding(rank=None, points=_points_off_board(board, user), last_scored_at=None, count=count)
    around = _standings(rows, start + 1)
    me = around[rank - start]
    return MyStanding(
        rank=rank + 1, points=me.points, last_scored_at=me.last_scored_at, count=count, around=around
    )


# --- the full standings: the snapshot ---------------------------------------------------


def leaderboard_standings(*, defer: Callable[[Callable[[], None]], None] | None = None) -> bytes:
    """The full global standings as the JSON body of a page holding all of them.

    Served from the `leaderboard:all` snapshot. A solve marks it stale, and it is also
    refreshed a little before its TTL runs out. One reader at a time (a short lock)
    rebuilds it; the others keep getting the previous snapshot. Given `defer` (a way to
    run work once the response is sent), the rebuilding reader is served the previous
    snapshot too and rebuilds after its response, so no request waits for a rebuild
    unless there is no snapshot at all.
    """
    try:
        stored = snapshot.read()
    except redis_client.RedisUnavailable:
        return _full_standings_body()
    refresh_at_ms = settings.LEADERBOARD_SNAPSHOT_REFRESH_AHEAD * 1000
    if stored.body is not None and not stored.stale and stored.ttl_ms > refresh_at_ms:
        return stored.body
    try:
        token = redis_client.lock_acquire(
            keys.snapshot_lock_key(), ttl=settings.LEADERBOARD_SNAPSHOT_LOCK_TTL
        )
    except redis_client.RedisUnavailable:
        token = None
    if token is None:
        return stored.body if stored.body is not None else _full_standings_body()
    if stored.body is not None and defer is not None:
        defer(lambda: _snapshot_refresh(token))
        return stored.body
    return _snapshot_refresh(token)


def leaderboard_standings_from_postgres() -> bytes:
    """`leaderboard_standings` computed from Postgres alone, snapshot left alone."""
    return snapshot.render(leaderboard_page_from_postgres(board=Board.all_time(), limit=None).results)


def _full_standings_body() -> bytes:
    """Every standing of the global board, read from the live set (Postgres when missing)."""
    found = _live(lambda: store.page_all(board=keys.live_key()))
    if found is None:
        return leaderboard_standings_from_postgres()
    _count, rows = found
    return snapshot.render(_standings(rows, 1))


def _snapshot_refresh(token: str) -> bytes:
    """Rebuilds and stores the snapshot under the lock `token` holds, then frees it."""
    body = None
    try:
        # Cleared before reading the board: a solve landing meanwhile marks it stale again.
        snapshot.clear_stale()
        body = _full_standings_body()
        snapshot.write(body=body, ttl=settings.LEADERBOARD_CACHE_TTL)
    except redis_client.RedisUnavailable:
        if body is None:
            body = _full_standings_body()
    finally:
        redis_client.fallback(lambda: redis_client.lock_release(keys.snapshot_lock_key(), token), None)
    return body
