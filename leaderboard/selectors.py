"""Reads of the leaderboard: from Redis when it is there, from Postgres otherwise.

Pages and my-rank read the live sorted sets, so a solve shows on the next request. The
full standings are the `leaderboard:all` snapshot. When Redis is down the same answers
are computed from Postgres; when the boards are missing (a flushed Redis) too, and one
rebuild is queued -- never run on the request path.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db.models import Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf, TruncSecond
from rest_framework.utils.encoders import JSONEncoder

from cyberlab import nearcache, redis_client
from cyberlab.accounts.models import User
from labs.models import Solve
from leaderboard import services, store
from leaderboard.boards import Board, excluded_filter

T = TypeVar("T")


@dataclass(frozen=True)
class Standing:
    rank: int
    user_id: int
    display_name: str
    points: int
    last_scored_at: datetime.datetime

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "user_id": self.user_id,
            "display_name": self.display_name,
            "points": self.points,
            "last_scored_at": self.last_scored_at,
        }


@dataclass(frozen=True)
class StandingsPage:
    count: int
    results: list[Standing]


@dataclass(frozen=True)
class MyStanding:
    rank: int | None
    points: int
    last_scored_at: datetime.datetime | None
    count: int
    around: list[Standing] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "points": self.points,
            "last_scored_at": self.last_scored_at,
            "count": self.count,
            "around": [standing.as_dict() for standing in self.around],
        }


def _standings(rows: list[store.Row], first_rank: int) -> list[Standing]:
    return [
        Standing(first_rank + index, row.user_id, row.name, row.points, row.reached_at)
        for index, row in enumerate(rows)
    ]


def _request_rebuild() -> None:
    redis_client.fallback(services.leaderboard_rebuild_request, False)


def _live(read: Callable[[], T | None]) -> T | None:
    """What `read` finds on the live boards, or None for the caller to answer from Postgres.

    None when Redis is down, or when the boards are not built: then one rebuild is queued.
    """
    try:
        found = read()
    except redis_client.RedisUnavailable:
        return None
    if found is None:
        _request_rebuild()
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


def _postgres_page(board: Board, limit: int | None, offset: int) -> StandingsPage:
    ranking = leaderboard_ranking(board=board)
    rows = list(ranking[offset : offset + limit] if limit is not None else ranking[offset:])
    count = ranking.count() if limit is not None or offset else len(rows)
    return StandingsPage(count=count, results=_postgres_standings(rows, offset + 1))


def _postgres_me(board: Board, user: User, radius: int) -> MyStanding:
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


def leaderboard_page(
    *, board: Board, limit: int, offset: int = 0, postgres_only: bool = False
) -> StandingsPage:
    """`limit` standings from rank `offset + 1`, and how many learners the board has."""
    if not postgres_only:
        found = _live(lambda: _live_page(board, limit, offset))
        if found is not None:
            return found
    return _postgres_page(board, limit, offset)


def _live_page(board: Board, limit: int, offset: int) -> StandingsPage | None:
    """A page of the live board; None when it is not built."""
    found = store.page(board=board.key, start=offset, stop=offset + limit - 1)
    if found is None:
        return None
    count, rows = found
    return StandingsPage(count=count, results=_standings(rows, offset + 1))


def leaderboard_me(
    *, user: User, board: Board | None = None, radius: int | None = None, postgres_only: bool = False
) -> MyStanding:
    """My rank (None when I am not on the board), my points and the standings around me."""
    board = board or Board.all_time()
    radius = settings.LEADERBOARD_AROUND if radius is None else radius
    if not postgres_only:
        found = _live(lambda: _live_me(board, user, radius))
        if found is not None:
            return found
    return _postgres_me(board, user, radius)


def _live_me(board: Board, user: User, radius: int) -> MyStanding | None:
    """My standing from the live board; None when it is not built."""
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


def leaderboard_page_json(
    *, board: Board, limit: int, offset: int = 0, postgres_only: bool = False
) -> tuple[int, bytes]:
    """`leaderboard_page` as (count, the standings as a JSON array).

    The live page is kept rendered in the near cache until one of the keys it was read
    from changes (`store.board_deps`), so the most read answer costs no work per request.
    """
    if not postgres_only:

        def render() -> tuple[int, bytes] | None:
            page = _live_page(board, limit, offset)
            return None if page is None else (page.count, _standings_json(page.results))

        found = _live(
            lambda: nearcache.read(
                f"{board.key}:page:{offset}:{limit}:json",
                render,
                deps=store.board_deps(board.key),
                keep=lambda rendered: rendered is not None,
            )
        )
        if found is not None:
            return found
    page = _postgres_page(board, limit, offset)
    return page.count, _standings_json(page.results)


def leaderboard_me_json(*, user: User, postgres_only: bool = False) -> bytes:
    """`leaderboard_me` on the global board as its JSON body.

    Kept rendered in the near cache until the board changes, for a learner on the live
    board (one off it is answered with their points from Postgres, never kept).
    """
    board, radius = Board.all_time(), settings.LEADERBOARD_AROUND
    if not postgres_only:

        def render() -> tuple[bool, bytes] | None:
            standing = _live_me(board, user, radius)
            return None if standing is None else (standing.rank is not None, as_json(standing.as_dict()))

        found = _live(
            lambda: nearcache.read(
                f"{board.key}:me:{user.pk}:{radius}:json",
                render,
                deps=store.board_deps(board.key),
                keep=lambda rendered: rendered is not None and rendered[0],
            )
        )
        if found is not None:
            return found[1]
    return as_json(_postgres_me(board, user, radius).as_dict())


def _standings_json(standings: list[Standing]) -> bytes:
    return as_json([standing.as_dict() for standing in standings])


def as_json(value) -> bytes:
    """As DRF's JSON renderer writes it."""
    return json.dumps(value, cls=JSONEncoder, separators=(",", ":"), ensure_ascii=False).encode()


def _timestamp(moment: datetime.datetime) -> str:
    """As DRF renders a UTC datetime, without the encoder's per-value fallback."""
    return moment.isoformat().replace("+00:00", "Z")


def _standings_body(page: StandingsPage) -> bytes:
    results = [
        {
            "rank": standing.rank,
            "user_id": standing.user_id,
            "display_name": standing.display_name,
            "points": standing.points,
            "last_scored_at": _timestamp(standing.last_scored_at),
        }
        for standing in page.results
    ]
    body = {"count": page.count, "next": None, "previous": None, "results": results}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _full_from_live() -> bytes:
    """Every standing of the global board, read from the live set (Postgres when missing)."""
    found = _live(lambda: store.page_all(board=store.live_key()))
    if found is None:
        return _standings_body(_postgres_page(Board.all_time(), None, 0))
    count, rows = found
    return _standings_body(StandingsPage(count=count, results=_standings(rows, 1)))


def leaderboard_standings(
    *, postgres_only: bool = False, defer: Callable[[Callable[[], None]], None] | None = None
) -> bytes:
    """The full global standings as the JSON body of a page holding all of them.

    Served from the `leaderboard:all` snapshot. A solve marks it stale, and it is also
    refreshed a little before its TTL runs out. One reader at a time (a short lock)
    rebuilds it; the others keep getting the previous snapshot. Given `defer` (a way to
    run work once the response is sent), the rebuilding reader is served the previous
    snapshot too and rebuilds after its response, so no request waits for a rebuild
    unless there is no snapshot at all.
    """
    if postgres_only:
        return _standings_body(_postgres_page(Board.all_time(), None, 0))
    try:
        snapshot = store.snapshot_read()
    except redis_client.RedisUnavailable:
        return _full_from_live()
    refresh_at_ms = settings.LEADERBOARD_SNAPSHOT_REFRESH_AHEAD * 1000
    if snapshot.body is not None and not snapshot.stale and snapshot.ttl_ms > refresh_at_ms:
        return snapshot.body
    try:
        token = redis_client.lock_acquire(
            store.snapshot_lock_key(), ttl=settings.LEADERBOARD_SNAPSHOT_LOCK_TTL
        )
    except redis_client.RedisUnavailable:
        token = None
    if token is None:
        return snapshot.body if snapshot.body is not None else _full_from_live()
    if snapshot.body is not None and defer is not None:
        defer(lambda: _snapshot_refresh(token))
        return snapshot.body
    return _snapshot_refresh(token)


def _snapshot_refresh(token: str) -> bytes:
    """Rebuilds and stores the snapshot under the lock `token` holds, then frees it."""
    body = None
    try:
        # Cleared before reading the board: a solve landing meanwhile marks it stale again.
        store.clear_stale()
        body = _full_from_live()
        store.snapshot_write(body=body, ttl=settings.LEADERBOARD_CACHE_TTL)
    except redis_client.RedisUnavailable:
        if body is None:
            body = _full_from_live()
    finally:
        redis_client.fallback(lambda: redis_client.lock_release(store.snapshot_lock_key(), token), None)
    return body
