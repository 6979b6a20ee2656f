"""Staff authoring in the admin, with Django's test client."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from labs import validators
from labs.models import Course, Flag, Lab, MachineTemplate, Quiz
from tests.factories import UserFactory
from tests.labs.factories import (
    ChoiceFactory,
    CourseFactory,
    FlagFactory,
    LabFactory,
    MachineTemplateFactory,
    QuestionFactory,
    QuizFactory,
    SolveFactory,
    lab_admin_form,
    machine_inline_form,
)

pytestmark = pytest.mark.django_db

MODELS = [
    "course",
    "lab",
    "machinetemplate",
    "flag",
    "quiz",
    "question",
    "choice",
    "solve",
    "submission",
    "cheatingsignal",
    "issuedflag",
    "quizattempt",
    "enrollment",
]


def test_every_labs_admin_page_renders(admin_client):
    # given one of everything
    solve = SolveFactory()
    MachineTemplateFactory(lab=solve.flag.lab)
    ChoiceFactory()
    # when staff open every changelist and add page, then each answers 200
    for model in MODELS:
        assert admin_client.get(reverse(f"admin:labs_{model}_changelist")).status_code == 200, model
    for model in ["course", "lab", "machinetemplate", "flag", "quiz", "question", "choice", "enrollment"]:
        assert admin_client.get(reverse(f"admin:labs_{model}_add")).status_code == 200, model
    assert admin_client.get(reverse("admin:labs_lab_change", args=[solve.flag.lab_id])).status_code == 200
    assert admin_client.get(reverse("admin:labs_solve_changelist") + "?q=learner").status_code == 200


def test_editing_a_lab_in_the_admin_shows_on_the_next_api_request(
    admin_client, learner_client, django_capture_on_commit_callbacks
):
    # given a lab a learner has read (so it is cached)
    lab = LabFactory(title="Old title")
    assert learner_client.get(reverse("lab-detail", args=[lab.pk])).json()["title"] == "Old title"
    learner_client.get(reverse("course-detail", args=[lab.course.slug]))
    # when staff rename it in the admin
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:labs_lab_change", args=[lab.pk]), lab_admin_form(lab, title="New title")
        )
    assert response.status_code == 302, response.content[:2000]
    # then the learner's next requests show the new title
    assert learner_client.get(reverse("lab-detail", args=[lab.pk])).json()["title"] == "New title"
    course = learner_client.get(reverse("course-detail", args=[lab.course.slug])).json()
    assert course["labs"][0]["title"] == "New title"


def test_adding_a_flag_inline_updates_the_cached_lab(
    admin_client, learner_client, django_capture_on_commit_callbacks
):
    lab = LabFactory()
    assert learner_client.get(reverse("lab-detail", args=[lab.pk])).json()["flags"] == []
    form = lab_admin_form(
        lab,
        **{
            "flags-TOTAL_FORMS": "1",
            "flags-0-prompt": "Find it",
            "flags-0-points": "25",
            "flags-0-order": "0",
            "flags-0-kind": "static",
            "flags-0-value": "CTF{inline}",
            "flags-0-case_sensitive": "on",
        },
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:labs_lab_change", args=[lab.pk]), form)
    assert response.status_code == 302
    flags = learner_client.get(reverse("lab-detail", args=[lab.pk])).json()["flags"]
    assert [flag["prompt"] for flag in flags] == ["Find it"]


def test_a_regex_flag_with_a_broken_pattern_is_refused(admin_client):
    lab = LabFactory()
    form = lab_admin_form(
        lab,
        **{
            "flags-TOTAL_FORMS": "1",
            "flags-0-prompt": "Broken",
            "flags-0-points": "10",
            "flags-0-order": "0",
            "flags-0-kind": "regex",
            "flags-0-value": "CTF{(",
        },
    )
    response = admin_client.post(reverse("admin:labs_lab_change", args=[lab.pk]), form)
    assert response.status_code == 200
    assert b"Not a valid regular expression" in response.content
    assert not Flag.objects.exists()


def test_creating_a_course_with_the_prepopulated_slug_and_inline_lab(admin_client):
    response = admin_client.post(
        reverse("admin:labs_course_add"),
        {
            "slug": "new-course",
            "title": "New course",
            "difficulty": "easy",
            "tags": '["web"]',
            "order": "3",
            "labs-TOTAL_FORMS": "1",
            "labs-INITIAL_FORMS": "0",
            "labs-0-title": "First lab",
            "labs-0-difficulty": "easy",
            "labs-0-order": "0",
            "quizzes-TOTAL_FORMS": "0",
            "quizzes-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    course = Course.objects.get(slug="new-course")
    assert course.labs.get().title == "First lab"
    assert course.published is False
    page = admin_client.get(reverse("admin:labs_course_add")).content.decode()
    assert "prepopulated" in page


def test_publish_and_unpublish_list_actions_change_what_learners_see(
    admin_client, learner_client, django_capture_on_commit_callbacks
):
    # given a published course a learner has listed
    course = CourseFactory()
    assert learner_client.get(reverse("course-list")).json()["count"] == 1
    changelist = reverse("admin:labs_course_changelist")
    # when staff withdraw it with the list action
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(changelist, {"action": "unpublish", "_selected_action": [course.pk]})
    # then it is gone for learners at once, and back once published
    assert learner_client.get(reverse("course-list")).json()["count"] == 0
    assert learner_client.get(reverse("course-detail", args=[course.slug])).status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(changelist, {"action": "publish", "_selected_action": [course.pk]})
    assert learner_client.get(reverse("course-list")).json()["count"] == 1


def test_lab_and_quiz_publish_actions(admin_client, django_capture_on_commit_callbacks):
    lab = LabFactory(published=False)
    quiz = QuizFactory(published=False)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:labs_lab_changelist"), {"action": "publish", "_selected_action": [lab.pk]}
        )
        admin_client.post(
            reverse("admin:labs_quiz_changelist"), {"action": "publish", "_selected_action": [quiz.pk]}
        )
    assert Lab.objects.get(pk=lab.pk).published
    assert Quiz.objects.get(pk=quiz.pk).published


def test_a_single_choice_question_needs_exactly_one_correct_choice(admin_client):
    question = QuestionFactory(kind="single")
    data = {
        "quiz": question.quiz_id,
        "text": question.text,
        "kind": "single",
        "points": "10",
        "answer": "",
        "match": "iexact",
        "explanation": "",
        "order": "0",
        "choices-TOTAL_FORMS": "2",
        "choices-INITIAL_FORMS": "0",
        "choices-0-text": "A",
        "choices-0-correct": "on",
        "choices-0-order": "0",
        "choices-1-text": "B",
        "choices-1-correct": "on",
        "choices-1-order": "1",
    }
    response = admin_client.post(reverse("admin:labs_question_change", args=[question.pk]), data)
    assert response.status_code == 200
    assert b"exactly one correct choice" in response.content
    del data["choices-1-correct"]
    response = admin_client.post(reverse("admin:labs_question_change", args=[question.pk]), data)
    assert response.status_code == 302


def test_a_learners_progress_shows_on_their_user_page(admin_client):
    # given a learner with a solve
    flag = FlagFactory(prompt="Find the admin panel", points=77)
    solve = SolveFactory(flag=flag)
    # when staff open the user page
    page = admin_client.get(reverse("admin:accounts_user_change", args=[solve.user_id])).content.decode()
    # then it shows their points and solves
    assert "77" in page
    assert "Find the admin panel" in page
    assert "flag submissions" in page


def test_progress_and_audit_rows_cannot_be_edited_by_hand(admin_client):
    solve = SolveFactory()
    assert admin_client.get(reverse("admin:labs_solve_add")).status_code == 403
    response = admin_client.post(reverse("admin:labs_solve_change", args=[solve.pk]), {"points": 1})
    assert response.status_code == 403


def test_staff_groups_exist_with_their_permissions():
    authors = Group.objects.get(name="authors")
    instructors = Group.objects.get(name="instructors")
    operators = Group.objects.get(name="operators")
    author_perms = set(authors.permissions.values_list("codename", flat=True))
    instructor_perms = set(instructors.permissions.values_list("codename", flat=True))
    assert {"add_course", "change_lab", "delete_flag", "change_question", "add_choice"} <= author_perms
    assert "view_submission" not in author_perms
    assert {"view_submission", "view_solve", "view_cheatingsignal", "view_user"} <= instructor_perms
    assert not any(perm.startswith(("add_", "change_", "delete_")) for perm in instructor_perms)
    assert "view_machinetemplate" in set(operators.permissions.values_list("codename", flat=True))


def test_an_author_edits_content_but_cannot_read_submissions(django_capture_on_commit_callbacks):
    # given a staff member in the authors group
    author = UserFactory(is_staff=True)
    author.groups.add(Group.objects.get(name="authors"))
    client = Client()
    client.force_login(author)
    course = CourseFactory()
    # then content pages open and audit pages do not
    assert client.get(reverse("admin:labs_course_change", args=[course.pk])).status_code == 200
    assert client.get(reverse("admin:labs_submission_changelist")).status_code == 403


def test_an_instructor_reads_progress_but_cannot_edit_content():
    instructor = UserFactory(is_staff=True)
    instructor.groups.add(Group.objects.get(name="instructors"))
    client = Client()
    client.force_login(instructor)
    solve = SolveFactory()
    assert client.get(reverse("admin:labs_submission_changelist")).status_code == 200
    assert client.get(reverse("admin:accounts_user_change", args=[solve.user_id])).status_code == 200
    assert client.get(reverse("admin:labs_course_add")).status_code == 403


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ports", '[{"port": "8080", "protocol": "http"}]'),
        ("ports", '[{"port": 70000}]'),
        ("ports", '[{"port": 22, "protocol": "telnet"}]'),
        ("ports", '{"port": 22}'),
        ("environment", '{"A": 1}'),
        ("capabilities", '"NET_ADMIN"'),
    ],
)
def test_a_machine_template_of_the_wrong_shape_is_refused(admin_client, field, value):
    lab = LabFactory()
    data = {
        "lab": lab.pk,
        "image": "cyberlab/demo:latest",
        "ports": '[{"port": 8080, "protocol": "http"}]',
        "memory_mb": "64",
        "cpus": "0.5",
        "environment": "{}",
        "capabilities": "[]",
        "ssh_user": "user",
        field: value,
    }
    response = admin_client.post(reverse("admin:labs_machinetemplate_add"), data)
    assert response.status_code == 200
    assert not MachineTemplate.objects.exists()


def test_a_well_formed_machine_template_is_saved(admin_client):
    lab = LabFactory()
    data = {
        "lab": lab.pk,
        "image": "cyberlab/demo:latest",
        "ports": '[{"port": 8080, "protocol": "http"}, {"port": 22, "protocol": "ssh"}]',
        "memory_mb": "64",
        "cpus": "0.5",
        "environment": '{"MODE": "easy"}',
        "capabilities": "[]",
        "ssh_user": "user",
    }
    assert admin_client.post(reverse("admin:labs_machinetemplate_add"), data).status_code == 302


def _template_form(lab: Lab, **changes) -> dict:
    data = {
        "lab": lab.pk,
        "image": "cyberlab/demo:latest",
        "ports": '[{"port": 8080, "protocol": "http"}]',
        "memory_mb": "64",
        "cpus": "0.5",
        "environment": "{}",
        "capabilities": "[]",
        "ssh_user": "user",
    }
    data.update(changes)
    return data


@pytest.fixture
def no_tuesday_images(monkeypatch):
    """A registered check of the test's own, in place of whatever apps registered."""
    seen = []

    def check(template: MachineTemplate) -> list[str]:
        seen.append(template)
        return [f"{template.image} is refused on Tuesdays."] if "tuesday" in template.image else []

    monkeypatch.setattr(validators, "machine_template_checks", [])
    validators.register_machine_template_check(check)
    validators.register_machine_template_check(check)  # registering twice runs it once
    return seen


def test_a_machine_template_failing_a_registered_check_is_refused_with_its_words(
    admin_client, no_tuesday_images
):
    # given a lab, and a check registered by another app
    lab = LabFactory()
    # when staff save a template the check refuses
    response = admin_client.post(
        reverse("admin:labs_machinetemplate_add"), _template_form(lab, image="cyberlab/tuesday:1")
    )
    # then the form shows the check's words, saves nothing, and the check saw the values typed
    assert response.status_code == 200
    assert b"cyberlab/tuesday:1 is refused on Tuesdays." in response.content
    assert not MachineTemplate.objects.exists()
    assert [template.image for template in no_tuesday_images] == ["cyberlab/tuesday:1"]


def test_the_lab_page_runs_the_registered_checks_on_its_machine_inline(admin_client, no_tuesday_images):
    # given a lab without a machine
    lab = LabFactory(title="Before")
    form = lab_admin_form(
        lab,
        title="After",
        **machine_inline_form(image="cyberlab/tuesday:1"),
    )
    # when staff add a machine the check refuses, inline on the lab
    response = admin_client.post(reverse("admin:labs_lab_change", args=[lab.pk]), form)
    # then the lab page shows the problem and nothing of the edit is saved
    assert response.status_code == 200
    assert b"cyberlab/tuesday:1 is refused on Tuesdays." in response.content
    assert not MachineTemplate.objects.exists()
    assert Lab.objects.get(pk=lab.pk).title == "Before"


def test_a_malformed_template_is_reported_by_its_shape_without_running_the_checks(
    admin_client, no_tuesday_images
):
    response = admin_client.post(
        reverse("admin:labs_machinetemplate_add"),
        _template_form(LabFactory(), image="cyberlab/tuesday:1", environment='{"A": 1}'),
    )
    assert response.status_code == 200
    assert b"An object of strings" in response.content
    assert no_tuesday_images == []
