"""Keeps the boards in step with Postgres: solves awarded or deleted, learners hidden or renamed."""

from __future__ import annotations

import logging
import operator
import threading

from django.db import transaction
from django.db.models.signals import post_delete, post_init, post_save
from django.dispatch import receiver

from cyberlab.accounts.models import User
from cyberlab.redis_client import RedisUnavailable
from labs.models import Solve
from labs.signals import points_awarded
from leaderboard import live, services
from leaderboard.boards import is_excluded

logger = logging.getLogger(__name__)

# What a user save must change to concern the leaderboard.
_TRACKED = ("hidden_from_leaderboard", "is_staff", "display_name", "username")


@receiver(points_awarded, dispatch_uid="leaderboard.points_awarded")
def _on_points_awarded(sender, *, solve_id, user_id, course_id, points, awarded_at, **kwargs) -> None:
    try:
        services.leaderboard_apply_solve(
            solve_id=solve_id, user_id=user_id, course_id=course_id, points=points, awarded_at=awarded_at
        )
    except RedisUnavailable:
        # The learner's request must not fail after the solve committed; the catch-up
        # task applies it from the cursor once Redis answers.
        logger.info("Solve %s left to the leaderboard catch-up: Redis is unavailable", solve_id)
    live.leaderboard_announce_solve(solve_id=solve_id, user_id=user_id, points=points)


_tracked_values = operator.itemgetter(*_TRACKED)


def _seen(user: User) -> tuple | None:
    # Runs for every user loaded, signed-in requests included: kept to one lookup.
    try:
        return _tracked_values(user.__dict__)
    except KeyError:
        return None  # loaded with deferred fields: unknown, so any save refreshes


@receiver(post_init, sender=User, dispatch_uid="leaderboard.user_init")
def _remember_user(sender, instance: User, **kwargs) -> None:
    instance.leaderboard_seen_values = _seen(instance)


@receiver(post_save, sender=User, dispatch_uid="leaderboard.user_saved")
def _on_user_saved(sender, instance: User, created: bool, update_fields=None, **kwargs) -> None:
    if update_fields is not None and not set(update_fields) & set(_TRACKED):
        return
    before = getattr(instance, "leaderboard_seen_values", None)
    after = _seen(instance)
    instance.leaderboard_seen_values = after
    excluded = is_excluded(hidden=instance.hidden_from_leaderboard, is_staff=instance.is_staff)
    if created:
        if excluded:
            _schedule_refresh(instance.pk)
        return
    if before is None or after is None or is_excluded(hidden=before[0], is_staff=before[1]) != excluded:
        _schedule_refresh(instance.pk)
    elif before[2:] != after[2:]:
        user_id, name = instance.pk, instance.public_name
        transaction.on_commit(lambda: _rename(user_id, name))


def _rename(user_id: int, name: str) -> None:
    try:
        services.leaderboard_user_rename(user_id=user_id, name=name)
    except RedisUnavailable:
        logger.info("Learner %s renamed while Redis is unavailable; the next rebuild shows it", user_id)


@receiver(post_delete, sender=Solve, dispatch_uid="leaderboard.solve_deleted")
def _on_solve_deleted(sender, instance: Solve, **kwargs) -> None:
    _schedule_refresh(instance.user_id, course_id=instance.course_id)


@receiver(post_save, sender=Solve, dispatch_uid="leaderboard.solve_changed")
def _on_solve_changed(sender, instance: Solve, created: bool, **kwargs) -> None:
    # A new solve arrives through points_awarded; an edited one (staff changed its points
    # or course in the admin) is recomputed like a deletion.
    if not created:
        _schedule_refresh(instance.user_id, course_id=instance.course_id)


# Refreshes wait for the commit and are gathered per thread, so deleting a course with
# thousands of solves runs one batch (or one rebuild), not one refresh per solve.
_pending = threading.local()


def _schedule_refresh(user_id: int, *, course_id: int | None = None) -> None:
    refreshes = getattr(_pending, "refreshes", None)
    if refreshes is None:
        refreshes = _pending.refreshes = {}
    course_ids = refreshes.setdefault(user_id, set())
    if course_id is not None:
        course_ids.add(course_id)
    transaction.on_commit(_flush_refreshes)


def _flush_refreshes() -> None:
    refreshes = getattr(_pending, "refreshes", None)
    if not refreshes:
        return
    _pending.refreshes = {}
    try:
        services.leaderboard_flush_pending(refreshes=refreshes)
    except RedisUnavailable:
        logger.info(
            "%d learners not refreshed on the leaderboard while Redis is unavailable; "
            "the catch-up and the periodic rebuild settle them",
            len(refreshes),
        )
