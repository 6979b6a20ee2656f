"""The catalogue and progress endpoints: thin views over labs selectors and services.

The course list and course detail are public (a visitor may browse the catalogue, and a
signed-out request costs no database query on a warm cache); everything else needs a
signed-in learner.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from cyberlab.api import Pagination
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


class CourseListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: CourseListItemSerializer(many=True)})
    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.course_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(page)


class CourseDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: CourseDetailSerializer})
    def get(self, request, slug: str):
        return Response(selectors.course_detail(user=request.user, slug=slug))


class CourseEnrollApi(APIView):
    @extend_schema(request=None, responses={200: EnrollmentSerializer, 201: EnrollmentSerializer})
    def post(self, request, slug: str):
        course = selectors.course_get_for_user(user=request.user, slug=slug)
        enrollment, created = services.course_enroll(user=request.user, course=course)
        return Response(
            {"course": course.slug, "enrolled": True, "enrolled_at": enrollment.created_at},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class LabDetailApi(APIView):
    @extend_schema(responses={200: LabDetailSerializer})
    def get(self, request, lab_id: int):
        return Response(selectors.lab_detail(user=request.user, lab_id=lab_id))


class FlagSubmitApi(APIView):
    throttle_scope = "flag"

    @extend_schema(request=FlagSubmitSerializer, responses={200: FlagVerdictSerializer})
    def post(self, request, lab_id: int, flag_id: int):
        serializer = FlagSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        flag = selectors.flag_get_for_user(user=request.user, lab_id=lab_id, flag_id=flag_id)
        result = services.flag_submit(
            user=request.user,
            flag=flag,
            answer=serializer.validated_data["flag"],
            ip=request.META.get("REMOTE_ADDR"),
        )
        if result.verdict == Verdict.LOCKED:
            raise AttemptsExhausted("No attempts left for this flag.")
        return Response(
            {
                "correct": result.correct,
                "already_solved": result.already_solved,
                "points": result.points,
                "attempts_left": result.attempts_left,
            }
        )


class QuizDetailApi(APIView):
    @extend_schema(responses={200: QuizDetailSerializer})
    def get(self, request, quiz_id: int):
        return Response(selectors.quiz_detail(user=request.user, quiz_id=quiz_id))


class QuizAttemptApi(APIView):
    @extend_schema(request=QuizAttemptSerializer, responses={201: QuizAttemptResultSerializer})
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
        return Response(attempt, status=status.HTTP_201_CREATED)


class MyProgressApi(APIView):
    @extend_schema(responses={200: ProgressSerializer})
    def get(self, request):
        return Response(selectors.user_progress(user=request.user))
