"""Which boards exist and which solves count on each: global, per course, per week."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from leaderboard import keys


def week_start(moment: datetime.datetime) -> datetime.date:
    """The Monday (UTC) of the week `moment` falls in."""
    day = moment.astimezone(datetime.UTC).date()
    return day - datetime.timedelta(days=day.weekday())


def week_start_at(start: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(start, datetime.time.min, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Board:
    """One ranking: all solves (global), one course's, or one week's (Monday 00:00 UTC on)."""

    course_id: int | None = None
    week: datetime.date | None = None

    @classmethod
    def all_time(cls) -> Board:
        return cls()

    @classmethod
    def course(cls, course_id: int) -> Board:
        return cls(course_id=course_id)

    @classmethod
    def weekly(cls, week: datetime.date | None = None) -> Board:
        return cls(week=week or week_start(timezone.now()))

    @property
    def is_global(self) -> bool:
        return self.course_id is None and self.week is None

    @property
    def key(self) -> str:
        if self.course_id is not None:
            return keys.course_key(course_id=self.course_id)
        if self.week is not None:
            return keys.weekly_key(week_start=self.week)
        return keys.live_key()

    @property
    def since(self) -> datetime.datetime | None:
        return week_start_at(self.week) if self.week else None

    @property
    def expire_at_ms(self) -> int:
        """Weekly boards live until their week is over plus a grace period; others forever."""
        if self.week is None:
            return 0
        end = week_start_at(self.week) + datetime.timedelta(days=7)
        return int((end.timestamp() + settings.LEADERBOARD_WEEKLY_GRACE) * 1000)

    def solve_filter(self, prefix: str = "") -> Q:
        """The solves that count on this board (`prefix` for a related lookup)."""
        condition = Q()
        if self.course_id is not None:
            condition &= Q(**{f"{prefix}course_id": self.course_id})
        if self.week is not None:
            start = week_start_at(self.week)
            condition &= Q(**{f"{prefix}created_at__gte": start}) & Q(
                **{f"{prefix}created_at__lt": start + datetime.timedelta(days=7)}
            )
        return condition


def boards_for_solve(*, course_id: int, awarded_at: datetime.datetime) -> list[Board]:
    """The boards a solve counts on, global first.

    Only this week's board is kept live (it is the only one served), so a late event
    for last week's solve never recreates part of a board a rebuild has dropped.
    """
    boards = [Board.all_time(), Board.course(course_id)]
    if week_start(awarded_at) == week_start(timezone.now()):
        boards.append(Board.weekly())
    return boards


def is_excluded(*, hidden: bool, is_staff: bool) -> bool:
    return hidden or (is_staff and not settings.LEADERBOARD_INCLUDE_STAFF)


def excluded_filter(prefix: str = "") -> Q:
    """Users left out of every board."""
    condition = Q(**{f"{prefix}hidden_from_leaderboard": True})
    if not settings.LEADERBOARD_INCLUDE_STAFF:
        condition |= Q(**{f"{prefix}is_staff": True})
    return condition
