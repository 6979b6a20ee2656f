"""The catalogue endpoints as learners, visitors and staff see them."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from cyberlab import redis_client
from labs import cache
from labs.models import Enrollment
from tests.conftest import dead_redis_caches
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


def _course_with_content(*, labs: int = 2, slug: str = "web"):
    course = CourseFactory(slug=slug, title="Web", description="# Intro\n\n<script>x()</script>")
    lab_objects = []
    for index in range(labs):
        lab = LabFactory(course=course, order=index)
        FlagFactory(lab=lab, points=100)
        FlagFactory(lab=lab, points=50)
        lab_objects.append(lab)
    MachineTemplateFactory(lab=lab_objects[0])
    quiz = QuizFactory(course=course)
    question = QuestionFactory(quiz=quiz, points=10)
    ChoiceFactory(question=question, correct=True)
    ChoiceFactory(question=question)
    return course, lab_objects, quiz


def test_course_list_is_paginated_and_shows_published_courses_only(api_client):
    # given a published course with content and an unpublished one
    _course_with_content()
    CourseFactory(slug="draft", published=False)
    # when a visitor lists the catalogue
    response = api_client.get(reverse("course-list"))
    # then only the published course is listed, with its totals
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert set(body) == {"count", "next", "previous", "results"}
    course = body["results"][0]
    assert course["slug"] == "web"
    assert course["lab_count"] == 2
    assert course["flag_count"] == 4
    assert course["question_count"] == 1
    assert course["total_points"] == 310


def test_a_cached_course_list_costs_no_database_query(api_client, django_assert_num_queries, redis):
    # given a warm course list
    _course_with_content()
    api_client.get(reverse("course-list"))
    assert redis.get("courses:list") is not None
    # when it is read again
    with django_assert_num_queries(0):
        response = api_client.get(reverse("course-list"))
    # then it is served from Redis
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_catalogue_entries_are_plain_json_under_the_documented_keys(api_client, learner_client, redis):
    # given a course, lab and quiz read once
    course, labs, quiz = _course_with_content()
    api_client.get(reverse("course-list"))
    api_client.get(reverse("course-detail", args=[course.slug]))
    learner_client.get(reverse("lab-detail", args=[labs[0].pk]))
    learner_client.get(reverse("quiz-detail", args=[quiz.pk]))
    # then each entry is JSON with a TTL of CATALOGUE_CACHE_TTL at most
    for key in ["courses:list", f"course:{course.slug}", f"lab:{labs[0].pk}", f"quiz:{quiz.pk}"]:
        raw = redis.get(key)
        assert raw is not None, key
        json.loads(raw)
        assert 0 < redis.ttl(key) <= 15 * 60


def test_course_detail_lists_labs_and_quizzes_with_my_progress(learner_client, user):
    # given a course where I solved one flag of the first lab and enrolled
    course, labs, quiz = _course_with_content()
    flag = labs[0].flags.first()
    SolveFactory(user=user, flag=flag)
    Enrollment.objects.create(user=user, course=course)
    # when I read the course
    body = learner_client.get(reverse("course-detail", args=[course.slug])).json()
    # then labs and quizzes carry ids and my progress
    assert [lab["id"] for lab in body["labs"]] == [lab.pk for lab in labs]
    assert body["labs"][0]["progress"] == {"solved": 1, "points": flag.points, "completed": False}
    assert body["labs"][0]["has_machine"] is True
    assert body["labs"][1]["progress"]["solved"] == 0
    assert body["quizzes"][0]["id"] == quiz.pk
    assert body["quizzes"][0]["progress"]["attempts"] == 0
    assert body["progress"]["enrolled"] is True
    assert body["progress"]["solved"] == 1
    assert body["progress"]["total"] == 5
    assert body["progress"]["percent"] == 20


def test_progress_is_never_stored_in_the_shared_entry(learner_client, user, redis):
    # given a learner with a solve
    course, labs, _ = _course_with_content()
    SolveFactory(user=user, flag=labs[0].flags.first())
    # when they read the course
    learner_client.get(reverse("course-detail", args=[course.slug]))
    # then the shared entry has no progress in it
    entry = json.loads(redis.get(f"course:{course.slug}"))
    assert "progress" not in entry
    assert all("progress" not in lab for lab in entry["labs"])


def test_course_description_is_served_raw_and_rendered_with_html_escaped(api_client):
    # given a description with a heading and a script tag
    course, _, _ = _course_with_content()
    # when it is read
    body = api_client.get(reverse("course-detail", args=[course.slug])).json()
    # then the raw Markdown and safe HTML are both there
    assert body["description"] == course.description
    assert "<h1>Intro</h1>" in body["description_html"]
    assert "<script>" not in body["description_html"]
    assert "&lt;script&gt;" in body["description_html"]
    assert body["progress"] is None


def _labs_queries(client, url) -> list[str]:
    with CaptureQueriesContext(connection) as context:
        assert client.get(url).status_code == 200
    return [query["sql"] for query in context.captured_queries if '"labs_' in query["sql"]]


def test_course_detail_query_count_does_not_grow_with_labs(learner_client):
    # given a course of 2 labs and one of 8, signed in, cold cache
    small, _, _ = _course_with_content(labs=2, slug="small")
    large, _, _ = _course_with_content(labs=8, slug="large")
    small_url = reverse("course-detail", args=[small.slug])
    large_url = reverse("course-detail", args=[large.slug])
    # when each is read cold, then warm
    cold = [_labs_queries(learner_client, small_url), _labs_queries(learner_client, large_url)]
    warm = [_labs_queries(learner_client, small_url), _labs_queries(learner_client, large_url)]
    # then both sizes cost the same: 5 queries to build the shared part, 3 for my progress
    assert [len(queries) for queries in cold] == [8, 8]
    assert [len(queries) for queries in warm] == [3, 3]


def test_unpublished_content_is_404_for_learners(learner_client):
    # given a draft course, a draft lab in a published course and a draft quiz
    draft_course = CourseFactory(published=False)
    draft_lab = LabFactory(published=False)
    lab_in_draft_course = LabFactory(course=draft_course)
    draft_quiz = QuizFactory(published=False)
    # when a learner asks for them
    urls = [
        reverse("course-detail", args=[draft_course.slug]),
        reverse("course-enroll", args=[draft_course.slug]),
        reverse("lab-detail", args=[draft_lab.pk]),
        reverse("lab-detail", args=[lab_in_draft_course.pk]),
        reverse("quiz-detail", args=[draft_quiz.pk]),
    ]
    # then every one is a JSON 404
    for url in urls:
        method = learner_client.post if url.endswith("enroll/") else learner_client.get
        response = method(url)
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found"


def test_draft_labs_are_left_out_of_a_published_course(api_client):
    # given a published course with a draft lab
    course, labs, _ = _course_with_content()
    LabFactory(course=course, published=False, title="Secret draft")
    # when a visitor reads it
    body = api_client.get(reverse("course-detail", args=[course.slug])).json()
    # then the draft is not listed
    assert [lab["id"] for lab in body["labs"]] == [lab.pk for lab in labs]


def test_staff_preview_sees_drafts_and_never_touches_the_shared_cache(staff_client, redis):
    # given a draft course with a draft lab and quiz
    course = CourseFactory(published=False)
    lab = LabFactory(course=course, published=False)
    quiz = QuizFactory(course=course, published=False)
    # when staff read them
    listed = staff_client.get(reverse("course-list")).json()
    detail = staff_client.get(reverse("course-detail", args=[course.slug]))
    lab_response = staff_client.get(reverse("lab-detail", args=[lab.pk]))
    quiz_response = staff_client.get(reverse("quiz-detail", args=[quiz.pk]))
    # then they see everything, marked unpublished, and no shared entry was written
    assert [item["slug"] for item in listed["results"]] == [course.slug]
    assert detail.status_code == 200
    assert detail.json()["published"] is False
    assert lab_response.status_code == 200
    assert quiz_response.status_code == 200
    assert redis.keys("course*") == []
    assert redis.keys("lab:*") == []
    assert redis.keys("quiz:*") == []


def test_staff_preview_does_not_read_a_stale_shared_entry(staff_client, redis):
    # given a shared entry that disagrees with Postgres
    course = CourseFactory(title="Real title")
    redis.set(f"course:{course.slug}", json.dumps({"title": "Cached title"}))
    # when staff read the course
    body = staff_client.get(reverse("course-detail", args=[course.slug])).json()
    # then they see Postgres
    assert body["title"] == "Real title"


def test_lab_detail_shows_flags_solved_by_me_and_the_machine_summary(learner_client, user):
    # given a lab with a machine and two flags, one with limited attempts, one solved
    lab = LabFactory(description="Look **closely**.")
    MachineTemplateFactory(lab=lab, environment={"SECRET": "hunter2"})
    solved = FlagFactory(lab=lab, order=0)
    limited = FlagFactory(lab=lab, order=1, max_attempts=3)
    SolveFactory(user=user, flag=solved)
    # when I read the lab
    body = learner_client.get(reverse("lab-detail", args=[lab.pk])).json()
    # then flags carry prompt, points and solved-by-me, and the machine is a summary
    assert [(flag["id"], flag["solved"]) for flag in body["flags"]] == [
        (solved.pk, True),
        (limited.pk, False),
    ]
    assert body["flags"][1]["attempts_left"] == 3
    assert body["flags"][0]["prompt"] == solved.prompt
    assert body["machine"]["ports"] == [{"port": 8080, "protocol": "http"}]
    assert "hunter2" not in json.dumps(body)
    assert "<strong>closely</strong>" in body["description_html"]
    assert body["progress"]["solved"] == 1


def test_lab_without_machine_has_machine_null(learner_client):
    lab = LabFactory()
    body = learner_client.get(reverse("lab-detail", args=[lab.pk])).json()
    assert body["machine"] is None


def test_lab_and_quiz_need_a_signed_in_learner(api_client):
    lab = LabFactory()
    quiz = QuizFactory()
    assert api_client.get(reverse("lab-detail", args=[lab.pk])).status_code == 403
    assert api_client.get(reverse("quiz-detail", args=[quiz.pk])).status_code == 403
    assert api_client.get(reverse("my-progress")).status_code == 403


def test_enroll_creates_once_and_then_answers_200(learner_client, user):
    course = CourseFactory()
    first = learner_client.post(reverse("course-enroll", args=[course.slug]))
    second = learner_client.post(reverse("course-enroll", args=[course.slug]))
    assert first.status_code == 201
    assert first.json()["enrolled"] is True
    assert second.status_code == 200
    assert Enrollment.objects.filter(user=user, course=course).count() == 1


def test_my_progress_lists_solves_points_and_course_completion(learner_client, user):
    # given one solve in a course I enrolled in, and an enrolment in an untouched course
    _, labs, _ = _course_with_content()
    other = CourseFactory(slug="other")
    LabFactory(course=other)
    flag = labs[0].flags.first()
    SolveFactory(user=user, flag=flag)
    Enrollment.objects.create(user=user, course=other)
    # when I read my progress
    body = learner_client.get(reverse("my-progress")).json()
    # then it shows the solve, the points, and both courses
    assert body["points"] == flag.points
    assert body["solves"][0]["flag_id"] == flag.pk
    assert body["solves"][0]["source"] == "flag"
    assert body["solves"][0]["lab_id"] == labs[0].pk
    by_slug = {course["slug"]: course for course in body["courses"]}
    assert by_slug["web"]["solved"] == 1
    assert by_slug["web"]["total"] == 5
    assert by_slug["web"]["enrolled"] is False
    assert by_slug["other"]["enrolled"] is True
    assert by_slug["other"]["percent"] == 0


def test_auth_me_includes_my_points(learner_client, user):
    flag = FlagFactory(points=42)
    SolveFactory(user=user, flag=flag)
    assert learner_client.get(reverse("auth-me")).json()["points"] == 42


def test_catalogue_answers_from_postgres_when_redis_is_down(api_client, settings):
    # given a course, and Redis configured at a port nobody listens on
    course, _, _ = _course_with_content()
    settings.CACHES = dead_redis_caches()
    # when the catalogue is read
    listed = api_client.get(reverse("course-list"))
    detail = api_client.get(reverse("course-detail", args=[course.slug]))
    # then it answers from Postgres, and the outage was noticed
    assert listed.status_code == 200
    assert listed.json()["count"] == 1
    assert detail.status_code == 200
    assert redis_client.incident.is_down


def test_cache_keys_are_built_in_one_place():
    assert cache.courses_list_key() == "courses:list"
    assert cache.course_key(slug="web") == "course:web"
    assert cache.lab_key(lab_id=3) == "lab:3"
    assert cache.quiz_key(quiz_id=4) == "quiz:4"
