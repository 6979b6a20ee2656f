"""Writes to the leaderboard: live updates, per-learner repairs, rebuild and catch-up.

Postgres is the truth; every function here brings Redis back in line with it.
"""

from __future__ import annotations

import datetime
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from cyberlab import redis_client
from cyberlab.accounts.models import User
from cyberlab.queue import BrokerUnavailable, enqueue
from labs.models import Solve
from leaderboard import keys, scores, store
from leaderboard.boards import Board, boards_for_solve, excluded_filter, is_excluded, week_start
from leaderboard.staging import Staging

logger = logging.getLogger(__name__)


def _name(display_name: str, username: str) -> str:
    return display_name or username


def _learner(user_id: int) -> tuple[str, bool] | None:
    """A learner's name on the boards and whether they are left off them; None when gone."""
    row = (
        User.objects.filter(pk=user_id)
        .values_list("display_name", "username", "hidden_from_leaderboard", "is_staff")
        .first()
    )
    if row is None:
        return None
    display_name, username, hidden, is_staff = row
    return _name(display_name, username), is_excluded(hidden=hidden, is_staff=is_staff)


# --- live updates -----------------------------------------------------------------


def leaderboard_apply_solve(
    *, solve_id: int, user_id: int, course_id: int, points: int, awarded_at: datetime.datetime
) -> int:
    """Adds one solve to the boards it counts on: 1 applied, 0 already applied or no effect.

    Safe to repeat: a solve already applied is recognised by the script and skipped.
    When the board is not built yet, one rebuild is queued and the solve is left to it.
    """
    learner = _learner(user_id)
    if learner is None:
        return 0
    name, excluded = learner
    result = _apply(
        solve_id=solve_id,
        user_id=user_id,
        course_id=course_id,
        points=points,
        awarded_at=awarded_at,
        name=name,
        excluded=excluded,
    )
    if result == store.NOT_BUILT:
        leaderboard_rebuild_request()
        return 0
    return result


def _apply(
    *,
    solve_id: int,
    user_id: int,
    course_id: int,
    points: int,
    awarded_at: datetime.datetime,
    name: str,
    excluded: bool,
) -> int:
    """One solve through the apply script: 1, 0, or store.NOT_BUILT."""
    boards = boards_for_solve(course_id=course_id, awarded_at=awarded_at)
    try:
        return store.apply_solve(
            solve_id=solve_id,
            user_id=user_id,
            name=name,
            points=points,
            seconds=scores.reach_seconds(awarded_at),
            boards=[(board.key, board.expire_at_ms) for board in boards],
            excluded=excluded,
        )
    except (scores.BoundExceeded, redis.ResponseError) as error:
        logger.error("Solve %s cannot be ranked exactly and is left off the board: %s", solve_id, error)
        return 0


def leaderboard_rebuild_request() -> bool:
    """Queues one rebuild; False when one is already queued or the broker is down."""
    from leaderboard.tasks import leaderboard_rebuild_task

    token = redis_client.lock_acquire(keys.rebuild_lock_key(), ttl=settings.LEADERBOARD_REBUILD_LOCK_TTL)
    if token is None:
        return False
    try:
        enqueue(leaderboard_rebuild_task)
    except BrokerUnavailable:
        # Let the next reader (or the catch-up task) try again rather than wait out the lock.
        redis_client.lock_release(keys.rebuild_lock_key(), token)
        logger.warning("Leaderboard rebuild not queued: the broker is down")
        return False
    return True


# --- one learner, recomputed from Postgres ----------------------------------------------


@dataclass(frozen=True)
class _UserState:
    name: str
    excluded: bool
    solves: tuple[tuple[int, int, int, datetime.datetime], ...]  # id, course, points, created_at


def _user_state(user_id: int) -> _UserState | None:
    learner = _learner(user_id)
    solves = tuple(
        Solve.objects.filter(user_id=user_id)
        .order_by("id")
        .values_list("id", "course_id", "points", "created_at")
    )
    name, excluded = learner or ("", False)
    return _UserState(name=name, excluded=excluded, solves=solves)


def _board_score(board: Board, solves: Iterable[tuple[int, int, int, datetime.datetime]]) -> store.BoardScore:
    points, seconds = 0, 0
    for _, course_id, solve_points, created_at in solves:
        if solve_points <= 0:
            continue
        if board.course_id is not None and course_id != board.course_id:
            continue
        if board.week is not None and week_start(created_at) != board.week:
            continue
        points += solve_points
        seconds = max(seconds, scores.reach_seconds(created_at))
    return store.BoardScore(key=board.key, points=points, seconds=seconds, expire_at_ms=board.expire_at_ms)


def leaderboard_user_refresh(*, user_id: int, course_ids: Iterable[int] = ()) -> bool:
    """Recomputes a learner's entry on every board from Postgres and writes it atomically.

    `course_ids` name boards the learner may have just left (a deleted solve's).
    Postgres is read again after the write: a solve that committed in between (and whose
    event may have landed before the write) makes it go round once more.
    False when the board is not built (the rebuild will include the learner).
    """
    state = _user_state(user_id)
    for _ in range(settings.LEADERBOARD_REFRESH_ATTEMPTS):
        boards = [Board.all_time()]
        courses = {course_id for _, course_id, _, _ in state.solves} | set(course_ids)
        boards += [Board.course(course_id) for course_id in sorted(courses)]
        boards.append(Board.weekly())
        written = store.user_set(
            user_id=user_id,
            name=state.name,
            excluded=state.excluded,
            solve_ids=[solve_id for solve_id, _, _, _ in state.solves],
            boards=[_board_score(board, state.solves) for board in boards],
        )
        if written == store.NOT_BUILT:
            return False
        again = _user_state(user_id)
        if again == state:
            return True
        state = again
    logger.warning(
        "Learner %s kept changing while the board was refreshed; the catch-up will settle it", user_id
    )
    return True


def leaderboard_user_rename(*, user_id: int, name: str) -> bool:
    return store.user_rename(user_id=user_id, name=name, board_keys=[Board.all_time().key])


# --- rebuild from Postgres -----------------------------------------------------------------


@dataclass(frozen=True)
class RebuildResult:
    learners: int
    solves: int
    courses: int
    cursor: int


class _Tally:
    """points and latest reach second per learner, for one board."""

    def __init__(self) -> None:
        self.points: dict[int, int] = defaultdict(int)
        self.seconds: dict[int, int] = defaultdict(int)

    def add(self, user_id: int, points: int, seconds: int) -> None:
        self.points[user_id] += points
        if seconds > self.seconds[user_id]:
            self.seconds[user_id] = seconds

    def entries(self):
        return ((user_id, points, self.seconds[user_id]) for user_id, points in self.points.items())


def leaderboard_rebuild() -> RebuildResult:
    """Rebuilds every board from `Solve`, swaps it in atomically, then catches up.

    Everything is read in one REPEATABLE READ snapshot, so the boards, the applied ids and
    the excluded learners agree with each other; what committed after the snapshot is
    applied by the catch-up that follows the swap.
    """
    now = timezone.now()
    settle_before = now - datetime.timedelta(seconds=settings.LEADERBOARD_CATCHUP_SETTLE)
    this_week = Board.weekly(week_start(now))
    staging = Staging(stage_ttl=settings.LEADERBOARD_REBUILD_LOCK_TTL * 10)
    outermost = not connection.in_atomic_block
    try:
        with transaction.atomic():
            if outermost:
                _repeatable_read()
            excluded = set(User.objects.filter(excluded_filter()).values_list("id", flat=True))
            overall, weekly = _Tally(), _Tally()
            courses: dict[int, _Tally] = defaultdict(_Tally)
            cursor, above_cursor, count = 0, [], 0
            solves = Solve.objects.order_by("id").values_list(
                "id", "user_id", "course_id", "points", "created_at"
            )
            for solve_id, user_id, course_id, points, created_at in solves.iterator(chunk_size=5000):
                count += 1
                if created_at < settle_before:
                    cursor = solve_id
                else:
                    above_cursor.append(solve_id)
                if points <= 0 or user_id in excluded:
                    continue
                seconds = scores.reach_seconds(created_at)
                overall.add(user_id, points, seconds)
                courses[course_id].add(user_id, points, seconds)
                if week_start(created_at) == this_week.week:
                    weekly.add(user_id, points, seconds)
            names = User.objects.filter(pk__in=Solve.objects.values("user_id")).values_list(
                "id", "display_name", "username"
            )
            staging.write_hash(
                keys.names_key(),
                (
                    (keys.member(user_id), _name(display_name, username))
                    for user_id, display_name, username in names.iterator(chunk_size=5000)
                    if user_id in overall.points
                ),
            )
        # Ids above the cursor were applied by this rebuild; ids below are covered by it.
        staging.write_applied(solve_id for solve_id in above_cursor if solve_id > cursor)
        staging.write_set(keys.excluded_key(), (keys.member(user_id) for user_id in excluded))
        staging.write_board(keys.live_key(), overall.entries())
        for course_id, tally in courses.items():
            staging.write_board(keys.course_key(course_id=course_id), tally.entries())
        staging.write_board(this_week.key, weekly.entries(), this_week.expire_at_ms)
        staging.swap(cursor=cursor)
    except BaseException:
        redis_client.fallback(staging.discard, None)
        raise
    redis_client.fallback(lambda: redis_client.delete(keys.rebuild_lock_key()), 0)
    leaderboard_catch_up()
    logger.info("Leaderboard rebuilt: %d learners from %d solves", len(overall.points), count)
    return RebuildResult(learners=len(overall.points), solves=count, courses=len(courses), cursor=cursor)


def _repeatable_read() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


# --- catch-up -----------------------------------------------------------------------


@dataclass(frozen=True)
class CatchUpResult:
    applied: int
    cursor: int
    refreshed: int
    rebuilt: bool = False


def leaderboard_catch_up() -> CatchUpResult:
    """Applies every solve after the cursor the board has not seen, then advances the cursor.

    Repairs what a Redis outage (or a crash between commit and event) lost. The cursor only
    moves past solves older than LEADERBOARD_CATCHUP_SETTLE, so a transaction still open
    when this runs cannot commit a solve below it. It also re-checks who is left out, in
    case a hide or un-hide happened while Redis was unreachable.
    """
    cursor = store.read_cursor()
    if cursor is None:
        result = leaderboard_rebuild()
        return CatchUpResult(applied=0, cursor=result.cursor, refreshed=0, rebuilt=True)
    settle_before = timezone.now() - datetime.timedelta(seconds=settings.LEADERBOARD_CATCHUP_SETTLE)
    applied, last_seen, new_cursor = 0, cursor, cursor
    while True:
        batch = list(
            Solve.objects.filter(id__gt=last_seen)
            .order_by("id")
            .values_list(
                "id",
                "user_id",
                "course_id",
                "points",
                "created_at",
                "user__display_name",
                "user__username",
                "user__hidden_from_leaderboard",
                "user__is_staff",
            )[: settings.LEADERBOARD_CATCHUP_BATCH]
        )
        for solve_id, user_id, course_id, points, created_at, display_name, username, hidden, staff in batch:
            result = _apply(
                solve_id=solve_id,
                user_id=user_id,
                course_id=course_id,
                points=points,
                awarded_at=created_at,
                name=_name(display_name, username),
                excluded=is_excluded(hidden=hidden, is_staff=staff),
            )
            if result == store.NOT_BUILT:
                rebuilt = leaderboard_rebuild()
                return CatchUpResult(applied=applied, cursor=rebuilt.cursor, refreshed=0, rebuilt=True)
            applied += result
            if created_at < settle_before:
                new_cursor = solve_id
        if len(batch) < settings.LEADERBOARD_CATCHUP_BATCH:
            break
        last_seen = batch[-1][0]
    if new_cursor > cursor:
        store.advance_cursor(solve_id=new_cursor)
    refreshed = _reconcile_excluded()
    if applied or refreshed:
        logger.info("Leaderboard caught up: %d solves applied, %d learners refreshed", applied, refreshed)
    return CatchUpResult(applied=applied, cursor=max(cursor, new_cursor), refreshed=refreshed)


def _reconcile_excluded() -> int:
    with redis_client.connection() as client:
        in_redis = {int(value) for value in client.smembers(keys.excluded_key())}
    in_postgres = set(User.objects.filter(excluded_filter()).values_list("id", flat=True))
    changed = in_redis ^ in_postgres
    for user_id in sorted(changed):
        leaderboard_user_refresh(user_id=user_id)
    return len(changed)


def leaderboard_flush_pending(*, refreshes: dict[int, set[int]]) -> None:
    """Refreshes learners whose solves were deleted or whose visibility changed.

    A bulk deletion (a course or a learner with many solves) is cheaper as one rebuild.
    """
    if len(refreshes) > settings.LEADERBOARD_REFRESH_MAX_LEARNERS:
        leaderboard_rebuild_request()
        return
    for user_id, course_ids in sorted(refreshes.items()):
        leaderboard_user_refresh(user_id=user_id, course_ids=course_ids)
