"""Actions on accounts: registration, login, logout, tokens, password change."""

from __future__ import annotations

from django.contrib.auth import authenticate, login, logout, update_session_auth_hash
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import HttpRequest
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ValidationError

from cyberlab.accounts.models import User
from cyberlab.accounts.selectors import user_profile_invalidate

INVALID_CREDENTIALS = "Invalid username or password."


def _validated_password(password: str, user: User, *, field: str = "password") -> str:
    try:
        validate_password(password, user)
    except DjangoValidationError as error:
        raise ValidationError({field: list(error.messages)}) from error
    return password


@transaction.atomic
def user_register(*, request: HttpRequest, username: str, email: str, password: str) -> User:
    """Creates a learner and logs them in."""
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": ["This username is taken."]})
    user = User(username=username, email=email)
    user.set_password(_validated_password(password, user))
    user.save()
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return user


def user_authenticate(*, request: HttpRequest | None, username: str, password: str) -> User:
    """The user with these credentials; one answer for unknown user and bad password."""
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise ValidationError(INVALID_CREDENTIALS, code="invalid_credentials")
    return user


def user_login(*, request: HttpRequest, username: str, password: str) -> User:
    user = user_authenticate(request=request, username=username, password=password)
    login(request, user)
    return user


def user_logout(*, request: HttpRequest) -> None:
    logout(request)


def token_for(*, user: User) -> str:
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


def token_rotate(*, user: User) -> str | None:
    """Replaces the user's API token, if they have one; returns the new key."""
    deleted, _ = Token.objects.filter(user=user).delete()
    if not deleted:
        return None
    return Token.objects.create(user=user).key


@transaction.atomic
def password_change(*, request: HttpRequest, user: User, old_password: str, new_password: str) -> str | None:
    """Changes the password, keeps this session, rotates the API token.

    Other sessions stop authenticating at once: Django ties each session to a hash of
    the password. Returns the new token when the user had one.
    """
    if not user.check_password(old_password):
        raise ValidationError({"old_password": ["The current password is wrong."]})
    user.set_password(_validated_password(new_password, user, field="new_password"))
    user.save(update_fields=["password"])
    update_session_auth_hash(request, user)
    user_profile_invalidate(user_id=user.pk)
    return token_rotate(user=user)
