"""The catalogue and progress endpoints: thin views over labs selectors and services.

The course list and course detail are public (a visitor may browse the catalogue, and a
signed-out request costs no database query on a warm cache); everything else needs a
signed-in learner. Every response is rendered by a serializer of labs.serializers, the
same ones the schema is built from.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from cyberlab.api import Pagination, error_responses
from cyberlab.throttling import client_address
from labs import selectors, services
from labs.errors import AttemptsExhausted
from labs.models import Verdict
from labs.serializers import (
    CourseDetailSerializer,
    CourseListItemSerializer,
    EnrollmentSerializer,
    FlagSubmitSerializer,
    FlagVerdictSerializer,
    LabDetailSerializer,
    ProgressSerializer,
    QuizAttemptResultSerializer,
    QuizAttemptSerializer,
    QuizDetailSerializer,
)

# Every request counts against a rate limit (429), and a token that is not valid is
# refused (403) even where signing in is optional.


class CourseListApi(APIView):
    permission_classes = [AllowAny]
    pagination_class = Pagination

    @extend_schema(responses={200: CourseListItemSerializer(many=True), **error_responses(400, 403, 429)})
    def get(self, request):
        paginator = self.pagination_class()
        # The courses come rendered by CourseListItemSerializer, as the cache holds them.
        page = paginator.paginate_queryset(selectors.course_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(page)


class CourseDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: CourseDetailSerializer, **error_responses(403, 404, 429)})
    def get(self, request, slug: str):
        detail = selectors.course_detail(user=request.user, slug=slug)
        return Response(CourseDetailSerializer(detail).data)


class CourseEnrollApi(APIView):
    @extend_schema(
        request=None,
        responses={200: EnrollmentSerializer, 201: EnrollmentSerializer, **error_responses(403, 404, 429)},
    )
    def post(self, request, slug: str):
        course = selectors.course_get_for_user(user=request.user, slug=slug)
        enrollment, created = services.course_enroll(user=request.user, course=course)
        return Response(
            EnrollmentSerializer(enrollment).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class LabDetailApi(APIView):
    @extend_schema(responses={200: LabDetailSerializer, **error_responses(403, 404, 429)})
    def get(self, request, lab_id: int):
        return Response(LabDetailSerializer(selectors.lab_detail(user=request.user, lab_id=lab_id)).data)


class FlagSubmitApi(APIView):
    throttle_scope = "flag"

    @extend_schema(
        request=FlagSubmitSerializer,
        responses={200: FlagVerdictSerializer, **error_responses(400, 403, 404, 429)},
        description="403 `attempts_exhausted` once the flag's attempts are used up.",
    )
    def post(self, request, lab_id: int, flag_id: int):
        serializer = FlagSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        flag = selectors.flag_get_for_user(user=request.user, lab_id=lab_id, flag_id=flag_id)
        result = services.flag_submit(
            user=request.user,
            flag=flag,
            answer=serializer.validated_data["flag"],
            ip=client_address(request),
        )
        if result.verdict == Verdict.LOCKED:
            raise AttemptsExhausted("No attempts left for this flag.")
        return Response(FlagVerdictSerializer(result).data)


class QuizDetailApi(APIView):
    @extend_schema(responses={200: QuizDetailSerializer, **error_responses(403, 404, 429)})
    def get(self, request, quiz_id: int):
        return Response(QuizDetailSerializer(selectors.quiz_detail(user=request.user, quiz_id=quiz_id)).data)


class QuizAttemptApi(APIView):
    @extend_schema(
        request=QuizAttemptSerializer,
        responses={201: QuizAttemptResultSerializer, **error_responses(400, 403, 404, 429)},
        description="403 `attempts_exhausted` when no attempt is left; 429 `attempt_too_soon` "
        "(with Retry-After) during the quiz's wait between attempts.",
    )
    def post(self, request, quiz_id: int):
        serializer = QuizAttemptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        quiz = selectors.quiz_get_for_user(user=request.user, quiz_id=quiz_id)
        attempt = services.quiz_attempt_submit(
            user=request.user,
            quiz=quiz,
            answers=serializer.validated_data["answers"],
            max_text_length=settings.FLAG_ANSWER_MAX_LENGTH,
        )
        return Response(QuizAttemptResultSerializer(attempt).data, status=status.HTTP_201_CREATED)


class MyProgressApi(APIView):
    @extend_schema(responses={200: ProgressSerializer, **error_responses(403, 429)})
    def get(self, request):
        return Response(ProgressSerializer(selectors.user_progress(user=request.user)).data)
