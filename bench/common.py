"""What scenario modules and standalone benchmarks share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def bench_env() -> dict[str, str]:
    """The environment of the benchmarked stack: its own database and Redis databases."""
    redis_db = int(os.environ.get("BENCH_REDIS_DB", "14"))
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "cyberlab.settings",
            "DATABASE_URL": os.environ.get(
                "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cyberlab_bench"
            ),
            "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{redis_db + 1}",
            "DEBUG": "0",
            "SECRET_KEY": "bench-secret-key",
            "FLAG_SECRET": "bench-flag-secret",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "BENCH_CEILING": "1",
            "LOG_LEVEL": "WARNING",
            # Limits high enough that wrk measures the endpoints, not 429s; the limiter
            # still decides every request in Redis, as in production.
            "THROTTLE_RATE_ANON": "100000000/min",
            "THROTTLE_RATE_USER": "100000000/min",
            "THROTTLE_RATE_FLAG": "100000000/min",
        }
    )
    return env


@dataclass
class Endpoint:
    """One request wrk repeats. `compare_to` names another endpoint to give a ratio against."""

    name: str
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    expect_status: int = 200
    compare_to: str | None = None
    connections: int | None = None
    duration: int | None = None


@dataclass
class Context:
    """Shared by scenario modules during setup (Django is set up, the server is not yet up)."""

    base_url: str
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def make_user(self, username: str, *, staff: bool = False) -> tuple[Any, str]:
        """A user and an API token for them."""
        from rest_framework.authtoken.models import Token

        from cyberlab.accounts.models import User

        user, _ = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com", "is_staff": staff}
        )
        token, _ = Token.objects.get_or_create(user=user)
        return user, token.key

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Token {token}"}
