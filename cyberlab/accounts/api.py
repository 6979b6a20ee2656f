"""The `auth/` endpoints: thin views over the account services.

Every response is rendered by a serializer of cyberlab.accounts.serializers, the same
ones the schema is built from. Every request counts against a rate limit (429); a
signed-in unsafe request without its CSRF token, or a token that is not valid, is a 403.
"""

from django.conf import settings
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from cyberlab.accounts import selectors, services
from cyberlab.accounts.serializers import (
    CredentialsSerializer,
    PasswordChangedSerializer,
    PasswordChangeSerializer,
    ProfileSerializer,
    RegisterSerializer,
    SessionSerializer,
    SessionsRevokedSerializer,
    TokenSerializer,
)
from cyberlab.api import Pagination, error_responses


def enforce_csrf(request) -> None:
    """Checks CSRF even for anonymous requests (DRF checks it only once logged in).

    Login and registration create a session, so a forged cross-site form must not be
    able to log a victim into an attacker's account.
    """
    SessionAuthentication().enforce_csrf(request)


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    throttle_scope = "register"

    @extend_schema(
        request=RegisterSerializer,
        responses={201: ProfileSerializer, **error_responses(400, 403, 429)},
        description="403 `registration_closed` when registration is off.",
    )
    def post(self, request):
        if not settings.REGISTRATION_OPEN:
            raise PermissionDenied("Registration is closed.", code="registration_closed")
        enforce_csrf(request)
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_register(request=request, **serializer.validated_data)
        return Response(
            ProfileSerializer(selectors.user_profile(user=user)).data, status=status.HTTP_201_CREATED
        )


class LoginApi(APIView):
    permission_classes = [AllowAny]
    throttle_scope = "login"

    @extend_schema(
        request=CredentialsSerializer,
        responses={200: ProfileSerializer, **error_responses(400, 403, 429)},
        description="400 `invalid` on bad credentials.",
    )
    def post(self, request):
        enforce_csrf(request)
        serializer = CredentialsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_login(request=request, **serializer.validated_data)
        return Response(ProfileSerializer(selectors.user_profile(user=user)).data)


class LogoutApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={204: None, **error_responses(403, 429)})
    def post(self, request):
        services.user_logout(request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


@method_decorator(ensure_csrf_cookie, name="dispatch")
class MeApi(APIView):
    """The signed-in user; also hands the SPA its `csrftoken` cookie."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: ProfileSerializer, **error_responses(403, 429)})
    def get(self, request):
        return Response(ProfileSerializer(selectors.user_profile(user=request.user)).data)


class TokenApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "login"

    @extend_schema(
        request=CredentialsSerializer, responses={200: TokenSerializer, **error_responses(400, 429)}
    )
    def post(self, request):
        serializer = CredentialsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_authenticate(request=request, **serializer.validated_data)
        return Response(TokenSerializer({"token": services.token_for(user=user)}).data)


class PasswordChangeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=PasswordChangeSerializer,
        responses={200: PasswordChangedSerializer, **error_responses(400, 403, 429)},
    )
    def post(self, request):
        serializer = PasswordChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = services.password_change(request=request, user=request.user, **serializer.validated_data)
        return Response(PasswordChangedSerializer({"detail": "Password changed.", "token": token}).data)


class SessionListApi(APIView):
    """My live sessions; `current` marks the one asking."""

    permission_classes = [IsAuthenticated]
    pagination_class = Pagination

    @extend_schema(responses={200: SessionSerializer(many=True), **error_responses(400, 403, 429)})
    def get(self, request):
        sessions = selectors.user_session_list(user=request.user, session_key=request.session.session_key)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionSerializer(page, many=True).data)


class SessionRevokeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None, **error_responses(403, 404, 429)})
    def delete(self, request, session_id):
        services.user_session_revoke(request=request, user=request.user, session_id=session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionRevokeOthersApi(APIView):
    """Signs out every other session and rotates the API token."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: SessionsRevokedSerializer, **error_responses(403, 429)})
    def post(self, request):
        revoked, token = services.user_sessions_revoke_others(request=request, user=request.user)
        return Response(SessionsRevokedSerializer({"revoked": revoked, "token": token}).data)
