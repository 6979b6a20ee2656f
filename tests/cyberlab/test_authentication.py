import pytest
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from cyberlab.accounts.services import token_for


def test_a_token_authenticates_with_one_query_and_a_fully_loaded_user(user, django_assert_num_queries):
    key = token_for(user=user)
    with django_assert_num_queries(1):
        authenticated, token = TokenAuthentication().authenticate_credentials(key)
        # every field is loaded: reading them costs nothing more
        fields = (
            authenticated.email,
            authenticated.password,
            authenticated.last_login,
            authenticated.is_staff,
        )
    assert authenticated.pk == user.pk
    assert token.key == key
    assert token.user is authenticated
    assert fields[0] == user.email


def test_an_unknown_token_is_refused(db):
    with pytest.raises(AuthenticationFailed, match="Invalid token"):
        TokenAuthentication().authenticate_credentials("0" * 40)


def test_an_inactive_users_token_is_refused(user):
    key = token_for(user=user)
    user.is_active = False
    user.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.get("/api/v1/auth/me/")
    assert response.status_code == 403  # DRF answers 403 when session auth comes first
    assert response.json()["detail"] == "User inactive or deleted."


def test_a_deleted_token_stops_working_on_the_next_request(user, django_capture_on_commit_callbacks):
    key = token_for(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/auth/me/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        user.auth_token.delete()
    assert client.get("/api/v1/auth/me/").json()["detail"] == "Invalid token."


def test_a_user_deactivated_after_using_a_token_is_refused_on_the_next_request(
    user, django_capture_on_commit_callbacks
):
    key = token_for(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/auth/me/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save()
    response = client.get("/api/v1/auth/me/")
    assert response.json()["detail"] == "User inactive or deleted."


def test_a_renamed_user_is_seen_on_the_next_token_request(user, django_capture_on_commit_callbacks):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    client.get("/api/v1/auth/me/")
    with django_capture_on_commit_callbacks(execute=True):
        user.display_name = "Renamed"
        user.save()
    assert client.get("/api/v1/auth/me/").json()["display_name"] == "Renamed"
