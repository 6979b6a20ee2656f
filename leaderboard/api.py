"""The `leaderboard/` endpoints: thin views over the leaderboard selectors."""

import functools
from urllib.parse import parse_qsl, urlencode

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.views import APIView

from cyberlab.deferred import run_after_response
from labs.selectors import course_get_for_user
from leaderboard import selectors
from leaderboard.boards import Board
from leaderboard.serializers import (
    MyStandingSerializer,
    StandingsPageSerializer,
    WeeklyPageSerializer,
)

_PAGING = ("limit", "offset")

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
    """`limit` (None when absent; at most API_MAX_PAGE_SIZE) and `offset` (0 when absent).

    Checked by hand rather than by a serializer: a board page is read far more often than
    anything else, and a serializer costs more than the rest of the read.
    """
    params = request.query_params
    errors = {}
    limit = _whole_number(params.get("limit"), minimum=1, name="limit", errors=errors)
    offset = _whole_number(params.get("offset"), minimum=0, name="offset", errors=errors)
    if errors:
        raise ValidationError(errors)
    if limit is not None:
        limit = min(limit, settings.API_MAX_PAGE_SIZE)
    return limit, offset or 0


def _whole_number(raw: str | None, *, minimum: int, name: str, errors: dict) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        errors[name] = ["A valid integer is required."]
        return None
    if value < minimum:
        errors[name] = [f"Ensure this value is greater than or equal to {minimum}."]
        return None
    return value


def _page_links(request, count: int, limit: int, offset: int) -> tuple[str | None, str | None]:
    following = offset + limit < count
    previous = offset > 0
    if not (following or previous):
        return None, None
    base = request.build_absolute_uri(request.path)
    query = request.META.get("QUERY_STRING", "")
    return (
        f"{base}?{_page_query_string(query, limit, offset + limit)}" if following else None,
        f"{base}?{_page_query_string(query, limit, max(0, offset - limit))}" if previous else None,
    )


@functools.lru_cache(maxsize=1024)
def _page_query_string(query: str, limit: int, offset: int) -> str:
    """The request's query with this page's `limit` and `offset` (none when 0), sorted."""
    params = [pair for pair in parse_qsl(query, keep_blank_values=True) if pair[0] not in _PAGING]
    params.append(("limit", str(limit)))
    if offset > 0:
        params.append(("offset", str(offset)))
    return urlencode(sorted(params, key=lambda param: param[0]))  # stable: repeated values keep their order


def _page_response(request, board: Board, limit: int, offset: int, **extra) -> HttpResponse:
    """A page of `board`, whose standings come already JSON: only the envelope is written."""
    count, results = selectors.leaderboard_page_json(
        board=board, limit=limit, offset=offset, postgres_only=_postgres_only(request)
    )
    following, previous = _page_links(request, count, limit, offset)
    head = selectors.as_json({"count": count, "next": following, "previous": previous, **extra})
    return HttpResponse(b'%s,"results":%s}' % (head[:-1], results), content_type="application/json")


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
        return _page_response(request, Board.all_time(), limit or settings.API_PAGE_SIZE, offset)


class LeaderboardMeApi(APIView):
    @extend_schema(responses={200: MyStandingSerializer})
    def get(self, request):
        body = selectors.leaderboard_me_json(user=request.user, postgres_only=_postgres_only(request))
        return HttpResponse(body, content_type="application/json")


class LeaderboardCourseApi(APIView):
    permission_classes = [BoardReaders]

    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: StandingsPageSerializer})
    def get(self, request, slug: str):
        course = course_get_for_user(user=request.user, slug=slug)
        limit, offset = _page_query(request)
        return _page_response(request, Board.course(course.pk), limit or settings.API_PAGE_SIZE, offset)


class LeaderboardWeeklyApi(APIView):
    """Points earned since Monday 00:00 UTC."""

    permission_classes = [BoardReaders]

    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: WeeklyPageSerializer})
    def get(self, request):
        limit, offset = _page_query(request)
        board = Board.weekly()
        return _page_response(request, board, limit or settings.API_PAGE_SIZE, offset, since=board.since)
