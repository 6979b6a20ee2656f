"""Helpers for the leaderboard tests: solves awarded the way `labs` announces them."""

from __future__ import annotations

import datetime
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from cyberlab import redis_client
from labs.models import Solve
from labs.signals import points_awarded
from leaderboard import services
from tests.conftest import dead_redis_caches
from tests.labs.factories import CourseFactory, FlagFactory, LabFactory, SolveFactory


def award(
    user, *, points: int = 100, at: datetime.datetime | None = None, course=None, send: bool = True
) -> Solve:
    """A new solve for `user`, dated `at`, announced with points_awarded as `labs` does."""
    lab = LabFactory(course=course) if course is not None else LabFactory()
    solve = SolveFactory(user=user, flag=FlagFactory(lab=lab, points=points))
    if at is not None:
        Solve.objects.filter(pk=solve.pk).update(created_at=at)
        solve.refresh_from_db()
    if send:
        announce(solve)
    return solve


def announce(solve: Solve) -> None:
    points_awarded.send(
        sender=Solve,
        solve_id=solve.pk,
        user_id=solve.user_id,
        source=solve.source,
        course_id=solve.course_id,
        points=solve.points,
        awarded_at=solve.created_at,
    )


def moment(minutes: int = 0, seconds: int = 0) -> datetime.datetime:
    """A fixed time this week (so weekly boards count it), shifted by the given amount."""
    now = timezone.now().replace(microsecond=0)
    monday = (now - datetime.timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0)
    return monday + datetime.timedelta(hours=1, minutes=minutes, seconds=seconds)


@pytest.fixture
def board(db):
    """An empty, built board: live updates apply to it."""
    services.leaderboard_rebuild()


@pytest.fixture
def course(db):
    return CourseFactory(slug="web")


@contextmanager
def dead_redis():
    """Redis refuses every connection inside; outside it answers again at once."""
    try:
        with override_settings(CACHES=dead_redis_caches()):
            yield
    finally:
        redis_client.incident.recover()


def broker_queue_length() -> int:
    from django_redis import get_redis_connection

    broker = get_redis_connection("default").from_url(settings.CELERY_BROKER_URL)
    return broker.llen("celery")
