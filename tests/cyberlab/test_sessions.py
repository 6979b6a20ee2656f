import copy
import hashlib
import uuid
from datetime import timedelta
from typing import ClassVar

import pytest
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends.cached_db import KEY_PREFIX
from django.core.cache import cache
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from cyberlab.accounts.models import SessionData, SessionEndReason, UserSession
from cyberlab.accounts.selectors import user_sessions_key
from tests.factories import UserFactory

PASSWORD = "correct-horse-battery"

# Real commits: the Redis side of sessions (index, cached copies) follows on commit.
pytestmark = pytest.mark.django_db(transaction=True)


def signed_in(user, *, agent: str = "pytest-browser", address: str = "192.0.2.10") -> APIClient:
    client = APIClient(HTTP_USER_AGENT=agent, REMOTE_ADDR=address)
    response = client.post(reverse("auth-login"), {"username": user.username, "password": PASSWORD})
    assert response.status_code == 200
    return client


def session_key(client: APIClient) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def cached_copy_key(key: str) -> str:
    return cache.make_key(KEY_PREFIX + key)


def record_of(client: APIClient) -> UserSession:
    return UserSession.objects.get(key_hash=digest(session_key(client)))


def test_a_login_records_its_session_by_a_public_id_and_indexes_it_live(user, redis):
    # when
    client = signed_in(user, agent="Firefox/140", address="192.0.2.44")
    # then
    record = record_of(client)
    assert record.user == user
    assert record.user_agent == "Firefox/140"
    assert record.ip == "192.0.2.44"
    assert record.ended_at is None
    assert session_key(client) not in {str(record.id), record.key_hash}
    assert redis.smembers(user_sessions_key(user_id=user.pk)) == {str(record.id).encode()}
    assert 0 < redis.ttl(user_sessions_key(user_id=user.pk)) <= settings.SESSION_COOKIE_AGE


def test_registration_records_a_session(api_client):
    response = api_client.post(
        reverse("auth-register"),
        {"username": "newbie", "email": "n@example.com", "password": "s3cure-Passw0rd"},
    )
    assert response.status_code == 201
    assert record_of(api_client).user.username == "newbie"


def test_the_session_list_marks_the_current_one(user):
    # given two browsers and another user's session
    laptop = signed_in(user, agent="laptop")
    signed_in(user, agent="phone")
    signed_in(UserFactory())
    # when
    body = laptop.get(reverse("auth-sessions")).json()
    # then
    assert body["count"] == 2
    by_agent = {item["user_agent"]: item for item in body["results"]}
    assert by_agent["laptop"]["current"] is True
    assert by_agent["phone"]["current"] is False
    assert by_agent["laptop"]["id"] == str(record_of(laptop).id)
    assert set(by_agent["laptop"]) == {"id", "user_agent", "ip", "created_at", "last_seen_at", "current"}


def test_a_revoked_session_stops_working_at_its_next_request_and_is_deleted(user, redis):
    # given two signed-in browsers
    laptop, phone = signed_in(user), signed_in(user)
    phone_key = session_key(phone)
    phone_record = record_of(phone)
    assert redis.exists(cached_copy_key(phone_key))
    # when the laptop revokes the phone
    response = laptop.delete(reverse("auth-session", args=[phone_record.id]))
    # then
    assert response.status_code == 204
    assert phone.get(reverse("auth-me")).status_code == 403
    assert laptop.get(reverse("auth-me")).status_code == 200
    phone_record.refresh_from_db()
    assert phone_record.end_reason == SessionEndReason.REVOKED
    assert phone_record.ended_at is not None
    assert not SessionData.objects.filter(session_key=phone_key).exists()
    assert not redis.exists(cached_copy_key(phone_key))
    assert redis.smembers(user_sessions_key(user_id=user.pk)) == {str(record_of(laptop).id).encode()}


def test_another_users_session_or_an_unknown_id_is_not_found(user):
    mine = signed_in(user)
    theirs = signed_in(UserFactory())
    for session_id in (record_of(theirs).id, uuid.uuid4()):
        response = mine.delete(reverse("auth-session", args=[session_id]))
        assert response.status_code == 404
        assert response.json()["code"] == "session_not_found"
    assert theirs.get(reverse("auth-me")).status_code == 200


def test_revoking_the_current_session_signs_it_out(user):
    client = signed_in(user)
    record = record_of(client)
    assert client.delete(reverse("auth-session", args=[record.id])).status_code == 204
    assert client.get(reverse("auth-me")).status_code == 403
    record.refresh_from_db()
    assert record.ended_at is not None


def test_revoke_others_keeps_this_session_ends_the_rest_and_rotates_the_token(user):
    # given three browsers and a script token
    this, *others = signed_in(user), signed_in(user), signed_in(user)
    old_token = Token.objects.create(user=user).key
    # when
    response = this.post(reverse("auth-sessions-revoke-others"))
    # then
    assert response.status_code == 200
    assert response.json()["revoked"] == 2
    new_token = response.json()["token"]
    assert new_token
    assert new_token != old_token
    assert this.get(reverse("auth-me")).status_code == 200
    assert [client.get(reverse("auth-me")).status_code for client in others] == [403, 403]
    assert this.get(reverse("auth-sessions")).json()["count"] == 1
    script = APIClient(HTTP_AUTHORIZATION=f"Token {old_token}")
    assert script.get(reverse("auth-me")).status_code == 403


def test_a_password_change_ends_other_sessions_for_good_and_keeps_this_one_listed(user):
    # given two browsers
    this, other = signed_in(user), signed_in(user)
    other_key = session_key(other)
    # when
    response = this.post(
        reverse("auth-password"), {"old_password": PASSWORD, "new_password": "An0ther-Secret!"}
    )
    # then
    assert response.status_code == 200
    assert other.get(reverse("auth-me")).status_code == 403
    ended = UserSession.objects.get(end_reason=SessionEndReason.PASSWORD_CHANGED)
    assert ended.user == user
    assert not SessionData.objects.filter(session_key=other_key).exists()
    listed = this.get(reverse("auth-sessions")).json()["results"]
    assert [item["current"] for item in listed] == [True]


def test_logout_ends_the_record(user, redis):
    client = signed_in(user)
    record = record_of(client)
    client.post(reverse("auth-logout"))
    record.refresh_from_db()
    assert record.end_reason == SessionEndReason.LOGOUT
    assert redis.smembers(user_sessions_key(user_id=user.pk)) == set()


def test_a_stale_copy_put_back_in_redis_and_postgres_does_not_sign_in(user, redis):
    # given a copy of the phone's session as Redis and Postgres held it
    laptop, phone = signed_in(user), signed_in(user)
    phone_key = session_key(phone)
    cached = redis.get(cached_copy_key(phone_key))
    stored = SessionData.objects.get(session_key=phone_key)
    laptop.delete(reverse("auth-session", args=[record_of(phone).id]))
    # when both copies come back (a restored backup, a Redis that missed the delete)
    redis.set(cached_copy_key(phone_key), cached, ex=3600)
    stored.save()
    # then the session is refused, and its copies are deleted again
    assert phone.get(reverse("auth-me")).status_code == 403
    assert not redis.exists(cached_copy_key(phone_key))
    assert not SessionData.objects.filter(session_key=phone_key).exists()


def test_a_session_without_a_record_is_signed_out(user):
    client = signed_in(user)
    UserSession.objects.filter(user=user).delete()
    assert client.get(reverse("auth-me")).status_code == 403


def test_last_seen_is_written_at_most_once_per_touch_interval(user, settings):
    # given a session last seen 30 s ago, with a 60 s touch interval (the record read
    # from Postgres each time: the test moves last_seen_at behind the cache's back)
    settings.SESSION_TOUCH_INTERVAL = 60
    settings.CREDENTIAL_CACHE_ENABLED = False
    client = signed_in(user)
    record = record_of(client)
    recently = timezone.now() - timedelta(seconds=30)
    UserSession.objects.filter(pk=record.pk).update(last_seen_at=recently)
    # when / then: not rewritten within the interval
    client.get(reverse("auth-me"))
    record.refresh_from_db()
    assert record.last_seen_at == recently
    # when / then: rewritten once it has passed
    long_ago = timezone.now() - timedelta(seconds=120)
    UserSession.objects.filter(pk=record.pk).update(last_seen_at=long_ago)
    client.get(reverse("auth-me"))
    record.refresh_from_db()
    assert record.last_seen_at > long_ago + timedelta(seconds=100)


def test_staff_revoke_every_session_of_a_user_from_the_admin(user, staff_client):
    # given a learner on two browsers with a token
    browsers = [signed_in(user), signed_in(user)]
    old_token = Token.objects.create(user=user).key
    # when staff run the user action
    response = staff_client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "revoke_all_sessions", "_selected_action": [user.pk]},
        format="multipart",
    )
    # then
    assert response.status_code == 302
    assert [b.get(reverse("auth-me")).status_code for b in browsers] == [403, 403]
    assert set(UserSession.objects.filter(user=user).values_list("end_reason", flat=True)) == {
        SessionEndReason.STAFF
    }
    assert Token.objects.get(user=user).key != old_token


def test_a_revoke_while_redis_is_down_holds_when_redis_returns_with_its_old_copy(user, private_redis):
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = private_redis.url
    with override_settings(CACHES=caches, REDIS_RETRY_INTERVAL=0):
        # given two browsers whose sessions are cached in this Redis
        laptop, phone = signed_in(user), signed_in(user)
        phone_key = session_key(phone)
        phone_record = record_of(phone)
        assert cache.get(KEY_PREFIX + phone_key) is not None
        # when Redis dies (keeping a snapshot), the laptop revokes the phone meanwhile,
        # and Redis returns with the snapshot
        private_redis.stop_keeping_data()
        revoke = laptop.delete(reverse("auth-session", args=[phone_record.id]))
        private_redis.start()
        assert cache.get(KEY_PREFIX + phone_key) is not None
        # then the revoke worked without Redis, and the old copy signs nobody in
        assert revoke.status_code == 204
        assert not SessionData.objects.filter(session_key=phone_key).exists()
        assert phone.get(reverse("auth-me")).status_code == 403
        assert cache.get(KEY_PREFIX + phone_key) is None
        assert laptop.get(reverse("auth-me")).status_code == 200


def test_a_sign_in_on_a_session_without_a_key_yet_is_recorded(user):
    # given a request whose session was never saved
    from django.http import HttpRequest

    from cyberlab.accounts import services
    from cyberlab.accounts.session_store import SessionStore

    request = HttpRequest()
    request.session = SessionStore()
    # when
    record = services.user_session_record(request=request, user=user)
    # then
    assert request.session.session_key
    assert record.key_hash == digest(request.session.session_key)


# --- what a signed-in request costs, and the checks it still makes ---------------------


class OwnLoadingBackend(ModelBackend):
    """A backend that loads users its own way, so the session guard must ask it."""

    loaded: ClassVar[list] = []

    def get_user(self, user_id):
        self.loaded.append(user_id)
        return super().get_user(user_id)


def test_a_signed_in_request_checks_its_session_in_one_query(user, django_assert_max_num_queries):
    # given a browser whose profile is already cached
    client = signed_in(user)
    client.get(reverse("auth-me"))
    # when / then: the record and its user are read together (or kept by the credential cache)
    with django_assert_max_num_queries(1):
        response = client.get(reverse("auth-me"))
    assert response.status_code == 200
    assert response.json()["username"] == user.username


def test_a_password_changed_elsewhere_signs_the_session_out(user):
    # given a browser, and the password changed without revoking its record
    client = signed_in(user)
    record = record_of(client)
    user.set_password("Changed-by-staff-1")
    user.save()
    # when / then
    assert client.get(reverse("auth-me")).status_code == 403
    record.refresh_from_db()
    assert record.ended_at is not None


def test_a_session_signed_with_a_retired_secret_is_kept_under_a_new_key(user):
    # given a browser signed in under the old secret
    client = signed_in(user)
    old_key = session_key(client)
    record = record_of(client)
    # when the secret rotates with the old one kept as a fallback
    with override_settings(SECRET_KEY="rotated-secret-key", SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]):
        response = client.get(reverse("auth-me"))
        # then the session is re-signed under a new key, its record following it
        assert response.status_code == 200
        assert session_key(client) != old_key
        assert record_of(client).pk == record.pk
        assert client.get(reverse("auth-me")).status_code == 200
    # and without the fallback the old signature signs nobody in
    other = signed_in(user)
    with override_settings(SECRET_KEY="rotated-secret-key", SECRET_KEY_FALLBACKS=[]):
        assert other.get(reverse("auth-me")).status_code == 403


def test_an_inactive_users_session_signs_nobody_in(user):
    client = signed_in(user)
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert client.get(reverse("auth-me")).status_code == 403


def test_a_session_whose_backend_is_no_longer_configured_signs_nobody_in(user):
    client = signed_in(user)
    with override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.AllowAllUsersModelBackend"]
    ):
        assert client.get(reverse("auth-me")).status_code == 403


def test_a_backend_loading_users_its_own_way_is_asked_for_the_user(user):
    backend = f"{__name__}.OwnLoadingBackend"
    with override_settings(AUTHENTICATION_BACKENDS=[backend]):
        # given a browser signed in through that backend
        client = signed_in(user)
        OwnLoadingBackend.loaded.clear()
        # when / then
        assert client.get(reverse("auth-me")).json()["username"] == user.username
        assert OwnLoadingBackend.loaded == [user.pk]
