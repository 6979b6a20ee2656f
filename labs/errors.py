"""The 4xx answers of the labs actions, each with a stable `code` the SPA can switch on."""

from __future__ import annotations

import math
from datetime import datetime

from django.utils import timezone
from rest_framework import exceptions, status


class AttemptsExhausted(exceptions.APIException):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "No attempts left."
    default_code = "attempts_exhausted"


class AttemptTooSoon(exceptions.Throttled):
    """The quiz asks for a pause between attempts; `Retry-After` says how long."""

    default_code = "attempt_too_soon"

    def __init__(self, *, ready_at: datetime) -> None:
        wait = max(1, math.ceil((ready_at - timezone.now()).total_seconds()))
        super().__init__(
            wait=wait,
            detail=f"Wait until {ready_at.isoformat()} before the next attempt.",
            code=self.default_code,
        )
        self.ready_at = ready_at


class InvalidAnswers(exceptions.ValidationError):
    default_code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message, code=self.default_code)
