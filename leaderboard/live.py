"""What a solve tells learners as it happens: their own `solve`, a flag's `first_blood`
for everyone, and the board's new top ten (cyberlab.events)."""

from __future__ import annotations

from django.conf import settings

from cyberlab import redis_client
from cyberlab.events import services as events
from labs.models import Solve
from leaderboard import keys, selectors
from leaderboard.boards import Board, is_excluded
from leaderboard.serializers import StandingSerializer

TOP = 10


def leaderboard_announce_solve(*, solve_id: int, user_id: int, points: int) -> None:
    """Publishes the events of a committed solve (each after the current transaction)."""
    solve = (
        Solve.objects.select_related("flag__lab", "user")
        .only(
            "points",
            "flag__lab__title",
            "user__username",
            "user__display_name",
            "user__is_staff",
            "user__hidden_from_leaderboard",
        )
        .filter(pk=solve_id)
        .first()
    )
    if solve is None:
        return
    flag = solve.flag
    events.solved(
        user_id=user_id,
        solve_id=solve_id,
        points=points,
        lab_id=flag.lab_id if flag is not None else None,
        flag_id=flag.pk if flag is not None else None,
    )
    if flag is not None and _first_blood(solve):
        events.first_blood(
            flag_id=flag.pk,
            lab_id=flag.lab_id,
            lab_title=flag.lab.title,
            user_id=user_id,
            display_name=solve.user.public_name,
        )
    # Redis down: nothing is delivered, and the board would be computed from Postgres.
    if redis_client.incident.is_down:
        return
    if points > 0 and not is_excluded(
        hidden=solve.user.hidden_from_leaderboard, is_staff=solve.user.is_staff
    ):
        page = selectors.leaderboard_page(board=Board.all_time(), limit=TOP)
        events.leaderboard_changed(top=StandingSerializer(page.results, many=True).data)


def _first_blood(solve: Solve) -> bool:
    """Whether this is the flag's first solve. Two first solves can commit in either
    order, so the earliest row decides, and one short Redis claim keeps two receivers
    from both announcing it."""
    earliest = (
        Solve.objects.filter(flag_id=solve.flag_id).order_by("created_at", "pk").values_list("pk", flat=True)
    )
    if earliest.first() != solve.pk:
        return False
    claim = keys.first_blood_key(flag_id=solve.flag_id)

    def take() -> bool:
        with redis_client.connection() as client:
            return bool(client.set(claim, solve.pk, nx=True, ex=settings.LEADERBOARD_FIRST_BLOOD_CLAIM_TTL))

    # Redis down: the earliest row alone decides.
    return redis_client.fallback(take, True)
