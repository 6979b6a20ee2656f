import factory

from labs import models
from tests.factories import UserFactory


class CourseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Course

    slug = factory.Sequence(lambda n: f"course-{n}")
    title = factory.Sequence(lambda n: f"Course {n}")
    summary = "A course."
    published = True


class LabFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Lab

    course = factory.SubFactory(CourseFactory)
    title = factory.Sequence(lambda n: f"Lab {n}")
    description = "Find the flag."
    published = True


class MachineTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.MachineTemplate

    lab = factory.SubFactory(LabFactory)
    image = "cyberlab/demo:latest"
    ports = factory.LazyFunction(lambda: [{"port": 8080, "protocol": "http"}])
    memory_mb = 64
    cpus = "0.25"


class FlagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Flag

    lab = factory.SubFactory(LabFactory)
    prompt = factory.Sequence(lambda n: f"Find flag {n}")
    points = 100
    kind = models.FlagKind.STATIC
    value = factory.Sequence(lambda n: f"CTF{{static-{n}}}")


class QuizFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Quiz

    course = factory.SubFactory(CourseFactory)
    title = factory.Sequence(lambda n: f"Quiz {n}")
    published = True


class QuestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Question

    quiz = factory.SubFactory(QuizFactory)
    text = factory.Sequence(lambda n: f"Question {n}?")
    kind = models.QuestionKind.SINGLE
    points = 10
    explanation = "Because."


class ChoiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Choice

    question = factory.SubFactory(QuestionFactory)
    text = factory.Sequence(lambda n: f"Choice {n}")
    correct = False


class SolveFactory(factory.django.DjangoModelFactory):
    """A solve written straight to the table (no event): for read-side tests."""

    class Meta:
        model = models.Solve

    user = factory.SubFactory(UserFactory)
    flag = factory.SubFactory(FlagFactory)
    course = factory.LazyAttribute(lambda s: s.flag.lab.course)
    points = factory.LazyAttribute(lambda s: s.flag.points)


def lab_admin_form(lab: models.Lab, **changes) -> dict:
    """The admin's lab change form as posted for `lab`, with no inline rows, plus `changes`."""
    data = {
        "course": lab.course_id,
        "title": lab.title,
        "description": lab.description,
        "difficulty": lab.difficulty,
        "estimated_minutes": lab.estimated_minutes,
        "order": lab.order,
        "published": "on" if lab.published else "",
        "flags-TOTAL_FORMS": "0",
        "flags-INITIAL_FORMS": "0",
        "machine-TOTAL_FORMS": "0",
        "machine-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


def machine_inline_form(**fields: str) -> dict:
    """The lab form's machine inline with one template row (`machine-0-*`): `fields` over
    a template the platform would start."""
    row = {
        "image": "cyberlab/demo:latest",
        "ports": "[]",
        "memory_mb": "64",
        "cpus": "0.5",
        "environment": "{}",
        "capabilities": "[]",
        "ssh_user": "user",
        **fields,
    }
    return {"machine-TOTAL_FORMS": "1", **{f"machine-0-{name}": value for name, value in row.items()}}
