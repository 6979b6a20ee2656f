"""The API contract as the OpenAPI schema states it, and the answers that must match it.

The SPA is generated from the schema at `/api/v1/schema/`, so what it documents is a
promise: every list is the paginated envelope, every operation says how it fails, and
every body sent is exactly what its schema describes (no undocumented key, none missing).
"""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from labs.models import Enrollment
from tests.labs.factories import (
    ChoiceFactory,
    CourseFactory,
    FlagFactory,
    LabFactory,
    MachineTemplateFactory,
    QuestionFactory,
    QuizFactory,
    SolveFactory,
)

pytestmark = pytest.mark.django_db

API = "/api/v1/"
METHODS = ("get", "post", "put", "patch", "delete")

# The lists of API.md, by their path in the schema.
LIST_ENDPOINTS = [
    "courses/",
    "auth/sessions/",
    "vms/",
    "admin/vms/",
    "leaderboard/",
    "leaderboard/courses/{slug}/",
    "leaderboard/weekly/",
]

# Who answers under which paths, so a failure names the part of the API it is in.
AREAS = {
    "accounts": ("auth/",),
    "labs": ("courses/", "labs/{lab_id}/", "quizzes/", "me/progress/"),
    "vms": ("labs/{lab_id}/vm/", "vms/", "admin/vms/"),
    "leaderboard": ("leaderboard/",),
}


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = APIClient().get(f"{API}schema/?format=json")
    assert response.status_code == 200
    return response.json()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = schema["components"]["schemas"][name]
    return node


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path.removeprefix(API), method, operation


def _area(path: str) -> str:
    # The longest matching prefix wins: `labs/{lab_id}/vm/` is the machines', not the labs'.
    matches = [
        (len(prefix), area)
        for area, prefixes in AREAS.items()
        for prefix in prefixes
        if path.startswith(prefix)
    ]
    return max(matches)[1] if matches else "other"


# --- lists --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_every_list_documents_the_paginated_envelope(schema, path):
    # given the list's GET operation in the schema
    operation = schema["paths"][f"{API}{path}"]["get"]
    # when its 200 body is resolved
    body = _resolve(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
    # then it is the envelope, and its results are an array
    assert body.get("type") == "object", (path, body)
    assert {"count", "next", "previous", "results"} <= set(body.get("properties", {})), (path, body)
    assert body["properties"]["results"]["type"] == "array"


@pytest.mark.parametrize("area", [*AREAS, "other"])
def test_every_operation_documents_how_it_fails(schema, area):
    # given the operations of one part of the API
    operations = [(path, method, op) for path, method, op in _operations(schema) if _area(path) == area]
    # then each documents at least one 4xx answer
    undocumented = [
        f"{method.upper()} {path}"
        for path, method, operation in operations
        if not any(code.startswith("4") for code in operation["responses"])
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    "query",
    ["limit=abc", "limit=0", "limit=-1", "offset=-1", "offset=99999999999999999999"],
)
@pytest.mark.parametrize("route", ["course-list", "auth-sessions"])
def test_a_bad_page_parameter_is_a_400_naming_it(learner_client, route, query):
    # when a list is asked for a page that is not a page
    response = learner_client.get(f"{reverse(route)}?{query}")
    # then it is refused with a message about that parameter, not served a default page
    assert response.status_code == 400
    body = response.json()
    name = query.split("=")[0]
    assert body["code"] == "invalid"
    assert body["detail"]
    messages = body["errors"][name]
    assert messages
    assert all(isinstance(message, str) and message for message in messages)


# --- bodies match the schema --------------------------------------------------------------


def _mismatches(schema: dict, node: dict, value, where: str = "body") -> list[str]:
    """Where `value` differs from the schema `node`: undocumented keys count as differences."""
    node = _resolve(schema, node)
    if value is None:
        return [] if node.get("nullable") else [f"{where}: null is not documented"]
    for combinator in ("allOf", "oneOf", "anyOf"):
        if combinator in node:
            options = [_mismatches(schema, option, value, where) for option in node[combinator]]
            if combinator == "allOf":
                return [problem for problems in options for problem in problems]
            return [] if any(not problems for problems in options) else options[0]
    if "enum" in node and value not in node["enum"]:
        return [f"{where}: {value!r} is not one of {node['enum']}"]
    kind = node.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        properties = node.get("properties", {})
        problems = [f"{where}: missing {key!r}" for key in node.get("required", []) if key not in value]
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                problems += _mismatches(schema, properties[key], item, f"{where}.{key}")
            elif isinstance(extra, dict):
                problems += _mismatches(schema, extra, item, f"{where}.{key}")
            elif not extra:
                problems.append(f"{where}: {key!r} is not documented")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {value!r}"]
        items = node.get("items", {})
        return [
            problem
            for index, item in enumerate(value)
            for problem in _mismatches(schema, items, item, f"{where}[{index}]")
        ]
    checks = {
        "string": lambda v: isinstance(v, str) and _string_format_holds(node.get("format"), v),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if kind in checks and not checks[kind](value):
        return [f"{where}: {value!r} is not a {node.get('format') or kind}"]
    return []


def _string_format_holds(form: str | None, value: str) -> bool:
    try:
        if form == "date-time":
            datetime.datetime.fromisoformat(value)
        elif form == "uuid":
            uuid.UUID(value)
    except ValueError:
        return False
    return True


def _assert_documented(schema: dict, path: str, method: str, response) -> None:
    operation = schema["paths"][f"{API}{path}"][method]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, (method, path, response.status_code)
    body_schema = documented["content"]["application/json"]["schema"]
    assert _mismatches(schema, body_schema, response.json()) == [], (method, path)


@pytest.fixture
def content(user):
    """A course with a lab (machine, a limited flag, a solved one) and a quiz, enrolled."""
    course = CourseFactory(slug="contract", description="# Contract")
    lab = LabFactory(course=course, description="Read *this*.")
    MachineTemplateFactory(lab=lab, ports=[{"port": 22, "protocol": "ssh"}, {"port": 8080}])
    solved = FlagFactory(lab=lab, value="CTF{solved}")
    limited = FlagFactory(lab=lab, value="CTF{limited}", max_attempts=3)
    SolveFactory(user=user, flag=solved)
    quiz = QuizFactory(course=course, max_attempts=5)
    question = QuestionFactory(quiz=quiz)
    ChoiceFactory(question=question, correct=True)
    wrong = ChoiceFactory(question=question)
    Enrollment.objects.create(user=user, course=course)
    return {"course": course, "lab": lab, "flag": limited, "quiz": quiz, "question": question, "wrong": wrong}


def test_catalogue_bodies_are_exactly_what_the_schema_documents(schema, content, api_client, learner_client):
    course, lab, quiz = content["course"], content["lab"], content["quiz"]
    # when a visitor and a learner read the catalogue, cold and then from the cache
    for client in (api_client, learner_client, api_client, learner_client):
        _assert_documented(schema, "courses/", "get", client.get(reverse("course-list")))
        _assert_documented(
            schema, "courses/{slug}/", "get", client.get(reverse("course-detail", args=[course.slug]))
        )
    for _ in range(2):
        _assert_documented(
            schema, "labs/{lab_id}/", "get", learner_client.get(reverse("lab-detail", args=[lab.pk]))
        )
        _assert_documented(
            schema, "quizzes/{quiz_id}/", "get", learner_client.get(reverse("quiz-detail", args=[quiz.pk]))
        )


def test_action_and_progress_bodies_are_exactly_what_the_schema_documents(schema, content, learner_client):
    lab, flag, quiz = content["lab"], content["flag"], content["quiz"]
    enroll = learner_client.post(reverse("course-enroll", args=[content["course"].slug]))
    submit = learner_client.post(
        reverse("flag-submit", args=[lab.pk, flag.pk]), {"flag": "CTF{no}"}, format="json"
    )
    attempt = learner_client.post(
        reverse("quiz-attempts", args=[quiz.pk]),
        {"answers": {str(content["question"].pk): [content["wrong"].pk]}},
        format="json",
    )
    _assert_documented(schema, "courses/{slug}/enroll/", "post", enroll)
    _assert_documented(schema, "labs/{lab_id}/flags/{flag_id}/submit/", "post", submit)
    _assert_documented(schema, "quizzes/{quiz_id}/attempts/", "post", attempt)
    _assert_documented(schema, "me/progress/", "get", learner_client.get(reverse("my-progress")))


def test_account_bodies_are_exactly_what_the_schema_documents(schema, user, learner_client):
    _assert_documented(schema, "auth/me/", "get", learner_client.get(reverse("auth-me")))
    _assert_documented(schema, "auth/sessions/", "get", learner_client.get(reverse("auth-sessions")))
    _assert_documented(
        schema,
        "auth/sessions/revoke-others/",
        "post",
        learner_client.post(reverse("auth-sessions-revoke-others")),
    )
    _assert_documented(schema, "auth/me/", "get", APIClient().get(reverse("auth-me")))


def test_error_bodies_are_exactly_what_the_schema_documents(schema, learner_client):
    _assert_documented(schema, "courses/", "get", learner_client.get(f"{reverse('course-list')}?limit=abc"))
    _assert_documented(
        schema, "courses/{slug}/", "get", learner_client.get(reverse("course-detail", args=["none"]))
    )
