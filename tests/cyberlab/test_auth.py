import pytest
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from cyberlab.accounts.models import User

PASSWORD = "correct-horse-battery"


@pytest.mark.django_db
def test_register_creates_the_user_and_logs_them_in(api_client):
    # when
    response = api_client.post(
        reverse("auth-register"),
        {"username": "alice", "email": "a@example.com", "password": "s3cure-Passw0rd"},
    )
    # then
    assert response.status_code == 201
    assert response.json()["username"] == "alice"
    assert api_client.get(reverse("auth-me")).json()["username"] == "alice"


@pytest.mark.django_db
def test_register_rejects_a_weak_password_and_a_taken_name(api_client, user):
    weak = api_client.post(
        reverse("auth-register"), {"username": "bob", "email": "b@example.com", "password": "1"}
    )
    taken = api_client.post(
        reverse("auth-register"),
        {"username": user.username.upper(), "email": "c@example.com", "password": "s3cure-Passw0rd"},
    )
    assert weak.status_code == 400
    assert weak.json()["code"] == "invalid"
    assert "password" in weak.json()["errors"]
    assert taken.status_code == 400
    assert "username" in taken.json()["errors"]
    assert not User.objects.filter(username="bob").exists()


@pytest.mark.django_db
@override_settings(REGISTRATION_OPEN=False)
def test_register_is_refused_when_registration_is_off(api_client):
    response = api_client.post(
        reverse("auth-register"), {"username": "eve", "email": "e@example.com", "password": "s3cure-Passw0rd"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "registration_closed"


def test_login_gives_one_answer_for_unknown_user_and_wrong_password(api_client, user):
    unknown = api_client.post(reverse("auth-login"), {"username": "nobody", "password": PASSWORD})
    wrong = api_client.post(reverse("auth-login"), {"username": user.username, "password": "nope"})
    assert unknown.status_code == wrong.status_code == 400
    assert unknown.json() == wrong.json()
    assert unknown.json()["detail"] == "Invalid username or password."


def test_login_without_csrf_token_is_refused_and_with_it_succeeds(user):
    # given a browser-like client that enforces CSRF
    client = APIClient(enforce_csrf_checks=True)
    # when the SPA logs in without first fetching the cookie
    refused = client.post(reverse("auth-login"), {"username": user.username, "password": PASSWORD})
    # then
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    # when it follows Django's flow: me/ sets csrftoken, X-CSRFToken sends it back
    me = client.get(reverse("auth-me"))
    token = me.cookies["csrftoken"].value
    accepted = client.post(
        reverse("auth-login"), {"username": user.username, "password": PASSWORD}, HTTP_X_CSRFTOKEN=token
    )
    # then
    assert me.status_code == 403
    assert accepted.status_code == 200
    assert client.get(reverse("auth-me")).json()["id"] == user.pk


def test_me_returns_the_profile_with_points(learner_client, user):
    body = learner_client.get(reverse("auth-me")).json()
    assert body == {
        "id": user.pk,
        "username": user.username,
        "email": user.email,
        "display_name": user.username,
        "is_staff": False,
        "points": body["points"],
    }
    assert isinstance(body["points"], int)


def test_logout_ends_the_session(api_client, user):
    api_client.post(reverse("auth-login"), {"username": user.username, "password": PASSWORD})
    assert api_client.post(reverse("auth-logout")).status_code == 204
    assert api_client.get(reverse("auth-me")).status_code == 403


def test_token_authenticates_scripts(api_client, user):
    token = api_client.post(reverse("auth-token"), {"username": user.username, "password": PASSWORD}).json()[
        "token"
    ]
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert script.get(reverse("auth-me")).json()["username"] == user.username
    assert (
        api_client.post(reverse("auth-token"), {"username": user.username, "password": "x"}).status_code
        == 400
    )


def test_password_change_keeps_this_session_ends_others_and_rotates_the_token(user):
    # given two logged-in browsers and a script token
    this, other = APIClient(), APIClient()
    for client in (this, other):
        client.post(reverse("auth-login"), {"username": user.username, "password": PASSWORD})
    old_token = this.post(reverse("auth-token"), {"username": user.username, "password": PASSWORD}).json()[
        "token"
    ]
    # when
    response = this.post(
        reverse("auth-password"), {"old_password": PASSWORD, "new_password": "An0ther-Secret!"}
    )
    # then
    assert response.status_code == 200
    new_token = response.json()["token"]
    assert new_token
    assert new_token != old_token
    assert this.get(reverse("auth-me")).status_code == 200
    assert other.get(reverse("auth-me")).status_code == 403
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {old_token}")
    assert script.get(reverse("auth-me")).status_code == 403


def test_password_change_with_a_wrong_old_password_changes_nothing(learner_client, user):
    response = learner_client.post(
        reverse("auth-password"), {"old_password": "wrong", "new_password": "An0ther-Secret!"}
    )
    user.refresh_from_db()
    assert response.status_code == 400
    assert "old_password" in response.json()["errors"]
    assert user.check_password(PASSWORD)


@pytest.mark.django_db
def test_malformed_json_is_a_400_with_a_message(api_client):
    response = api_client.post(reverse("auth-login"), "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.django_db
def test_unknown_api_path_is_a_json_404(api_client):
    response = api_client.get("/api/v1/does-not-exist/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_django_404_and_permission_errors_get_the_contract_shape():
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from cyberlab.api import exception_handler

    not_found = exception_handler(Http404("No Course matches the given query."), {})
    denied = exception_handler(PermissionDenied(), {})
    assert (not_found.status_code, not_found.data) == (404, {"detail": "Not found.", "code": "not_found"})
    assert denied.status_code == 403
    assert denied.data["code"] == "permission_denied"


@pytest.mark.django_db
def test_a_new_secret_key_with_the_old_one_as_fallback_signs_nobody_out(settings, user):
    client = APIClient()
    client.force_login(user)
    assert client.get("/api/v1/auth/me/").status_code == 200
    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-brand-new-key", [old]
    assert client.get("/api/v1/auth/me/").status_code == 200
    # without the fallback the old sign-in is void
    other = APIClient()
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = old, []
    other.force_login(user)
    settings.SECRET_KEY = "yet-another-key"
    assert other.get("/api/v1/auth/me/").status_code == 403
