"""The `leaderboard/` endpoints: thin views over the leaderboard selectors."""

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from labs.selectors import course_get_for_user
from leaderboard import selectors
from leaderboard.boards import Board
from leaderboard.receivers import run_after_response
from leaderboard.serializers import (
    MyStandingSerializer,
    StandingsPageSerializer,
    StandingsQuerySerializer,
    WeeklyPageSerializer,
)

PAGE_PARAMETERS = [
    OpenApiParameter("limit", int, description="Standings per page (at most API_MAX_PAGE_SIZE)."),
    OpenApiParameter("offset", int, description="Standings to skip."),
]


class BoardReaders(BasePermission):
    """Signed-in users; anyone when LEADERBOARD_PUBLIC is on."""

    def has_permission(self, request, view) -> bool:
        return settings.LEADERBOARD_PUBLIC or IsAuthenticated().has_permission(request, view)


def _postgres_only(request) -> bool:
    """The benchmark's way to time the same answer computed from Postgres alone."""
    return settings.BENCH_CEILING and request.query_params.get("source") == "postgres"


def _page_query(request) -> tuple[int | None, int]:
    query = StandingsQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    limit = query.validated_data.get("limit")
    if limit is not None:
        limit = min(limit, settings.API_MAX_PAGE_SIZE)
    return limit, query.validated_data["offset"]


def _page_body(request, page: selectors.StandingsPage, limit: int, offset: int) -> dict:
    url = request.build_absolute_uri()
    following = None
    if offset + limit < page.count:
        following = replace_query_param(replace_query_param(url, "limit", limit), "offset", offset + limit)
    previous = None
    if offset > 0:
        previous = replace_query_param(url, "limit", limit)
        previous = (
            remove_query_param(previous, "offset")
            if offset - limit <= 0
            else replace_query_param(previous, "offset", offset - limit)
        )
    return {
        "count": page.count,
        "next": following,
        "previous": previous,
        "results": [standing.as_dict() for standing in page.results],
    }


class LeaderboardApi(APIView):
    """Global standings. Without `limit`: all of them, from the cached snapshot
    (`leaderboard:all`); with `limit`: that page, read live."""

    permission_classes = [BoardReaders]

    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: StandingsPageSerializer})
    def get(self, request):
        limit, offset = _page_query(request)
        if limit is None and offset == 0:
            body = selectors.leaderboard_standings(
                postgres_only=_postgres_only(request), defer=run_after_response
            )
            return HttpResponse(body, content_type="application/json")
        limit = limit or settings.API_PAGE_SIZE
        page = selectors.leaderboard_page(
            board=Board.all_time(), limit=limit, offset=offset, postgres_only=_postgres_only(request)
        )
        return Response(_page_body(request, page, limit, offset))


class LeaderboardMeApi(APIView):
    @extend_schema(responses={200: MyStandingSerializer})
    def get(self, request):
        standing = selectors.leaderboard_me(user=request.user, postgres_only=_postgres_only(request))
        return Response(standing.as_dict())


class LeaderboardCourseApi(APIView):
    permission_classes = [BoardReaders]

    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: StandingsPageSerializer})
    def get(self, request, slug: str):
        course = course_get_for_user(user=request.user, slug=slug)
        limit, offset = _page_query(request)
        limit = limit or settings.API_PAGE_SIZE
        page = selectors.leaderboard_page(
            board=Board.course(course.pk), limit=limit, offset=offset, postgres_only=_postgres_only(request)
        )
        return Response(_page_body(request, page, limit, offset))


class LeaderboardWeeklyApi(APIView):
    """Points earned since Monday 00:00 UTC."""

    permission_classes = [BoardReaders]

    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: WeeklyPageSerializer})
    def get(self, request):
        limit, offset = _page_query(request)
        limit = limit or settings.API_PAGE_SIZE
        board = Board.weekly()
        page = selectors.leaderboard_page(
            board=board, limit=limit, offset=offset, postgres_only=_postgres_only(request)
        )
        return Response({**_page_body(request, page, limit, offset), "since": board.since})
