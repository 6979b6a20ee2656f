"""Dynamic flags: a different flag for every learner, derived, never stored in clear."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings


def dynamic_flag_value(*, user_id: int, flag_id: int) -> str:
    """The learner's own flag: an HMAC of FLAG_SECRET, the learner and the flag.

    A dedicated secret (not SECRET_KEY) so rotating one does not change the other, and
    a flag shared between learners betrays whose it was.
    """
    message = f"{user_id}:{flag_id}".encode()
    digest = hmac.new(settings.FLAG_SECRET.encode(), message, hashlib.sha256).hexdigest()
    return f"CTF{{{digest[:32]}}}"


def answer_digest(answer: str) -> str:
    """What is stored of a submitted answer or an issued flag: never the text itself."""
    return hashlib.sha256(answer.strip().encode()).hexdigest()
