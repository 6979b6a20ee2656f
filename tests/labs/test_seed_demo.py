"""`manage.py seed_demo`: the demo catalogue and the staff user, idempotently."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from cyberlab.accounts.models import User
from labs.models import Choice, Course, Flag, FlagKind, Lab, Question, QuestionKind, TextMatch

pytestmark = pytest.mark.django_db


def _seed(monkeypatch, password: str | None = None) -> str:
    if password is None:
        monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("DEMO_ADMIN_PASSWORD", password)
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _counts() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (Course, Lab, Flag, Question, Choice, User))


def test_seed_demo_creates_the_welcome_lab_and_is_idempotent(monkeypatch, settings):
    # given an empty database
    settings.VM_DEMO_IMAGE = "cyberlab/demo:test"
    # when the seed runs twice
    _seed(monkeypatch, "demo-pass-123")
    first = _counts()
    _seed(monkeypatch, "demo-pass-123")
    # then nothing is duplicated
    assert _counts() == first
    course = Course.objects.get(slug="intro-to-web-security")
    first_lab = course.labs.order_by("order", "id").first()
    welcome = first_lab.flags.get(kind=FlagKind.STATIC)
    assert welcome.value == "CTF{welcome-to-cyberlab}"
    assert welcome.max_attempts is None
    assert first_lab.machine.image == "cyberlab/demo:test"
    assert first_lab.machine.ports == [{"port": 8080, "protocol": "http"}, {"port": 7000, "protocol": "tcp"}]
    assert first_lab.machine.lifetime_minutes is None
    assert Course.objects.count() == 3


def test_seed_demo_has_flags_of_every_kind_and_questions_of_every_type(monkeypatch):
    _seed(monkeypatch, "demo-pass-123")
    assert set(Flag.objects.values_list("kind", flat=True)) == set(FlagKind.values)
    assert Flag.objects.get(kind=FlagKind.DYNAMIC).lab.machine is not None
    assert set(Question.objects.values_list("kind", flat=True)) == set(QuestionKind.values)
    text_matches = Question.objects.filter(kind=QuestionKind.TEXT).values_list("match", flat=True)
    assert set(text_matches) == set(TextMatch.values)


def test_the_seeded_welcome_flag_can_be_captured(monkeypatch, learner_client):
    _seed(monkeypatch, "demo-pass-123")
    lab = Course.objects.get(slug="intro-to-web-security").labs.order_by("order", "id").first()
    flag = lab.flags.get(kind=FlagKind.STATIC)
    response = learner_client.post(
        reverse("flag-submit", args=[lab.pk, flag.pk]), {"flag": "CTF{welcome-to-cyberlab}"}, format="json"
    )
    assert response.json()["correct"] is True


def test_admin_gets_the_password_from_the_environment(monkeypatch):
    _seed(monkeypatch, "demo-pass-123")
    admin = User.objects.get(username="admin")
    assert admin.is_staff
    assert admin.is_superuser
    assert admin.check_password("demo-pass-123")


def test_without_a_password_a_new_admin_gets_a_generated_one_printed_once(monkeypatch):
    output = _seed(monkeypatch)
    password = output.split("password: ")[1].split()[0]
    assert User.objects.get(username="admin").check_password(password)
    again = _seed(monkeypatch)
    assert "password" not in again
    assert User.objects.get(username="admin").check_password(password)
