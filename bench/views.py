"""The benchmark's own views: the ceilings, and reads of the API computed from Postgres alone.

Mounted under `/bench/` only when BENCH_CEILING is on (cyberlab.urls). Each Postgres view answers
what its API twin answers, through the same pagination and serializers, by calling the
leaderboard's public Postgres-path selectors: the "(Postgres only)" rows of the benchmark
time the same work with Redis left out.
"""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from cyberlab.api import Pagination
from leaderboard import selectors
from leaderboard.api import BoardReaders, wants_full_standings
from leaderboard.boards import Board
from leaderboard.serializers import MyStandingSerializer, StandingSerializer


class PostgresLeaderboardView(APIView):
    """`leaderboard/`: the full standings without `limit` and `offset`, else that page."""

    permission_classes = [BoardReaders]
    schema = None

    def get(self, request):
        paginator = Pagination()
        if wants_full_standings(request, paginator):
            return HttpResponse(
                selectors.leaderboard_standings_from_postgres(), content_type="application/json"
            )
        standings = paginator.paginate_fetched(
            lambda limit, offset: selectors.leaderboard_page_from_postgres(
                board=Board.all_time(), limit=limit, offset=offset
            ),
            request,
        )
        return paginator.get_paginated_response(StandingSerializer(standings, many=True).data)


class PostgresLeaderboardMeView(APIView):
    """`leaderboard/me/`."""

    schema = None

    def get(self, request):
        return Response(MyStandingSerializer(selectors.leaderboard_me_from_postgres(user=request.user)).data)


class CeilingView(APIView):
    """A constant small JSON through DRF, nothing else: the benchmark's ceiling."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # the bare framework: no Redis round trip of its own
    schema = None

    def get(self, request):
        return Response({"status": "ok", "items": [1, 2, 3]})


class SignedInCeilingView(APIView):
    """The ceiling behind what every signed-in request pays: authentication and the
    per-user rate limit. Read against it, an endpoint's figure is its own work."""

    permission_classes = [IsAuthenticated]
    schema = None

    def get(self, request):
        return Response({"status": "ok", "items": [1, 2, 3]})
