"""Cross-cutting pieces of the REST API: errors and pagination."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` pages shaped `{count, next, previous, results}`, for every list.

    One rule everywhere: `limit` is a whole number from 1 (larger ones are capped at
    API_MAX_PAGE_SIZE), `offset` a whole number from 0 to API_MAX_OFFSET; anything else
    is a 400 that says which parameter is wrong, never a silent default.
    """

    @property
    def default_limit(self) -> int:  # type: ignore[override]
        return settings.API_PAGE_SIZE

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return settings.API_MAX_PAGE_SIZE

    def get_limit(self, request) -> int:
        limit = _whole_number(request.query_params.get(self.limit_query_param), name="limit", minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request) -> int:
        offset = _whole_number(
            request.query_params.get(self.offset_query_param),
            name="offset",
            minimum=0,
            maximum=settings.API_MAX_OFFSET,
        )
        return offset or 0

    def paginate_fetched(self, fetch: Callable[[int, int], tuple[int, list]], request) -> list:
        """One page from `fetch(limit, offset)`, which returns (count of all, the page):
        for lists that can read a page without holding every row."""
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        self.count, page = fetch(self.limit, self.offset)
        return page


def _whole_number(raw: str | None, *, name: str, minimum: int, maximum: int | None = None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise exceptions.ValidationError({name: ["A whole number is required."]}) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise exceptions.ValidationError({name: [f"Must be a whole number {bound}."]})
    return value


class ErrorSerializer(serializers.Serializer):
    """The shape of every API error (documentation of `exception_handler`)."""

    detail = serializers.CharField(help_text="What went wrong, for a person.")
    code = serializers.CharField(help_text="What went wrong, for a program.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors per field (400 only).",
    )


_ERROR_DESCRIPTIONS = {
    400: "Invalid input.",
    401: "Not signed in.",
    403: "Not allowed.",
    404: "Not found.",
    409: "Conflicts with the current state.",
    413: "Request body too large.",
    422: "Understood, but not allowed here.",
    429: "Rate limited (see Retry-After).",
    503: "A service this request needs is unavailable.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the errors an endpoint answers, all in the error shape."""
    return {code: OpenApiResponse(ErrorSerializer, description=_ERROR_DESCRIPTIONS[code]) for code in codes}


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
            errors = _flatten(detail)
            response.data = {"detail": _first_error(errors), "code": "invalid", "errors": errors}
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


def _flatten(errors, prefix: str = "") -> dict[str, list[str]]:
    """Field errors as `{"path": [messages]}`, nested fields named by dotted paths
    (`answers.12`, `items.0.name`), so every client reads one shape."""
    if isinstance(errors, dict):
        found: dict[str, list[str]] = {}
        for field, value in errors.items():
            found.update(_flatten(value, f"{prefix}.{field}" if prefix else str(field)))
        return found
    if isinstance(errors, list) and any(isinstance(item, dict | list) for item in errors):
        found = {}
        for index, item in enumerate(errors):
            found.update(_flatten(item, f"{prefix}.{index}"))
        return found
    items = errors if isinstance(errors, list) else [errors]
    return {prefix or "non_field_errors": [str(item) for item in items]} if items else {}


def _first_error(errors: dict[str, list[str]]) -> str:
    """A one-line summary of validation errors, naming the field that failed first."""
    for field, messages in errors.items():
        return messages[0] if field == "non_field_errors" else f"{field}: {messages[0]}"
    return "Invalid input."


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or request.path in {"/healthz", "/readyz"}


def not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def bad_request(request, exception=None):
    """Django's own 400s (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, a bad Host header)."""
    if _wants_json(request):
        message = str(exception) if exception is not None else ""
        return JsonResponse({"detail": message or "Bad request.", "code": "bad_request"}, status=400)
    from django.views.defaults import bad_request as django_bad_request

    return django_bad_request(request, exception)


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
