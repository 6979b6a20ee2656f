"""Quizzes: questions without answers, attempts graded on the server, the attempt policy."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection
from django.urls import reverse

from labs import services
from labs.errors import AttemptsExhausted
from labs.models import QuestionKind, QuizAttempt, Solve, TextMatch
from tests.factories import UserFactory
from tests.labs.factories import ChoiceFactory, QuestionFactory, QuizFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def quiz():
    quiz = QuizFactory(pass_mark=50)
    single = QuestionFactory(quiz=quiz, kind=QuestionKind.SINGLE, points=10, order=0, explanation="Port 80.")
    single.right = ChoiceFactory(question=single, text="80", correct=True)
    single.wrong = ChoiceFactory(question=single, text="22")
    multiple = QuestionFactory(quiz=quiz, kind=QuestionKind.MULTIPLE, points=20, order=1, explanation="Both.")
    multiple.right = [
        ChoiceFactory(question=multiple, text="XSS", correct=True),
        ChoiceFactory(question=multiple, text="SQLi", correct=True),
    ]
    multiple.wrong = ChoiceFactory(question=multiple, text="CSS")
    exact = QuestionFactory(quiz=quiz, kind=QuestionKind.TEXT, answer="GET", match=TextMatch.EXACT, order=2)
    iexact = QuestionFactory(
        quiz=quiz, kind=QuestionKind.TEXT, answer="Admin", match=TextMatch.IEXACT, order=3
    )
    regex = QuestionFactory(
        quiz=quiz, kind=QuestionKind.TEXT, answer=r"4\d\d", match=TextMatch.REGEX, order=4
    )
    quiz.q = {"single": single, "multiple": multiple, "exact": exact, "iexact": iexact, "regex": regex}
    return quiz


def _attempt(client, quiz, answers):
    return client.post(reverse("quiz-attempts", args=[quiz.pk]), {"answers": answers}, format="json")


def _all_right(quiz):
    q = quiz.q
    return {
        str(q["single"].pk): [q["single"].right.pk],
        str(q["multiple"].pk): [choice.pk for choice in q["multiple"].right],
        str(q["exact"].pk): "GET",
        str(q["iexact"].pk): " admin ",
        str(q["regex"].pk): "404",
    }


def test_quiz_detail_shows_questions_and_choices_but_never_the_answers(learner_client, quiz):
    body = learner_client.get(reverse("quiz-detail", args=[quiz.pk])).json()
    assert [question["kind"] for question in body["questions"]] == [
        "single",
        "multiple",
        "text",
        "text",
        "text",
    ]
    assert body["questions"][0]["choices"] == [
        {"id": quiz.q["single"].right.pk, "text": "80"},
        {"id": quiz.q["single"].wrong.pk, "text": "22"},
    ]
    for question in body["questions"]:
        assert set(question) == {"id", "text", "kind", "points", "order", "choices", "solved"}
    assert body["progress"]["attempts"] == 0


def test_every_question_type_is_graded_on_the_server(learner_client, user, quiz):
    # when I answer everything right
    response = _attempt(learner_client, quiz, _all_right(quiz))
    # then every question is correct, with points and its explanation
    assert response.status_code == 201
    body = response.json()
    assert body["score"] == body["max_score"] == 60
    assert body["passed"] is True
    assert body["points_awarded"] == 60
    assert all(result["correct"] for result in body["results"])
    assert body["results"][0]["explanation"] == "Port 80."
    assert Solve.objects.filter(user=user, question__quiz=quiz).count() == 5


def test_wrong_answers_score_nothing_and_reveal_no_explanation(learner_client, quiz):
    q = quiz.q
    answers = {
        str(q["single"].pk): [q["single"].wrong.pk],
        str(q["multiple"].pk): [q["multiple"].right[0].pk],  # a subset is not enough
        str(q["exact"].pk): "get",  # exact means exact case
        str(q["iexact"].pk): "root",
        str(q["regex"].pk): "4044",
    }
    body = _attempt(learner_client, quiz, answers).json()
    assert body["score"] == 0
    assert body["passed"] is False
    assert [result["correct"] for result in body["results"]] == [False] * 5
    assert all(result["explanation"] is None for result in body["results"])


def test_points_come_only_for_questions_answered_right_for_the_first_time(learner_client, quiz):
    q = quiz.q
    first = _attempt(learner_client, quiz, {str(q["single"].pk): q["single"].right.pk}).json()
    second = _attempt(learner_client, quiz, _all_right(quiz)).json()
    assert first["points_awarded"] == 10
    assert second["score"] == 60
    assert second["points_awarded"] == 50
    assert second["results"][0]["points"] == 0


def test_max_attempts_is_enforced_with_a_403(learner_client, quiz):
    quiz.max_attempts = 1
    quiz.save()
    first = _attempt(learner_client, quiz, {})
    second = _attempt(learner_client, quiz, {})
    assert first.status_code == 201
    assert first.json()["attempts_left"] == 0
    assert second.status_code == 403
    assert second.json()["code"] == "attempts_exhausted"
    assert QuizAttempt.objects.count() == 1


def test_the_last_allowed_attempt_shows_every_explanation(learner_client, quiz):
    quiz.max_attempts = 1
    quiz.save()
    body = _attempt(learner_client, quiz, {}).json()
    assert body["results"][0]["explanation"] == "Port 80."


def test_minimum_wait_between_attempts_is_a_429_with_retry_after(learner_client, user, quiz):
    quiz.min_wait_seconds = 600
    quiz.save()
    first = _attempt(learner_client, quiz, {})
    second = _attempt(learner_client, quiz, {})
    assert first.status_code == 201
    assert second.status_code == 429
    assert second.json()["code"] == "attempt_too_soon"
    assert 0 < int(second["Retry-After"]) <= 600
    # and after the wait, the next attempt is accepted
    QuizAttempt.objects.update(
        created_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=601)
    )
    assert _attempt(learner_client, quiz, {}).status_code == 201


@pytest.mark.parametrize(
    "answers",
    [
        {"999999": "x"},
        {"single": [1]},
    ],
)
def test_answers_to_questions_not_in_the_quiz_are_a_400(learner_client, quiz, answers):
    response = _attempt(learner_client, quiz, answers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert QuizAttempt.objects.count() == 0


def test_choices_of_another_question_or_badly_shaped_answers_are_a_400(learner_client, quiz):
    q = quiz.q
    cases = [
        {str(q["single"].pk): [q["multiple"].right[0].pk]},
        {str(q["single"].pk): [q["single"].right.pk, q["single"].wrong.pk]},
        {str(q["single"].pk): "80"},
        {str(q["exact"].pk): ["GET"]},
        {str(q["single"].pk): [True]},
    ]
    for answers in cases:
        response = _attempt(learner_client, quiz, answers)
        assert response.status_code == 400, answers
    assert _attempt(learner_client, quiz, {"answers": "nope"}).status_code == 400
    assert learner_client.post(reverse("quiz-attempts", args=[quiz.pk]), {}, format="json").status_code == 400


def test_shuffled_quiz_keeps_one_order_per_learner(learner_client, quiz):
    quiz.shuffle = True
    quiz.save()
    first = learner_client.get(reverse("quiz-detail", args=[quiz.pk])).json()
    again = learner_client.get(reverse("quiz-detail", args=[quiz.pk])).json()
    assert [q["id"] for q in first["questions"]] == [q["id"] for q in again["questions"]]
    assert sorted(q["id"] for q in first["questions"]) == sorted(question.pk for question in quiz.q.values())


def test_quiz_detail_progress_after_an_attempt(learner_client, quiz):
    _attempt(learner_client, quiz, {str(quiz.q["single"].pk): [quiz.q["single"].right.pk]})
    body = learner_client.get(reverse("quiz-detail", args=[quiz.pk])).json()
    assert body["progress"]["attempts"] == 1
    assert body["progress"]["best_score"] == 10
    assert body["progress"]["solved"] == 1
    assert [q["solved"] for q in body["questions"]] == [True, False, False, False, False]


@pytest.mark.django_db(transaction=True)
def test_parallel_attempts_never_exceed_max_attempts():
    # given a quiz allowing one attempt
    user = UserFactory()
    quiz = QuizFactory(max_attempts=1)
    question = QuestionFactory(quiz=quiz)
    right = ChoiceFactory(question=question, correct=True)
    barrier = threading.Barrier(8)
    outcomes = []

    def attempt():
        try:
            barrier.wait()
            services.quiz_attempt_submit(
                user=user, quiz=quiz, answers={str(question.pk): [right.pk]}, max_text_length=100
            )
            outcomes.append("graded")
        except AttemptsExhausted:
            outcomes.append("refused")
        finally:
            connection.close()

    # when eight attempts arrive at once
    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then one was graded, seven refused, and the points were awarded once
    assert sorted(outcomes) == ["graded"] + ["refused"] * 7
    assert QuizAttempt.objects.filter(user=user).count() == 1
    assert Solve.objects.filter(user=user, question=question).count() == 1
