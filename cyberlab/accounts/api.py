"""The `auth/` endpoints: thin views over the account services."""

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
from cyberlab.api import Pagination


def enforce_csrf(request) -> None:
    """Checks CSRF even for anonymous requests (DRF checks it only once logged in).

    Login and registration create a session, so a forged cross-site form must not be
    able to log a victim into an attacker's account.
    """
    SessionAuthentication().enforce_csrf(request)


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    throttle_scope = "register"

    @extend_schema(request=RegisterSerializer, responses={201: ProfileSerializer})
    def post(self, request):
        if not settings.REGISTRATION_OPEN:
            raise PermissionDenied("Registration is closed.", code="registration_closed")
        enforce_csrf(request)
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_register(request=request, **serializer.validated_data)
        return Response(selectors.user_profile(user=user), status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    permission_classes = [AllowAny]
    throttle_scope = "login"

    @extend_schema(request=CredentialsSerializer, responses={200: ProfileSerializer})
    def post(self, request):
        enforce_csrf(request)
        serializer = CredentialsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_login(request=request, **serializer.validated_data)
        return Response(selectors.user_profile(user=user))


class LogoutApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        services.user_logout(request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


@method_decorator(ensure_csrf_cookie, name="dispatch")
class MeApi(APIView):
    """The signed-in user; also hands the SPA its `csrftoken` cookie."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: ProfileSerializer})
    def get(self, request):
        return Response(selectors.user_profile(user=request.user))


class TokenApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "login"

    @extend_schema(request=CredentialsSerializer, responses={200: TokenSerializer})
    def post(self, request):
        serializer = CredentialsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_authenticate(request=request, **serializer.validated_data)
        return Response({"token": services.token_for(user=user)})


class PasswordChangeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=PasswordChangeSerializer, responses={200: PasswordChangedSerializer})
    def post(self, request):
        serializer = PasswordChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = services.password_change(request=request, user=request.user, **serializer.validated_data)
        return Response({"detail": "Password changed.", "token": token})


class SessionListApi(APIView):
    """My live sessions; `current` marks the one asking."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: SessionSerializer(many=True)})
    def get(self, request):
        sessions = selectors.user_session_list(user=request.user, session_key=request.session.session_key)
        paginator = Pagination()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionSerializer(page, many=True).data)


class SessionRevokeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, session_id):
        services.user_session_revoke(request=request, user=request.user, session_id=session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionRevokeOthersApi(APIView):
    """Signs out every other session and rotates the API token."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: SessionsRevokedSerializer})
    def post(self, request):
        revoked, token = services.user_sessions_revoke_others(request=request, user=request.user)
        return Response({"revoked": revoked, "token": token})
