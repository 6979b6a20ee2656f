"""Settings are read from the environment; each case runs in a fresh interpreter."""

import json
import os
import subprocess
import sys

from tests.conftest import free_port

BASE_ENV = {
    key: value
    for key, value in os.environ.items()
    if not key.startswith(("REDIS_", "DATABASE_", "CELERY_", "DEBUG", "HTTPS", "SECRET_KEY", "DJANGO_"))
}


def settings_with(env: dict, *names: str) -> dict:
    script = (
        "import json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'cyberlab.settings';"
        "from django.conf import settings;"
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_redis_defaults_follow_the_seed():
    values = settings_with({"DEBUG": "1"}, "REDIS_URL", "CELERY_BROKER_URL")
    assert values == {
        "REDIS_URL": "redis://localhost:6379/0",
        "CELERY_BROKER_URL": "redis://localhost:6379/1",
    }


def test_redis_host_port_db_password_build_the_url():
    env = {
        "DEBUG": "1",
        "REDIS_HOST": "cache",
        "REDIS_PORT": "6380",
        "REDIS_DB": "3",
        "REDIS_PASSWORD": "p@ss",
    }
    values = settings_with(env, "REDIS_URL", "CELERY_BROKER_URL")
    assert values["REDIS_URL"] == "redis://:p%40ss@cache:6380/3"
    assert values["CELERY_BROKER_URL"] == "redis://:p%40ss@cache:6380/4"


def test_redis_url_wins_over_the_parts():
    values = settings_with({"DEBUG": "1", "REDIS_URL": "redis://r:1/5", "REDIS_HOST": "ignored"}, "REDIS_URL")
    assert values["REDIS_URL"] == "redis://r:1/5"


def test_database_url_selects_postgres_and_its_absence_sqlite(tmp_path):
    postgres = settings_with({"DEBUG": "1", "DATABASE_URL": "postgres://u@db:5432/lab"}, "DATABASES")
    sqlite = settings_with({"DEBUG": "1", "CYBERLAB_VAR_DIR": str(tmp_path)}, "DATABASES")
    assert postgres["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert postgres["DATABASES"]["default"]["NAME"] == "lab"
    assert sqlite["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert sqlite["DATABASES"]["default"]["NAME"] == str(tmp_path / "cyberlab.sqlite3")
    assert sqlite["DATABASES"]["default"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_secret_key_is_required_when_debug_is_off():
    result = subprocess.run(
        [sys.executable, "-c", "import os; os.environ['DJANGO_SETTINGS_MODULE']='cyberlab.settings';"
         "from django.conf import settings; settings.SECRET_KEY"],
        env={**BASE_ENV, "DEBUG": "0"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_deploy_check_is_clean_with_debug_off_and_https_on():
    env = {
        **BASE_ENV,
        "DEBUG": "0",
        "HTTPS": "1",
        "SECRET_KEY": "x" * 64 + "-deploy-check-key-with-enough-entropy-0123456789",
        "FLAG_SECRET": "f" * 40,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/cyberlab",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "ALLOWED_HOSTS": "lab.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_https_off_serves_plain_http():
    values = settings_with(
        {"DEBUG": "0", "SECRET_KEY": "k", "FLAG_SECRET": "f", "HTTPS": "0"},
        "SESSION_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
    )
    assert values == {"SESSION_COOKIE_SECURE": False, "SECURE_SSL_REDIRECT": False}
