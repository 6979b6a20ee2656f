"""Nothing a learner has not earned ever leaves the API: flags, patterns, answers."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from labs import services, urls
from labs.flags import dynamic_flag_value
from labs.models import FlagKind, QuestionKind, TextMatch
from tests.factories import UserFactory
from tests.labs.factories import (
    ChoiceFactory,
    CourseFactory,
    FlagFactory,
    LabFactory,
    MachineTemplateFactory,
    QuestionFactory,
    QuizFactory,
)

pytestmark = pytest.mark.django_db


def _walk(client, bodies: list, name: str, response) -> None:
    assert response.status_code < 500, (name, response.status_code)
    bodies.append((name, response.content.decode()))


def _keys_in(value, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(key)
            _keys_in(item, found)
    elif isinstance(value, list):
        for item in value:
            _keys_in(item, found)
    return found


def test_no_endpoint_returns_a_secret_to_a_learner(learner_client, user):
    # given content with every kind of secret, and another learner's issued flag
    course = CourseFactory(slug="secrets")
    lab = LabFactory(course=course)
    MachineTemplateFactory(lab=lab, environment={"DB_PASSWORD": "env-secret-value"})
    static = FlagFactory(lab=lab, value="CTF{static-secret}")
    regex = FlagFactory(lab=lab, kind=FlagKind.REGEX, value=r"CTF\{regex-secret-\d+\}")
    dynamic = FlagFactory(lab=lab, kind=FlagKind.DYNAMIC, value="")
    services.flag_issue(user=user, flag=dynamic)
    theirs = services.flag_issue(user=UserFactory(), flag=dynamic)
    quiz = QuizFactory(course=course)
    single = QuestionFactory(quiz=quiz, kind=QuestionKind.SINGLE, explanation="explanation-secret-1")
    ChoiceFactory(question=single, text="right one", correct=True)
    wrong_choice = ChoiceFactory(question=single, text="wrong one")
    text = QuestionFactory(
        quiz=quiz,
        kind=QuestionKind.TEXT,
        answer="answer-secret",
        match=TextMatch.IEXACT,
        explanation="expl-2",
    )
    pattern = QuestionFactory(
        quiz=quiz, kind=QuestionKind.TEXT, answer=r"pattern-secret-\d", match=TextMatch.REGEX
    )
    secrets = [
        "CTF{static-secret}",
        r"CTF\{regex-secret-\d+\}",
        "regex-secret",
        dynamic_flag_value(user_id=user.pk, flag_id=dynamic.pk),
        theirs,
        "env-secret-value",
        "answer-secret",
        "pattern-secret",
        "explanation-secret-1",
        "expl-2",
    ]

    # when a learner calls every labs endpoint (wrong answers where answers are taken)
    bodies: list[tuple[str, str]] = []
    _walk(learner_client, bodies, "course-list", learner_client.get(reverse("course-list")))
    _walk(
        learner_client,
        bodies,
        "course-detail",
        learner_client.get(reverse("course-detail", args=[course.slug])),
    )
    _walk(
        learner_client,
        bodies,
        "course-enroll",
        learner_client.post(reverse("course-enroll", args=[course.slug])),
    )
    _walk(learner_client, bodies, "lab-detail", learner_client.get(reverse("lab-detail", args=[lab.pk])))
    for flag in (static, regex, dynamic):
        _walk(
            learner_client,
            bodies,
            "flag-submit",
            learner_client.post(
                reverse("flag-submit", args=[lab.pk, flag.pk]), {"flag": theirs}, format="json"
            ),
        )
    _walk(learner_client, bodies, "quiz-detail", learner_client.get(reverse("quiz-detail", args=[quiz.pk])))
    _walk(
        learner_client,
        bodies,
        "quiz-attempts",
        learner_client.post(
            reverse("quiz-attempts", args=[quiz.pk]),
            {"answers": {str(single.pk): [wrong_choice.pk], str(text.pk): "nope", str(pattern.pk): "nope"}},
            format="json",
        ),
    )
    _walk(learner_client, bodies, "my-progress", learner_client.get(reverse("my-progress")))
    _walk(learner_client, bodies, "auth-me", learner_client.get(reverse("auth-me")))

    # then every labs endpoint was walked
    assert _route_names(urls.urlpatterns) <= {name for name, _ in bodies}
    # and no body holds a secret, a `correct` marker on a choice, or a flag's value field
    for name, body in bodies:
        for secret in secrets:
            assert secret not in body, (name, secret)
        keys = _keys_in(json.loads(body), set())
        assert not keys & {"value", "answer", "match", "environment", "image", "digest"}, (name, keys)
    quiz_body = json.loads(dict(bodies)["quiz-detail"])
    for question in quiz_body["questions"]:
        for choice in question["choices"]:
            assert set(choice) == {"id", "text"}


def _route_names(patterns) -> set[str]:
    names = set()
    for pattern in patterns:
        if hasattr(pattern, "url_patterns"):  # a group of routes under one prefix
            names |= _route_names(pattern.url_patterns)
        else:
            names.add(pattern.name)
    return names
