"""Input validation and the documented shapes of the labs API.

Selectors return plain dicts (cache entries merged with my progress); the output
serializers here describe those shapes for the OpenAPI schema.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

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


# --- output ------------------------------------------------------------------------------


class CourseRefSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    title = serializers.CharField()


class CourseListItemSerializer(serializers.Serializer):
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


class LabProgressSerializer(serializers.Serializer):
    solved = serializers.IntegerField()
    points = serializers.IntegerField()
    completed = serializers.BooleanField()


class CourseLabSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    difficulty = serializers.CharField()
    estimated_minutes = serializers.IntegerField()
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    has_machine = serializers.BooleanField()
    flag_count = serializers.IntegerField()
    points = serializers.IntegerField()
    progress = LabProgressSerializer(required=False, help_text="Signed in only.")


class CourseQuizProgressSerializer(serializers.Serializer):
    attempts = serializers.IntegerField()
    best_score = serializers.IntegerField(allow_null=True)
    passed = serializers.BooleanField()
    solved = serializers.IntegerField()
    points = serializers.IntegerField()


class CourseQuizSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    order = serializers.IntegerField()
    published = serializers.BooleanField()
    pass_mark = serializers.IntegerField()
    max_attempts = serializers.IntegerField(allow_null=True)
    question_count = serializers.IntegerField()
    points = serializers.IntegerField()
    progress = CourseQuizProgressSerializer(required=False, help_text="Signed in only.")


class CourseProgressSerializer(serializers.Serializer):
    enrolled = serializers.BooleanField()
    points = serializers.IntegerField()
    solved = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField()
    completed = serializers.BooleanField()


class CourseDetailSerializer(CourseListItemSerializer):
    lab_count = None
    quiz_count = None
    flag_count = None
    question_count = None
    description = serializers.CharField(help_text="Markdown.")
    description_html = serializers.CharField(help_text="The description rendered, raw HTML escaped.")
    labs = CourseLabSerializer(many=True)
    quizzes = CourseQuizSerializer(many=True)
    progress = CourseProgressSerializer(allow_null=True, help_text="Null when signed out.")


class FlagSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    prompt = serializers.CharField()
    points = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["static", "regex", "dynamic"])
    max_attempts = serializers.IntegerField(allow_null=True)
    solved = serializers.BooleanField()
    attempts_left = serializers.IntegerField(allow_null=True, help_text="Null when unlimited or solved.")


class PortSerializer(serializers.Serializer):
    port = serializers.IntegerField()
    protocol = serializers.ChoiceField(choices=["tcp", "http", "ssh"])


class MachineSummarySerializer(serializers.Serializer):
    ports = PortSerializer(many=True)
    memory_mb = serializers.IntegerField()
    cpus = serializers.FloatField()
    lifetime_minutes = serializers.IntegerField(allow_null=True, help_text="Null: the platform default.")
    ssh_user = serializers.CharField()


class LabDetailSerializer(serializers.Serializer):
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
    flags = FlagSerializer(many=True)
    machine = MachineSummarySerializer(allow_null=True)
    progress = serializers.DictField()


class FlagVerdictSerializer(serializers.Serializer):
    correct = serializers.BooleanField()
    already_solved = serializers.BooleanField()
    points = serializers.IntegerField(help_text="Points awarded by this submission.")
    attempts_left = serializers.IntegerField(allow_null=True)


class ChoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class QuestionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    kind = serializers.ChoiceField(choices=["single", "multiple", "text"])
    points = serializers.IntegerField()
    order = serializers.IntegerField()
    solved = serializers.BooleanField()
    choices = ChoiceSerializer(many=True)


class QuizProgressSerializer(serializers.Serializer):
    attempts = serializers.IntegerField()
    attempts_left = serializers.IntegerField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    best_score = serializers.IntegerField(allow_null=True)
    passed = serializers.BooleanField()
    solved = serializers.IntegerField()


class QuizDetailSerializer(serializers.Serializer):
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
    questions = QuestionSerializer(many=True)
    progress = QuizProgressSerializer()


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
    course = serializers.SlugField()
    enrolled = serializers.BooleanField()
    enrolled_at = serializers.DateTimeField()


class SolveSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["flag", "question"])
    flag_id = serializers.IntegerField(allow_null=True)
    question_id = serializers.IntegerField(allow_null=True)
    lab_id = serializers.IntegerField(allow_null=True)
    quiz_id = serializers.IntegerField(allow_null=True)
    course = serializers.SlugField()
    points = serializers.IntegerField()
    solved_at = serializers.DateTimeField()


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
