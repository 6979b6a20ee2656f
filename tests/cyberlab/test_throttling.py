import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import path, reverse
from django_redis import get_redis_connection
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from cyberlab import ratelimit
from cyberlab.accounts.services import token_for
from cyberlab.urls import urlpatterns as project_urlpatterns
from tests.conftest import dead_redis_caches
from tests.factories import UserFactory

PASSWORD = "correct-horse-battery"
RATES = {
    "anon": "100/min",
    "user": "100/min",
    "login": "3/min",
    "register": "2/hour",
    "flag": "3/min",
    "vm_start": "2/hour",
}


class FlagAnswerView(APIView):
    """Answers like the flag endpoint: `{correct}` on 200, 404 for an unknown flag."""

    throttle_scope = "flag"

    def post(self, request):
        if request.data.get("flag") == "no-such-flag":
            raise NotFound()
        answer = {"correct": request.data.get("flag") == "right"}
        if request.data.get("count_slots"):
            flag_key = ratelimit.key(scope="flag", ident=str(request.user.pk))
            answer["slots_held_during_view"] = get_redis_connection("default").zcard(flag_key)
        return Response(answer)


class StartView(APIView):
    throttle_scope = "vm_start"

    def post(self, request):
        return Response({"started": True}, status=202)


class MisnamedScopeView(APIView):
    throttle_scope = "no-such-scope"

    def get(self, request):
        return Response({})


urlpatterns = [
    *project_urlpatterns,
    path("test/flag/", FlagAnswerView.as_view(), name="test-flag"),
    path("test/start/", StartView.as_view(), name="test-start"),
    path("test/misnamed/", MisnamedScopeView.as_view(), name="test-misnamed"),
]

pytestmark = [pytest.mark.urls("tests.cyberlab.test_throttling"), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _small_rates(settings):
    settings.THROTTLE_RATES = dict(RATES)


def wrong_login(client: APIClient, username: str, **extra):
    return client.post(reverse("auth-login"), {"username": username, "password": "wrong"}, **extra)


def test_every_limited_response_carries_the_ratelimit_headers(learner_client):
    # when
    first = learner_client.get(reverse("auth-me"))
    second = learner_client.get(reverse("auth-me"))
    # then
    assert first.status_code == 200
    assert first["RateLimit-Limit"] == "100"
    assert first["RateLimit-Remaining"] == "99"
    assert first["RateLimit-Reset"] == "60"
    assert second["RateLimit-Remaining"] == "98"
    assert 0 < int(second["RateLimit-Reset"]) <= 60


def test_over_the_limit_a_request_gets_429_with_retry_after(api_client, settings):
    # given signed-out requests at 2 per minute
    settings.THROTTLE_RATES = {**RATES, "anon": "2/min"}
    for _ in range(2):
        assert api_client.post(reverse("auth-logout")).status_code == 204
    # when
    refused = api_client.post(reverse("auth-logout"))
    # then
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    assert refused["RateLimit-Remaining"] == "0"
    assert refused["RateLimit-Reset"] == refused["Retry-After"]


def test_users_are_limited_each_on_their_own(settings):
    # given two learners at 1 request per minute
    settings.THROTTLE_RATES = {**RATES, "user": "1/min"}
    first, second = APIClient(), APIClient()
    first.force_login(UserFactory())
    second.force_login(UserFactory())
    # when / then
    assert first.get(reverse("auth-me")).status_code == 200
    assert first.get(reverse("auth-me")).status_code == 429
    assert second.get(reverse("auth-me")).status_code == 200


@pytest.mark.parametrize(
    ("num_proxies", "shared"),
    [(0, False), (1, True)],
    ids=["no-proxy-ignores-the-header", "one-proxy-trusts-its-own-hop-only"],
)
def test_forwarded_for_is_trusted_only_for_the_configured_proxies(settings, num_proxies, shared):
    # given two requests through one proxy (REMOTE_ADDR) from the same real client
    # (the last hop), each claiming a different address on the left
    settings.THROTTLE_RATES = {**RATES, "anon": "1/min"}
    settings.NUM_PROXIES = num_proxies
    client = APIClient()
    # when
    first = client.post(reverse("auth-logout"), HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7")
    second = client.post(
        reverse("auth-logout"), REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="2.2.2.2, 203.0.113.7"
    )
    # then: behind one proxy both are 203.0.113.7; without one, the socket address decides
    assert first.status_code == 204
    assert second.status_code == (429 if shared else 204)


def test_login_is_limited_per_username_from_any_address(user):
    # given three wrong passwords for one username from three addresses
    client = APIClient()
    for octet in range(3):
        assert wrong_login(client, user.username, REMOTE_ADDR=f"198.51.100.{octet}").status_code == 400
    # when the right password comes from a fourth address
    refused = client.post(
        reverse("auth-login"),
        {"username": user.username.upper(), "password": PASSWORD},
        REMOTE_ADDR="198.51.100.99",
    )
    # then
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0


def test_login_is_limited_per_address_across_usernames(user):
    client = APIClient()
    for name in ("a", "b", "c"):
        assert wrong_login(client, name).status_code == 400
    assert wrong_login(client, user.username).status_code == 429
    assert wrong_login(client, user.username, REMOTE_ADDR="198.51.100.1").status_code == 400


def test_the_token_endpoint_shares_the_login_limit(user):
    client = APIClient()
    for _ in range(3):
        wrong_login(client, user.username)
    response = client.post(reverse("auth-token"), {"username": user.username, "password": PASSWORD})
    assert response.status_code == 429


def test_the_admin_login_form_is_under_the_login_limit(staff_user):
    # given three wrong passwords on the admin form (a browser posts a form)
    client = Client()
    for _ in range(3):
        wrong = client.post("/admin/login/", {"username": staff_user.username, "password": "x"})
        assert wrong.status_code == 200
        assert wrong["RateLimit-Limit"] == "3"
    # when
    refused = client.post("/admin/login/", {"username": staff_user.username, "password": PASSWORD})
    # then: refused, and so is the API login for that username
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert wrong_login(APIClient(), staff_user.username, REMOTE_ADDR="198.51.100.5").status_code == 429


def test_registration_is_limited_per_address(api_client):
    for number in range(2):
        response = api_client.post(
            reverse("auth-register"),
            {"username": f"new{number}", "email": f"n{number}@example.com", "password": "s3cure-Passw0rd"},
        )
        assert response.status_code == 201
        api_client.logout()
    refused = api_client.post(
        reverse("auth-register"),
        {"username": "new9", "email": "n9@example.com", "password": "s3cure-Passw0rd"},
    )
    assert refused.status_code == 429


def test_only_wrong_flag_answers_count(learner_client):
    # given right answers and unknown flags, as many as you like
    for _ in range(5):
        right = learner_client.post("/test/flag/", {"flag": "right"})
        assert right.status_code == 200
        assert right["RateLimit-Remaining"] == "3"
        assert learner_client.post("/test/flag/", {"flag": "no-such-flag"}).status_code == 404
    # when three wrong answers follow
    wrong = [learner_client.post("/test/flag/", {"flag": "guess"}) for _ in range(3)]
    # then they count down, and the fourth answer of any kind is refused
    assert [r.status_code for r in wrong] == [200, 200, 200]
    assert [r["RateLimit-Remaining"] for r in wrong] == ["2", "1", "0"]
    refused = learner_client.post("/test/flag/", {"flag": "right"})
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60


def test_a_flag_answer_holds_its_slot_while_it_is_checked(learner_client, user, redis):
    # given two wrong answers already counted
    for _ in range(2):
        learner_client.post("/test/flag/", {"flag": "guess"})
    # when a third answer is being checked
    response = learner_client.post("/test/flag/", {"flag": "right", "count_slots": True})
    # then its slot was taken before the view ran (so concurrent guesses cannot pass
    # the limit), and given back after the right answer
    assert response.json()["slots_held_during_view"] == 3
    assert redis.zcard(ratelimit.key(scope="flag", ident=str(user.pk))) == 2


def test_machine_starts_are_limited_per_learner(learner_client):
    assert [learner_client.post("/test/start/").status_code for _ in range(3)] == [202, 202, 429]
    other = APIClient()
    other.force_login(UserFactory())
    assert other.post("/test/start/").status_code == 202


def test_a_scope_without_a_rate_is_a_configuration_error(learner_client):
    with pytest.raises(ImproperlyConfigured, match="no-such-scope"):
        learner_client.get("/test/misnamed/")


def test_a_scope_set_to_none_is_not_limited(learner_client, settings):
    settings.THROTTLE_RATES = {**RATES, "vm_start": "none", "user": "none"}
    responses = [learner_client.post("/test/start/") for _ in range(5)]
    assert {r.status_code for r in responses} == {202}
    assert "RateLimit-Limit" not in responses[0]


def test_redis_down_admits_requests_without_headers_and_logs_once(learner_client, caplog):
    # given Redis does not answer
    caches = dead_redis_caches()
    caplog.set_level(logging.WARNING, logger="cyberlab.ratelimit")
    with override_settings(CACHES=caches, REDIS_RETRY_INTERVAL=0):
        # when
        responses = [learner_client.post("/test/flag/", {"flag": "guess"}) for _ in range(5)]
    # then
    assert [r.status_code for r in responses] == [200] * 5
    assert "RateLimit-Limit" not in responses[0]
    assert len([r for r in caplog.records if r.name == "cyberlab.ratelimit"]) == 1


def test_rates_are_overridden_by_the_environment():
    # given THROTTLE_RATE_REGISTER in the environment of a fresh process
    env = {**os.environ, "THROTTLE_RATE_REGISTER": "1000/hour", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    code = "from django.conf import settings; print(settings.THROTTLE_RATES['register'])"
    # when
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.BASE_DIR,
    )
    # then
    assert result.stdout.strip() == "1000/hour"


def test_the_flag_endpoint_counts_only_wrong_answers_end_to_end(learner_client):
    # given a lab's flag and the flag limit of 3 wrong answers per minute
    from tests.labs.factories import FlagFactory

    flag = FlagFactory(value="CTF{right}")
    other = FlagFactory(lab=flag.lab)
    url = reverse("flag-submit", args=[flag.lab_id, flag.pk])
    other_url = reverse("flag-submit", args=[flag.lab_id, other.pk])
    # when the learner answers right twice (the second is "already solved"), then wrong
    # three times on another flag of the lab
    right = [learner_client.post(url, {"flag": "CTF{right}"}) for _ in range(2)]
    wrong = [learner_client.post(other_url, {"flag": f"CTF{{guess-{n}}}"}) for n in range(3)]
    refused = learner_client.post(other_url, {"flag": "CTF{guess-4}"})
    # then right answers cost nothing, the wrong ones count down, the next is refused
    assert [(r.json()["correct"], r.json()["already_solved"]) for r in right] == [
        (True, False),
        (False, True),
    ]
    assert [r["RateLimit-Remaining"] for r in right] == ["3", "3"]
    assert [r.json()["correct"] for r in wrong] == [False, False, False]
    assert [r["RateLimit-Remaining"] for r in wrong] == ["2", "1", "0"]
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0


def test_a_token_request_is_counted_once_and_its_token_read_once(
    user, redis, settings, django_assert_max_num_queries
):
    # given a script with a token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    client.get(reverse("auth-me"))  # fills the cached profile
    redis.delete(ratelimit.key(scope="user", ident=str(user.pk)))
    # when: one lookup at most (none once the credential cache holds the token) serves
    # the limiter and the view's authentication
    with django_assert_max_num_queries(1):
        response = client.get(reverse("auth-me"))
    # then the request counted once, in the learner's bucket
    assert response.status_code == 200
    assert response["RateLimit-Remaining"] == "99"
    assert redis.zcard(ratelimit.key(scope="user", ident=str(user.pk))) == 1


def test_a_request_refused_before_its_throttle_does_not_count(api_client, redis):
    # given a signed-out client, whose decision is sent before the view runs
    bucket = ratelimit.key(scope="anon", ident="127.0.0.1")
    # when the view refuses it first (signed-in only), then nothing stays counted
    assert api_client.get(reverse("my-vms")).status_code in {401, 403}
    assert redis.zcard(bucket) == 0
    # while a request that reaches its throttle counts
    assert api_client.get(reverse("course-list")).status_code == 200
    assert redis.zcard(bucket) == 1


def test_an_invalid_token_is_refused_and_not_counted(api_client, redis):
    api_client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert api_client.get(reverse("auth-me")).status_code in {401, 403}
    assert redis.keys("ratelimit:*") == []


def test_over_the_limit_a_token_request_gets_429(user, settings):
    settings.THROTTLE_RATES = {**RATES, "user": "2/min"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    assert [client.get(reverse("auth-me")).status_code for _ in range(3)] == [200, 200, 429]


def test_a_busy_script_sees_its_room_count_down_one_request_at_a_time(user):
    # given a script with a token making requests back to back
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    # when
    responses = [client.get(reverse("auth-me")) for _ in range(30)]
    # then the headers tell the truth for each
    assert [r.status_code for r in responses] == [200] * 30
    assert [int(r["RateLimit-Remaining"]) for r in responses] == list(range(99, 69, -1))


def test_a_lowered_rate_applies_at_once_to_a_busy_client(user, settings):
    # given a busy script under a generous rate
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    for _ in range(20):
        assert client.get(reverse("auth-me")).status_code == 200
    # when the rate is cut below what it already used
    settings.THROTTLE_RATES = {**RATES, "user": "10/min"}
    # then its next request is refused
    assert client.get(reverse("auth-me")).status_code == 429
