"""Celery tasks: thin wrappers around the leaderboard services."""

from celery import shared_task

from leaderboard import services


@shared_task(name="leaderboard.rebuild")
def leaderboard_rebuild_task() -> dict:
    result = services.leaderboard_rebuild()
    return {"learners": result.learners, "solves": result.solves, "cursor": result.cursor}


@shared_task(name="leaderboard.catch_up")
def leaderboard_catch_up_task() -> dict:
    result = services.leaderboard_catch_up()
    return {"applied": result.applied, "cursor": result.cursor, "refreshed": result.refreshed}
