"""Cross-cutting pieces of the REST API: errors, pagination, the ceiling view."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` pages shaped `{count, next, previous, results}`."""

    @property
    def default_limit(self) -> int:  # type: ignore[override]
        return settings.API_PAGE_SIZE

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return settings.API_MAX_PAGE_SIZE


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service this request needs is unavailable; try again shortly."
    default_code = "service_unavailable"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Every API error as `{"detail", "code"}`, validation errors with `errors` per field."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            errors = detail.get("non_field_errors")
            message = str(errors[0]) if errors else "Invalid input."
            response.data = {"detail": message, "code": "invalid", "errors": detail}
        else:
            items = detail if isinstance(detail, list) else [detail]
            response.data = {
                "detail": " ".join(str(item) for item in items) or "Invalid input.",
                "code": "invalid",
            }
        return response
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else getattr(exc, "default_code", "error")
        data = response.data if isinstance(response.data, dict) else {}
        data.setdefault("detail", str(exc.detail))
        data["code"] = code
        response.data = data
    return response


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or request.path in {"/healthz", "/readyz"}


def not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request):
    if _wants_json(request):
        return JsonResponse({"detail": "Internal server error.", "code": "server_error"}, status=500)
    from django.views.defaults import server_error as django_server_error

    return django_server_error(request)


class ApiRootView(APIView):
    """Where to start: the schema, its documentation and the main collections."""

    permission_classes = [AllowAny]
    schema = None  # a signpost, not part of the contract

    def get(self, request):
        def link(path: str) -> str:
            return request.build_absolute_uri(path)

        return Response(
            {
                "schema": link("/api/v1/schema/"),
                "docs": link("/api/docs/"),
                "me": link("/api/v1/auth/me/"),
                "courses": link("/api/v1/courses/"),
                "leaderboard": link("/api/v1/leaderboard/"),
                "machines": link("/api/v1/vms/"),
            }
        )


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
