"""Demo content: three courses, flags of every kind, a quiz of every question type, `admin`.

Idempotent: content is matched by slug or title and brought back to the demo values;
running it twice changes nothing the second time.
"""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from cyberlab.accounts.models import User
from labs.models import (
    Choice,
    Course,
    Difficulty,
    Flag,
    FlagKind,
    Lab,
    MachineTemplate,
    Question,
    QuestionKind,
    Quiz,
    TextMatch,
)

WELCOME_FLAG = "CTF{welcome-to-cyberlab}"

COURSES = [
    {
        "slug": "intro-to-web-security",
        "title": "Intro to web security",
        "summary": "Requests, responses and the first flags: your start on CyberLab.",
        "difficulty": Difficulty.BEGINNER,
        "tags": ["web", "http", "beginner"],
        "order": 0,
        "description": (
            "Learn how a web application talks to your browser, and how to read what it says.\n\n"
            "* start your own lab machine\n* capture the flags\n* take the quiz at the end"
        ),
        "labs": [
            {
                "title": "Welcome to CyberLab",
                "difficulty": Difficulty.BEGINNER,
                "estimated_minutes": 10,
                "description": (
                    "Start your machine and open it in the browser. The welcome flag is "
                    "`CTF{welcome-to-cyberlab}` -- submit it to see how flags work.\n\n"
                    "Then find **your personal flag**: it is yours alone, and it lives on your machine."
                ),
                "machine": {"ports": [{"port": 8080, "protocol": "http"}, {"port": 7000, "protocol": "tcp"}]},
                "flags": [
                    {
                        "prompt": "Submit the welcome flag.",
                        "kind": FlagKind.STATIC,
                        "value": WELCOME_FLAG,
                        "points": 10,
                    },
                    {
                        "prompt": "Find your personal flag on the machine.",
                        "kind": FlagKind.DYNAMIC,
                        "points": 50,
                    },
                ],
            },
            {
                "title": "Reading HTTP responses",
                "difficulty": Difficulty.EASY,
                "estimated_minutes": 20,
                "description": (
                    "Every response has headers. One of them carries a request id: "
                    "submit it as `CTF{req-<digits>}`."
                ),
                "flags": [
                    {
                        "prompt": "The request id header, as CTF{req-<digits>}.",
                        "kind": FlagKind.REGEX,
                        "value": r"CTF\{req-\d{4,}\}",
                        "case_sensitive": False,
                        "max_attempts": 5,
                        "points": 30,
                    },
                ],
            },
        ],
        "quizzes": [
            {
                "title": "Web basics check",
                "pass_mark": 60,
                "max_attempts": 3,
                "min_wait_seconds": 30,
                "questions": [
                    {
                        "text": "Which port does plain HTTP use by default?",
                        "kind": QuestionKind.SINGLE,
                        "explanation": "HTTP listens on 80, HTTPS on 443.",
                        "choices": [("80", True), ("443", False), ("22", False)],
                    },
                    {
                        "text": "Which of these are injection attacks?",
                        "kind": QuestionKind.MULTIPLE,
                        "points": 20,
                        "explanation": "SQL injection and command injection both smuggle code into data.",
                        "choices": [
                            ("SQL injection", True),
                            ("Command injection", True),
                            ("Clickjacking", False),
                        ],
                    },
                    {
                        "text": "Which HTTP method fetches a page without changing anything?",
                        "kind": QuestionKind.TEXT,
                        "answer": "GET",
                        "match": TextMatch.EXACT,
                        "explanation": "GET is safe: it must not change server state.",
                    },
                    {
                        "text": "Name the header a server uses to set a cookie.",
                        "kind": QuestionKind.TEXT,
                        "answer": "Set-Cookie",
                        "match": TextMatch.IEXACT,
                        "explanation": "Header names are case-insensitive: Set-Cookie.",
                    },
                    {
                        "text": "Give any HTTP status code meaning a client error.",
                        "kind": QuestionKind.TEXT,
                        "answer": r"4\d\d",
                        "match": TextMatch.REGEX,
                        "explanation": "Every 4xx code is a client error.",
                    },
                ],
            }
        ],
    },
    {
        "slug": "linux-fundamentals",
        "title": "Linux fundamentals",
        "summary": "Files, permissions and processes from the command line.",
        "difficulty": Difficulty.EASY,
        "tags": ["linux", "shell"],
        "order": 1,
        "description": "Find your way around a Linux system the way an attacker -- and a defender -- does.",
        "labs": [
            {
                "title": "Hidden files",
                "difficulty": Difficulty.EASY,
                "estimated_minutes": 15,
                "description": "Files whose names start with a dot do not show up in a plain `ls`.",
                "flags": [
                    {
                        "prompt": "The flag in the hidden file.",
                        "kind": FlagKind.STATIC,
                        "value": "CTF{dot-files-hide}",
                    },
                ],
            },
        ],
        "quizzes": [],
    },
    {
        "slug": "cryptography-basics",
        "title": "Cryptography basics",
        "summary": "Encodings, hashes and why neither is encryption. (Draft.)",
        "difficulty": Difficulty.MEDIUM,
        "tags": ["crypto"],
        "order": 2,
        "published": False,
        "description": "A draft course: visible to staff only until it is published.",
        "labs": [
            {
                "title": "Base64 is not encryption",
                "difficulty": Difficulty.EASY,
                "description": "Decode `Q1RGe2VuY29kaW5nLWlzLW5vdC1lbmNyeXB0aW9ufQ==`.",
                "flags": [
                    {
                        "prompt": "The decoded flag.",
                        "kind": FlagKind.STATIC,
                        "value": "CTF{encoding-is-not-encryption}",
                    },
                ],
            },
        ],
        "quizzes": [],
    },
]


class Command(BaseCommand):
    help = "Creates (or restores) the demo catalogue and the staff user `admin`."

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            for order, spec in enumerate(COURSES):
                self._course(spec, order)
        self._admin()

    def _course(self, spec: dict, order: int) -> None:
        course, _ = Course.objects.update_or_create(
            slug=spec["slug"],
            defaults={
                "title": spec["title"],
                "summary": spec["summary"],
                "description": spec["description"],
                "difficulty": spec["difficulty"],
                "tags": spec["tags"],
                "order": spec.get("order", order),
                "published": spec.get("published", True),
            },
        )
        for lab_order, lab_spec in enumerate(spec["labs"]):
            lab, _ = Lab.objects.update_or_create(
                course=course,
                title=lab_spec["title"],
                defaults={
                    "description": lab_spec["description"],
                    "difficulty": lab_spec["difficulty"],
                    "estimated_minutes": lab_spec.get("estimated_minutes", 30),
                    "order": lab_order,
                    "published": True,
                },
            )
            if "machine" in lab_spec:
                MachineTemplate.objects.update_or_create(
                    lab=lab,
                    defaults={
                        "image": settings.VM_DEMO_IMAGE,
                        "ports": lab_spec["machine"]["ports"],
                        "memory_mb": 128,
                        "cpus": "0.50",
                        "lifetime_minutes": None,
                    },
                )
            for flag_order, flag_spec in enumerate(lab_spec["flags"]):
                Flag.objects.update_or_create(
                    lab=lab,
                    prompt=flag_spec["prompt"],
                    defaults={
                        "kind": flag_spec["kind"],
                        "value": flag_spec.get("value", ""),
                        "points": flag_spec.get("points", 100),
                        "case_sensitive": flag_spec.get("case_sensitive", True),
                        "max_attempts": flag_spec.get("max_attempts"),
                        "order": flag_order,
                    },
                )
        for quiz_order, quiz_spec in enumerate(spec["quizzes"]):
            quiz, _ = Quiz.objects.update_or_create(
                course=course,
                title=quiz_spec["title"],
                defaults={
                    "order": quiz_order,
                    "published": True,
                    "pass_mark": quiz_spec["pass_mark"],
                    "max_attempts": quiz_spec["max_attempts"],
                    "min_wait_seconds": quiz_spec["min_wait_seconds"],
                },
            )
            for question_order, question_spec in enumerate(quiz_spec["questions"]):
                question, _ = Question.objects.update_or_create(
                    quiz=quiz,
                    text=question_spec["text"],
                    defaults={
                        "kind": question_spec["kind"],
                        "points": question_spec.get("points", 10),
                        "answer": question_spec.get("answer", ""),
                        "match": question_spec.get("match", TextMatch.IEXACT),
                        "explanation": question_spec["explanation"],
                        "order": question_order,
                    },
                )
                for choice_order, (text, correct) in enumerate(question_spec.get("choices", [])):
                    Choice.objects.update_or_create(
                        question=question, text=text, defaults={"correct": correct, "order": choice_order}
                    )
        self.stdout.write(f"course {course.slug}: ready")

    def _admin(self) -> None:
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "")
        user = User.objects.filter(username="admin").first()
        created = user is None
        if created:
            user = User(username="admin", email="admin@example.com")
        user.is_staff = True
        user.is_superuser = True
        generated = False
        if password:
            user.set_password(password)
        elif created:
            password = secrets.token_urlsafe(12)
            user.set_password(password)
            generated = True
        user.save()
        if generated:
            self.stdout.write(f"staff user admin created; password: {password}")
        elif created:
            self.stdout.write("staff user admin created with DEMO_ADMIN_PASSWORD")
        else:
            self.stdout.write("staff user admin: ready")
