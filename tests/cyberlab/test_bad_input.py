"""Bad input gets a JSON 4xx in the API's error shape, never a 500 or an HTML page."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.labs.factories import FlagFactory, QuizFactory

NESTED = "[" * 1000 + "]" * 1000


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["detail"]
    assert body["code"]
    return body


@pytest.mark.django_db
def test_deeply_nested_json_to_the_token_endpoint_is_a_400():
    response = APIClient().post("/api/v1/auth/token/", NESTED, content_type="application/json")
    body = assert_error_shape(response, 400)
    assert "nested" in body["detail"]


def test_deeply_nested_json_to_a_flag_is_a_400_and_counts_nothing(learner_client, user):
    # given a flag
    flag = FlagFactory()
    url = f"/api/v1/labs/{flag.lab_id}/flags/{flag.pk}/submit/"
    # when
    response = learner_client.post(url, NESTED, content_type="application/json")
    # then refused, and no submission recorded
    assert_error_shape(response, 400)
    assert not user.submissions.exists()


@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_a_json_error(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"username": "' + "x" * 5000 + '", "password": "p"}'
    response = Client().post("/api/v1/auth/token/", body, content_type="application/json")
    assert_error_shape(response, 400)


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_a_400():
    response = APIClient().post("/api/v1/auth/token/", "{not json", content_type="application/json")
    assert_error_shape(response, 400)


@pytest.mark.django_db
def test_errors_inside_a_nested_field_are_named_by_their_path(learner_client):
    quiz = QuizFactory()
    answers = {"answers": {"7": None}}
    response = learner_client.post(f"/api/v1/quizzes/{quiz.pk}/attempts/", answers, format="json")
    body = assert_error_shape(response, 400)
    # one flat shape, as the schema documents it: a field path to a list of messages
    assert list(body["errors"]) == ["answers.7"]
    assert all(isinstance(message, str) for message in body["errors"]["answers.7"])
    assert body["detail"].startswith("answers.7: ")
