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
