"""The catalogue staff author and the progress learners make."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


def _check_pattern(pattern: str, *, field: str) -> None:
    if not pattern:
        raise ValidationError({field: "A pattern is needed."})
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValidationError({field: f"Not a valid regular expression: {error}."}) from error


class Difficulty(models.TextChoices):
    BEGINNER = "beginner", "Beginner"
    EASY = "easy", "Easy"
    MEDIUM = "medium", "Medium"
    HARD = "hard", "Hard"
    INSANE = "insane", "Insane"


class Course(models.Model):
    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    summary = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True, help_text="Markdown.")
    difficulty = models.CharField(max_length=16, choices=Difficulty.choices, default=Difficulty.BEGINNER)
    tags = models.JSONField(default=list, blank=True, help_text='A list of strings, e.g. ["web", "sqli"].')
    published = models.BooleanField(default=False, db_index=True)
    order = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        if not isinstance(self.tags, list) or not all(isinstance(tag, str) for tag in self.tags):
            raise ValidationError({"tags": 'A list of strings, e.g. ["web", "sqli"].'})


class Lab(models.Model):
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="labs")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, help_text="Markdown.")
    difficulty = models.CharField(max_length=16, choices=Difficulty.choices, default=Difficulty.BEGINNER)
    estimated_minutes = models.PositiveIntegerField(default=30)
    order = models.PositiveIntegerField(default=0)
    published = models.BooleanField(default=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["course", "order", "id"]
        indexes = [models.Index(fields=["course", "order"])]

    def __str__(self) -> str:
        return self.title


PORT_PROTOCOLS = ("tcp", "http", "ssh")


class MachineTemplate(models.Model):
    """What the machines app starts for a lab. Optional: a lab without one has no machine."""

    lab = models.OneToOneField(Lab, on_delete=models.CASCADE, related_name="machine")
    image = models.CharField(max_length=255, help_text="Must match VM_ALLOWED_IMAGES to start.")
    ports = models.JSONField(
        default=list,
        blank=True,
        help_text='Exposed ports, e.g. [{"port": 8080, "protocol": "http"}]; protocol: tcp, http or ssh.',
    )
    memory_mb = models.PositiveIntegerField(default=256, validators=[MinValueValidator(16)])
    cpus = models.DecimalField(max_digits=4, decimal_places=2, default=0.5)
    lifetime_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the platform default (VM_LIFETIME)."
    )
    environment = models.JSONField(default=dict, blank=True, help_text="Extra environment variables.")
    capabilities = models.JSONField(
        default=list,
        blank=True,
        help_text="Linux capabilities to add back; must be in VM_ALLOWED_CAPABILITIES.",
    )
    ssh_user = models.CharField(max_length=32, blank=True, default="user")

    def __str__(self) -> str:
        return f"{self.image} for {self.lab}"

    def clean(self) -> None:
        ports = self.ports if isinstance(self.ports, list) else None
        if ports is None or not all(
            isinstance(item, dict)
            and isinstance(item.get("port"), int)
            and not isinstance(item.get("port"), bool)
            and 1 <= item["port"] <= 65535
            and item.get("protocol", "tcp") in PORT_PROTOCOLS
            for item in ports
        ):
            raise ValidationError(
                {"ports": 'A list like [{"port": 8080, "protocol": "http"}]; protocol: tcp, http or ssh.'}
            )
        if not isinstance(self.environment, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in self.environment.items()
        ):
            raise ValidationError({"environment": 'An object of strings, e.g. {"MODE": "easy"}.'})
        if not isinstance(self.capabilities, list) or not all(
            isinstance(cap, str) for cap in self.capabilities
        ):
            raise ValidationError({"capabilities": 'A list of capability names, e.g. ["NET_ADMIN"].'})


class FlagKind(models.TextChoices):
    STATIC = "static", "Static"
    REGEX = "regex", "Regular expression"
    DYNAMIC = "dynamic", "Dynamic (per learner)"


class Flag(models.Model):
    """A task inside a lab, answered by submitting a flag."""

    lab = models.ForeignKey(Lab, on_delete=models.CASCADE, related_name="flags")
    prompt = models.CharField(max_length=500)
    points = models.PositiveIntegerField(default=100)
    kind = models.CharField(max_length=16, choices=FlagKind.choices, default=FlagKind.STATIC)
    value = models.CharField(
        max_length=500, blank=True, help_text="The flag (static) or the pattern (regex); unused when dynamic."
    )
    case_sensitive = models.BooleanField(default=True)
    max_attempts = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["lab", "order", "id"]

    def __str__(self) -> str:
        return self.prompt[:60]

    def clean(self) -> None:
        if self.kind == FlagKind.STATIC and not self.value.strip():
            raise ValidationError({"value": "A static flag needs its value."})
        if self.kind == FlagKind.REGEX:
            _check_pattern(self.value, field="value")


class IssuedFlag(models.Model):
    """A dynamic flag handed to one learner: recognising a shared flag is one lookup."""

    digest = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="issued")
    issued_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "flag"], name="issued_flag_once_per_learner")]


class Verdict(models.TextChoices):
    CORRECT = "correct", "Correct"
    INCORRECT = "incorrect", "Incorrect"
    ALREADY_SOLVED = "already_solved", "Already solved"
    LOCKED = "locked", "Attempts exhausted"


class Submission(models.Model):
    """Every flag submission: the audit trail staff read, and what attempts count from."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="submissions")
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="submissions")
    answer_digest = models.CharField(max_length=64)
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "flag", "created_at"], name="submission_user_flag_time"),
            # Max attempts counts wrong answers only: a partial index holds just those,
            # so the count reads at most max_attempts entries however much else is logged.
            models.Index(
                fields=["user", "flag"], condition=Q(verdict="incorrect"), name="submission_wrong_attempts"
            ),
        ]


class CheatingSignal(models.Model):
    """A learner submitted another learner's dynamic flag."""

    submitter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="+")
    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]


class Quiz(models.Model):
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="quizzes")
    title = models.CharField(max_length=200)
    order = models.PositiveIntegerField(default=0)
    published = models.BooleanField(default=False, db_index=True)
    pass_mark = models.PositiveIntegerField(default=70, help_text="Percent of the points needed to pass.")
    max_attempts = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    min_wait_seconds = models.PositiveIntegerField(default=0, help_text="Minimum wait between attempts.")
    shuffle = models.BooleanField(default=False)

    class Meta:
        ordering = ["course", "order", "id"]
        verbose_name_plural = "quizzes"

    def __str__(self) -> str:
        return self.title


class QuestionKind(models.TextChoices):
    SINGLE = "single", "Single choice"
    MULTIPLE = "multiple", "Multiple choice"
    TEXT = "text", "Short text"


class TextMatch(models.TextChoices):
    EXACT = "exact", "Exact"
    IEXACT = "iexact", "Case-insensitive"
    REGEX = "regex", "Regular expression"


class Question(models.Model):
    quiz = models.ForeignKey(Quiz, on_delete=models.CASCADE, related_name="questions")
    text = models.TextField()
    kind = models.CharField(max_length=16, choices=QuestionKind.choices, default=QuestionKind.SINGLE)
    points = models.PositiveIntegerField(default=10)
    answer = models.CharField(max_length=500, blank=True, help_text="Short-text questions only.")
    match = models.CharField(max_length=16, choices=TextMatch.choices, default=TextMatch.IEXACT)
    explanation = models.TextField(blank=True, help_text="Shown once the question is answered.")
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["quiz", "order", "id"]

    def __str__(self) -> str:
        return self.text[:60]

    def clean(self) -> None:
        if self.kind != QuestionKind.TEXT:
            return
        if not self.answer.strip():
            raise ValidationError({"answer": "A short-text question needs its answer."})
        if self.match == TextMatch.REGEX:
            _check_pattern(self.answer, field="answer")


class Choice(models.Model):
    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="choices")
    text = models.CharField(max_length=500)
    correct = models.BooleanField(default=False)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["question", "order", "id"]

    def __str__(self) -> str:
        return self.text[:60]


class Solve(models.Model):
    """Points awarded once, ever: one row per (learner, flag) and per (learner, question)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="solves")
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="solves")
    flag = models.ForeignKey(Flag, null=True, blank=True, on_delete=models.CASCADE, related_name="solves")
    question = models.ForeignKey(
        Question, null=True, blank=True, on_delete=models.CASCADE, related_name="solves"
    )
    points = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "flag"], condition=Q(flag__isnull=False), name="solve_flag_once"
            ),
            models.UniqueConstraint(
                fields=["user", "question"], condition=Q(question__isnull=False), name="solve_question_once"
            ),
            models.CheckConstraint(
                condition=Q(flag__isnull=False, question__isnull=True)
                | Q(flag__isnull=True, question__isnull=False),
                name="solve_flag_xor_question",
            ),
        ]
        indexes = [models.Index(fields=["user", "created_at"]), models.Index(fields=["course", "user"])]

    @property
    def source(self) -> str:
        return "flag" if self.flag_id else "question"


class QuizAttempt(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quiz_attempts")
    quiz = models.ForeignKey(Quiz, on_delete=models.CASCADE, related_name="attempts")
    answers = models.JSONField(default=dict)
    results = models.JSONField(default=dict, help_text="Per-question verdicts.")
    score = models.PositiveIntegerField(default=0)
    max_score = models.PositiveIntegerField(default=0)
    passed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "quiz", "created_at"])]


class Enrollment(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="enrollments")
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="enrollments")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "course"], name="enroll_once")]


class PendingCatalogueInvalidation(models.Model):
    """Shared cache keys a staff edit could not drop because Redis was unavailable.

    Kept in Postgres because Redis may come back with the entries it held before, and
    the process that made the edit may be gone by then; labs.cache drops the keys and
    deletes the row once Redis answers again.
    """

    keys = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{len(self.keys)} catalogue keys from {self.created_at:%Y-%m-%d %H:%M:%S}"
