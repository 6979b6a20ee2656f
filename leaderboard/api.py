"""The `leaderboard/` endpoints: thin views over the leaderboard selectors.

Pages go through the API's one pagination (`cyberlab.api.Pagination`) and are rendered
by DRF through the output serializers; only the full standings are served as the body
the snapshot stored (leaderboard.snapshot renders it with the same serializer).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cyberlab import nearcache
from cyberlab.api import Pagination, error_responses
from cyberlab.deferred import run_after_response
from labs.selectors import course_get_for_user
from leaderboard import keys, selectors
from leaderboard.boards import Board
from leaderboard.serializers import UTC, MyStandingSerializer, StandingSerializer, WeeklyStandingSerializer

T = TypeVar("T")
R = TypeVar("R")


class BoardReaders(BasePermission):
    """Signed-in users; anyone when LEADERBOARD_PUBLIC is on."""

    def has_permission(self, request, view) -> bool:
        return settings.LEADERBOARD_PUBLIC or IsAuthenticated().has_permission(request, view)


class WeeklyPagination(Pagination):
    """Pages of a weekly board: the envelope also says when its week began."""

    def __init__(self, since: datetime.datetime | None = None) -> None:
        super().__init__()
        self.since = since

    def get_paginated_response(self, data) -> Response:
        response = super().get_paginated_response(data)
        response.data["since"] = serializers.DateTimeField(default_timezone=UTC).to_representation(self.since)
        return response

    def get_paginated_response_schema(self, schema: dict) -> dict:
        envelope = super().get_paginated_response_schema(schema)
        envelope["properties"]["since"] = {
            "type": "string",
            "format": "date-time",
            "description": "Monday 00:00 UTC of this week.",
        }
        envelope["required"] = [*envelope["required"], "since"]
        return envelope


def wants_full_standings(request: Request, paginator: Pagination) -> bool:
    """Neither `limit` nor an offset past 0: every standing rather than a page."""
    return paginator.limit_query_param not in request.query_params and not paginator.get_offset(request)


def rendered(name: str, board: Board, load: Callable[[], T | None], render: Callable[[T], R]) -> R | None:
    """`render(load())` of a live read of `board`, kept rendered in the near cache until a
    key of the board changes (cyberlab.nearcache): the one place rendered board answers
    are kept. None when the live board cannot answer (nothing is kept then)."""

    def load_and_render() -> R | None:
        found = load()
        return None if found is None else render(found)

    return nearcache.read(
        f"{board.key}:{name}", load_and_render, deps=keys.board_deps(board.key), keep=lambda v: v is not None
    )


def board_page(
    request: Request, board: Board, paginator: Pagination, serializer_class: type = StandingSerializer
) -> Response:
    """The page of `board` the request asks for, read live (Postgres when Redis cannot)."""

    def render(page: selectors.StandingsPage) -> tuple[int, list]:
        return page.count, list(serializer_class(page.results, many=True).data)

    def fetch(limit: int, offset: int) -> tuple[int, list]:
        live = rendered(
            f"page:{offset}:{limit}:{serializer_class.__name__}",
            board,
            lambda: selectors.leaderboard_live_page(board=board, limit=limit, offset=offset),
            render,
        )
        if live is not None:
            return live
        return render(selectors.leaderboard_page_from_postgres(board=board, limit=limit, offset=offset))

    return paginator.get_paginated_response(paginator.paginate_fetched(fetch, request))


# What every board endpoint may answer besides its page: bad paging, not signed in (a
# 403: the session authenticator asks for no credentials), rate limited.
_BOARD_ERRORS = (400, 403, 429)


class LeaderboardApi(APIView):
    """Global standings. Without `limit` and `offset`: all of them (next and previous
    null), from the cached snapshot (`leaderboard:all`); with them: that page, read live."""

    permission_classes = [BoardReaders]
    pagination_class = Pagination

    @extend_schema(responses={200: StandingSerializer(many=True), **error_responses(*_BOARD_ERRORS)})
    def get(self, request):
        paginator = self.pagination_class()
        if wants_full_standings(request, paginator):
            body = selectors.leaderboard_standings(defer=run_after_response)
            return HttpResponse(body, content_type="application/json")
        return board_page(request, Board.all_time(), paginator)


class LeaderboardMeApi(APIView):
    """My rank, my points and the standings around me on the global board."""

    @extend_schema(responses={200: MyStandingSerializer, **error_responses(403, 429)})
    def get(self, request):
        board, radius = Board.all_time(), settings.LEADERBOARD_AROUND

        def load() -> selectors.MyStanding | None:
            # Only a learner on the board is kept: one off it is answered from Postgres.
            found = selectors.leaderboard_live_me(user=request.user, board=board, radius=radius)
            return found if found is not None and found.rank is not None else None

        data = rendered(
            f"me:{request.user.pk}:{radius}", board, load, lambda me: MyStandingSerializer(me).data
        )
        if data is None:
            data = MyStandingSerializer(selectors.leaderboard_me(user=request.user, board=board)).data
        return Response(data)


class LeaderboardCourseApi(APIView):
    """One course's standings, read live."""

    permission_classes = [BoardReaders]
    pagination_class = Pagination

    @extend_schema(responses={200: StandingSerializer(many=True), **error_responses(*_BOARD_ERRORS, 404)})
    def get(self, request, slug: str):
        course = course_get_for_user(user=request.user, slug=slug)
        return board_page(request, Board.course(course.pk), self.pagination_class())


class LeaderboardWeeklyApi(APIView):
    """Points earned since Monday 00:00 UTC, read live."""

    permission_classes = [BoardReaders]
    pagination_class = WeeklyPagination

    @extend_schema(responses={200: WeeklyStandingSerializer(many=True), **error_responses(*_BOARD_ERRORS)})
    def get(self, request):
        board = Board.weekly()
        return board_page(request, board, self.pagination_class(since=board.since), WeeklyStandingSerializer)
