"""The API contract fuzzed: Schemathesis generates requests from /api/v1/schema/ (and
follows its links) against the served stack, as a learner and as staff. No answer may be
a server error, and every answer must match the schema: status, content type and body.

Operations that end the fuzzer's own credential (sign out, password change, revoke the
other sessions, which rotates the token) are left out: after them every request is a 403
and nothing more would be learned. Their contracts are tested in tests/cyberlab."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cyberlab.accounts.services import token_for
from tests.factories import UserFactory
from tests.integration.served import served
from tests.labs.factories import ChoiceFactory, FlagFactory, LabFactory, QuestionFactory, QuizFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SECONDS_PER_ROLE = 60
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
# Limits off: a 429 is documented, but it would stop the fuzzer reaching the views.
NO_LIMITS = {
    f"THROTTLE_RATE_{scope}": "none" for scope in ("ANON", "USER", "LOGIN", "REGISTER", "FLAG", "VM_START")
}


def content():
    """Something for the fuzzer to find: a course with a lab, a flag and a quiz."""
    lab = LabFactory()
    FlagFactory(lab=lab)
    question = QuestionFactory(quiz=QuizFactory(course=lab.course))
    ChoiceFactory(question=question, correct=True)
    ChoiceFactory(question=question, correct=False)


def fuzz(base: str, token: str, workdir: Path) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{base}/api/v1/schema/",
        "--url",
        base,
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        CHECKS,
        "--max-examples",
        "30",
        "--max-time",
        str(SECONDS_PER_ROLE),
        "--request-timeout",
        "10",
        "--exclude-path-regex",
        "/events/|/revoke-others/|/auth/password/|/auth/logout/",
        "--no-color",
    ]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=SECONDS_PER_ROLE * 4)


@pytest.mark.parametrize("role", ["learner", "staff"])
def test_no_server_error_and_no_answer_outside_the_schema(tmp_path, private_redis, role):
    content()
    user = UserFactory(is_staff=role == "staff", is_superuser=role == "staff")
    token = token_for(user=user)
    with served(tmp_path, redis_url=private_redis.url, asgi=True, env=NO_LIMITS) as base:
        result = fuzz(base, token, tmp_path)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "Test cases:" in result.stdout, report
