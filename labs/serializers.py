"""Input validation and the shapes the labs API sends: one declaration per response.

The OpenAPI schema is built from the output serializers below, and every response is
rendered by them, so the two cannot drift apart:

* the shared catalogue entries (`courses:list`, `course:{slug}`, `lab:{id}`, `quiz:{id}`)
  are rendered by the `*EntrySerializer`s once, when labs.selectors fills the cache, and
  stored as rendered: a cached read does no serializer work on them;
* a detail serializer extends its entry serializer with what is mine (my solves, my
  attempts) and renders that part per request, merging it into the stored entry. The
  course detail is the hot read, so its progress is merged as labs.selectors computed
  it (plain JSON values); tests/cyberlab/test_api_contract.py checks every response,
  that one included, against the schema;
* everything else is rendered field by field from plain data (rows, dataclasses, dicts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework import serializers

from labs.models import PORT_PROTOCOLS, Enrollment, FlagKind, MachineTemplate, QuestionKind

if TYPE_CHECKING:
    from labs.selectors import CourseDetail, LabDetail, QuizDetail

# --- input ------------------------------------------------------------------------------


class FlagSubmitSerializer(serializers.Serializer):
    flag = serializers.CharField(trim_whitespace=True, allow_blank=False)

    def validate_flag(self, value: str) -> str:
        if len(value) > settings.FLAG_ANSWER_MAX_LENGTH:
            raise serializers.ValidationError(
                f"A flag is at most {settings.FLAG_ANSWER_MAX_LENGTH} characters.", code="too_long"
            )
        return value


class QuizAttemptSerializer(serializers.Serializer):
    answers = serializers.DictField(
        child=serializers.JSONField(),
        allow_empty=True,
        help_text="{question_id: [choice ids] (or one id) | text}",
    )


# --- output: the catalogue ----------------------------------------------------------------
#
# Entry serializers read model instances prepared by labs.selectors, which attach what is
# computed rather than stored (`lab_count`, `total_points`, `description_html`, ...).


class CourseRefSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    title = serializers.CharField()


class CourseListItemSerializer(serializers.Serializer):
    """A course in the list: the `courses:list` entry holds these, as rendered."""

    id = serializers.IntegerField()
    slug = serializers.SlugField()
    title = serializers.CharField()
    summary = serializers.CharField()
    difficulty = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    lab_count = serializers.IntegerField()
    quiz_count = serializers.IntegerField()
    flag_count = serializers.IntegerField()
    question_count = serializers.IntegerField()
    total_points = serializers.IntegerField()


class CourseLabEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    difficulty = serializers.CharField()
    estimated_minutes = serializers.IntegerField()
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    has_machine = serializers.BooleanField()
    flag_count = serializers.IntegerField()
    points = serializers.IntegerField()


class CourseQuizEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    pass_mark = serializers.IntegerField()
    max_attempts = serializers.IntegerField(allow_null=True)
    question_count = serializers.IntegerField()
    points = serializers.IntegerField()


class CourseEntrySerializer(serializers.Serializer):
    """The shared part of a course's detail: the `course:{slug}` entry."""

    id = serializers.IntegerField()
    slug = serializers.SlugField()
    title = serializers.CharField()
    summary = serializers.CharField()
    description = serializers.CharField(help_text="Markdown.")
    description_html = serializers.CharField(help_text="The description rendered, raw HTML escaped.")
    difficulty = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    total_points = serializers.IntegerField()
    labs = CourseLabEntrySerializer(many=True, source="visible_labs")
    quizzes = CourseQuizEntrySerializer(many=True, source="visible_quizzes")


class LabProgressSerializer(serializers.Serializer):
    solved = serializers.IntegerField()
    points = serializers.IntegerField()
    completed = serializers.BooleanField()


class CourseLabSerializer(CourseLabEntrySerializer):
    progress = LabProgressSerializer(required=False, help_text="Signed in only.")


class CourseQuizProgressSerializer(serializers.Serializer):
    attempts = serializers.IntegerField()
    best_score = serializers.IntegerField(allow_null=True)
    passed = serializers.BooleanField()
    solved = serializers.IntegerField()
    points = serializers.IntegerField()


class CourseQuizSerializer(CourseQuizEntrySerializer):
    progress = CourseQuizProgressSerializer(required=False, help_text="Signed in only.")


class CourseProgressSerializer(serializers.Serializer):
    enrolled = serializers.BooleanField()
    points = serializers.IntegerField()
    solved = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField()
    completed = serializers.BooleanField()


class CourseDetailSerializer(CourseEntrySerializer):
    """A course with my progress in it and in each lab and quiz (signed in)."""

    labs = CourseLabSerializer(many=True)
    quizzes = CourseQuizSerializer(many=True)
    progress = CourseProgressSerializer(allow_null=True, help_text="Null when signed out.")

    def to_representation(self, detail: CourseDetail) -> dict:
        # The hot read: nothing is rendered field by field here (see the module docstring).
        if detail.progress is None:
            return {**detail.entry, "progress": None}
        return {**detail.entry, "labs": detail.labs, "quizzes": detail.quizzes, "progress": detail.progress}


class FlagEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    prompt = serializers.CharField()
    points = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=FlagKind.values)
    max_attempts = serializers.IntegerField(allow_null=True)


class PortSerializer(serializers.Serializer):
    port = serializers.IntegerField()
    protocol = serializers.ChoiceField(choices=PORT_PROTOCOLS, default="tcp")


class MachineSummarySerializer(serializers.Serializer):
    """How a learner reaches the lab's machine. The image and environment stay
    server-side: the environment may hold the machine's secrets."""

    ports = PortSerializer(many=True)
    memory_mb = serializers.IntegerField()
    cpus = serializers.FloatField()
    lifetime_minutes = serializers.IntegerField(allow_null=True, help_text="Null: the platform default.")
    ssh_user = serializers.SerializerMethodField(help_text="Empty when the machine has no SSH port.")

    def get_ssh_user(self, machine: MachineTemplate) -> str:
        has_ssh = any(port.get("protocol") == "ssh" for port in machine.ports or [])
        return machine.ssh_user if has_ssh else ""


class LabEntrySerializer(serializers.Serializer):
    """The shared part of a lab's detail: the `lab:{id}` entry. Never a flag's value."""

    id = serializers.IntegerField()
    course = CourseRefSerializer()
    title = serializers.CharField()
    description = serializers.CharField()
    description_html = serializers.CharField()
    difficulty = serializers.CharField()
    estimated_minutes = serializers.IntegerField()
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    total_points = serializers.IntegerField()
    flags = FlagEntrySerializer(many=True)
    machine = MachineSummarySerializer(allow_null=True)


class FlagSerializer(FlagEntrySerializer):
    solved = serializers.BooleanField()
    attempts_left = serializers.IntegerField(allow_null=True, help_text="Null when unlimited or solved.")


class LabDetailProgressSerializer(serializers.Serializer):
    solved = serializers.IntegerField()
    total = serializers.IntegerField()
    points = serializers.IntegerField()
    completed = serializers.BooleanField()


class LabDetailSerializer(LabEntrySerializer):
    """A lab with its flags, each marked solved by me, and my progress in it."""

    flags = FlagSerializer(many=True)
    progress = LabDetailProgressSerializer()

    def to_representation(self, detail: LabDetail) -> dict:
        # The entry is stored rendered; what is mine is rendered here.
        return {
            **detail.entry,
            "flags": FlagSerializer(detail.flags, many=True).data,
            "progress": LabDetailProgressSerializer(detail.progress).data,
        }


class ChoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class QuestionEntrySerializer(serializers.Serializer):
    """What a learner may see before answering: never `correct`, `answer`, `match` or
    `explanation`."""

    id = serializers.IntegerField()
    text = serializers.CharField()
    kind = serializers.ChoiceField(choices=QuestionKind.values)
    points = serializers.IntegerField()
    order = serializers.IntegerField()
    choices = ChoiceSerializer(many=True)


class QuizEntrySerializer(serializers.Serializer):
    """The shared part of a quiz's detail: the `quiz:{id}` entry."""

    id = serializers.IntegerField()
    course = CourseRefSerializer()
    title = serializers.CharField()
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    pass_mark = serializers.IntegerField()
    max_attempts = serializers.IntegerField(allow_null=True)
    min_wait_seconds = serializers.IntegerField()
    shuffle = serializers.BooleanField()
    total_points = serializers.IntegerField()
    questions = QuestionEntrySerializer(many=True)


class QuestionSerializer(QuestionEntrySerializer):
    solved = serializers.BooleanField()


class QuizProgressSerializer(serializers.Serializer):
    attempts = serializers.IntegerField()
    attempts_left = serializers.IntegerField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    best_score = serializers.IntegerField(allow_null=True)
    passed = serializers.BooleanField()
    solved = serializers.IntegerField()


class QuizDetailSerializer(QuizEntrySerializer):
    """A quiz's questions in my order, each marked solved by me, and my attempts."""

    questions = QuestionSerializer(many=True)
    progress = QuizProgressSerializer()

    def to_representation(self, detail: QuizDetail) -> dict:
        # The entry is stored rendered; what is mine is rendered here.
        return {
            **detail.entry,
            "questions": QuestionSerializer(detail.questions, many=True).data,
            "progress": QuizProgressSerializer(detail.progress).data,
        }


# --- output: actions and progress ---------------------------------------------------------


class FlagVerdictSerializer(serializers.Serializer):
    """Reads a `labs.services.FlagResult`."""

    correct = serializers.BooleanField()
    already_solved = serializers.BooleanField()
    points = serializers.IntegerField(help_text="Points awarded by this submission.")
    attempts_left = serializers.IntegerField(allow_null=True)


class QuestionResultSerializer(serializers.Serializer):
    question_id = serializers.IntegerField()
    answered = serializers.BooleanField()
    correct = serializers.BooleanField()
    points = serializers.IntegerField()
    explanation = serializers.CharField(allow_null=True)


class QuizAttemptResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    quiz = serializers.IntegerField()
    score = serializers.IntegerField()
    max_score = serializers.IntegerField()
    percent = serializers.IntegerField()
    passed = serializers.BooleanField()
    points_awarded = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    attempts_left = serializers.IntegerField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    results = QuestionResultSerializer(many=True)


class EnrollmentSerializer(serializers.Serializer):
    course = serializers.SlugField(source="course.slug")
    enrolled = serializers.SerializerMethodField()
    enrolled_at = serializers.DateTimeField(source="created_at")

    def get_enrolled(self, enrollment: Enrollment) -> bool:
        return True  # an enrolment row is an enrolment; the field spares the SPA a guess


class SolveSerializer(serializers.Serializer):
    """Reads a `Solve` with its flag, question and course loaded."""

    source = serializers.ChoiceField(choices=["flag", "question"])
    flag_id = serializers.IntegerField(allow_null=True)
    question_id = serializers.IntegerField(allow_null=True)
    lab_id = serializers.IntegerField(source="flag.lab_id", allow_null=True)
    quiz_id = serializers.IntegerField(source="question.quiz_id", allow_null=True)
    course = serializers.SlugField(source="course.slug")
    points = serializers.IntegerField()
    solved_at = serializers.DateTimeField(source="created_at")


class CourseCompletionSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    title = serializers.CharField()
    enrolled = serializers.BooleanField()
    points = serializers.IntegerField()
    total_points = serializers.IntegerField()
    solved = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField()
    completed = serializers.BooleanField()


class ProgressSerializer(serializers.Serializer):
    points = serializers.IntegerField()
    solves = SolveSerializer(many=True)
    courses = CourseCompletionSerializer(many=True)
