"""CyberLab settings, built from the environment.

Every value an operator may change is read here from an environment variable with a
sensible default; the README lists them all. Docs:
https://docs.djangoproject.com/en/5.2/ref/settings/
"""

import os
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CYBERLAB_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# =============================================================================
# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings
# =============================================================================

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

# Dynamic flags are HMACs of this secret: its own, so rotating SECRET_KEY keeps them.
FLAG_SECRET = os.environ.get("FLAG_SECRET", "")
if not FLAG_SECRET:
    if not DEBUG:
        raise ImproperlyConfigured("FLAG_SECRET must be set when DEBUG is off.")
    FLAG_SECRET = "insecure-development-flag-secret"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "cyberlab.accounts",
    "labs",
    "leaderboard",
    "vms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cyberlab.urls"
WSGI_APPLICATION = "cyberlab.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# =============================================================================
# Database
# https://docs.djangoproject.com/en/5.2/ref/databases/
# DATABASE_URL (postgres://user@host:5432/name) selects Postgres through psycopg 3.
# Unset, an SQLite file under var/ lets a newcomer with only Python run one host.
# =============================================================================

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    }
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 3))
    if os.environ.get("TEST_DATABASE_NAME"):
        DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "cyberlab.sqlite3",
            "OPTIONS": {
                # WAL lets readers run beside the one writer; IMMEDIATE takes the write
                # lock at BEGIN so two writers queue on the busy timeout instead of
                # failing with "database is locked" halfway through a transaction.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": env_int("SQLITE_BUSY_TIMEOUT", 20),
            },
        }
    }

# =============================================================================
# Redis: cache, sessions and the raw keys of cyberlab.redis_client
# https://github.com/jazzband/django-redis
# REDIS_URL wins; otherwise REDIS_HOST / REDIS_PORT / REDIS_DB / REDIS_PASSWORD.
# =============================================================================


def _redis_url() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    password = os.environ.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    host = os.environ.get("REDIS_HOST", "localhost")
    port = env_int("REDIS_PORT", 6379)
    db = env_int("REDIS_DB", 0)
    return f"redis://{auth}{host}:{port}/{db}"


REDIS_URL = _redis_url()
# Short timeouts keep a request fast when Redis is down: every Redis call is an
# optimisation that falls back to Postgres, so waiting long for it helps nobody.
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 0.25)
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.25)
# After a failure, the Redis utility skips Redis for this many seconds before trying
# again, so a blackholed server costs one timeout per interval, not one per call.
REDIS_RETRY_INTERVAL = env_float("REDIS_RETRY_INTERVAL", 1.0)
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 100)
CACHE_KEY_PREFIX = os.environ.get("CACHE_KEY_PREFIX", "cache")

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "TIMEOUT": env_int("CACHE_DEFAULT_TIMEOUT", 300),
        "OPTIONS": {
            "CLIENT_CLASS": "cyberlab.redis_client.SafeJSONCacheClient",
            "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
            "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "IGNORE_EXCEPTIONS": True,
            "CONNECTION_POOL_KWARGS": {
                "max_connections": REDIS_MAX_CONNECTIONS,
                "health_check_interval": 30,
            },
        },
    }
}
DJANGO_REDIS_IGNORE_EXCEPTIONS = True
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "cyberlab.redis"

# =============================================================================
# Sessions
# https://docs.djangoproject.com/en/5.2/topics/http/sessions/#using-cached-sessions
# cached_db reads from Redis and writes through to Postgres, so a Redis outage or
# restart logs nobody out. (The plain cache engine retries key creation thousands of
# times per request when Redis is down.)
# =============================================================================

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600)
SESSION_SERIALIZER = "django.contrib.sessions.serializers.JSONSerializer"

# =============================================================================
# HTTPS and security
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# HTTPS=1 behind a TLS-terminating proxy; off, the stack serves plain HTTP locally.
# =============================================================================

HTTPS = env_bool("HTTPS", False)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the SPA reads it to send X-CSRFToken
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# =============================================================================
# Static files (WhiteNoise serves them with DEBUG off)
# https://whitenoise.readthedocs.io/
# =============================================================================

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# =============================================================================
# REST API
# https://www.django-rest-framework.org/api-guide/settings/
# =============================================================================

REGISTRATION_OPEN = env_bool("REGISTRATION_OPEN", True)
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 50)
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 500)
PROFILE_CACHE_TTL = env_int("PROFILE_CACHE_TTL", 5 * 60)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "cyberlab.api.Pagination",
    "PAGE_SIZE": API_PAGE_SIZE,
    "EXCEPTION_HANDLER": "cyberlab.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "CyberLab API",
    "DESCRIPTION": "Courses, labs, flags, quizzes, personal lab machines and the leaderboard.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# The benchmark mounts a constant view ("the ceiling") only when asked to.
BENCH_CEILING = env_bool("BENCH_CEILING", False)

# =============================================================================
# Celery
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# The broker defaults to the same Redis server on another database index.
# =============================================================================


def _broker_url() -> str:
    if os.environ.get("CELERY_BROKER_URL"):
        return os.environ["CELERY_BROKER_URL"]
    parts = urlsplit(REDIS_URL)
    db = parts.path.strip("/")
    broker_db = (int(db) + 1) % 16 if db.isdigit() else 1
    return urlunsplit(parts._replace(path=f"/{broker_db}"))


CELERY_BROKER_URL = _broker_url()
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TIMEZONE = "UTC"
# Publishing to a dead broker must fail within about a second so the request that
# enqueues work can answer 503 instead of hanging.
CELERY_PUBLISH_TIMEOUT = env_float("CELERY_PUBLISH_TIMEOUT", 0.5)
CELERY_BROKER_CONNECTION_TIMEOUT = CELERY_PUBLISH_TIMEOUT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": CELERY_PUBLISH_TIMEOUT,
    "socket_timeout": env_float("CELERY_BROKER_SOCKET_TIMEOUT", 2.0),
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.2,
    # A task not acknowledged within this many seconds is redelivered (acks_late).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
}
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.2,
}
CELERY_BEAT_SCHEDULE: dict = {}

# =============================================================================
# Logging
# =============================================================================

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"redis_incident": {"()": "cyberlab.redis_client.IncidentLogFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-redis logs every exception it ignores; the filter folds them into the
        # Redis utility's incident, which logs one line per outage and one on recovery.
        "cyberlab.redis": {"level": "ERROR", "filters": ["redis_incident"]},
    },
}

# =============================================================================
# Labs: the catalogue cache, flag submissions, the demo content
# README.md "Authoring a course"; labs/cache.py explains the cache.
# =============================================================================

# Shared catalogue entries (courses:list, course:{slug}, lab:{id}, quiz:{id}) live this
# long; staff saves delete them at once, so the TTL only bounds what an outage leaves.
CATALOGUE_CACHE_TTL = env_int("CATALOGUE_CACHE_TTL", 15 * 60)
# The recompute lock outlives the slowest recompute, yet a crashed holder blocks
# nobody for long.
CATALOGUE_CACHE_LOCK_TTL = env_float("CATALOGUE_CACHE_LOCK_TTL", 5.0)
# How long a request waits for another one's recompute before computing itself, and
# how often it looks meanwhile.
CATALOGUE_CACHE_LOCK_WAIT = env_float("CATALOGUE_CACHE_LOCK_WAIT", 1.0)
CATALOGUE_CACHE_POLL_INTERVAL = env_float("CATALOGUE_CACHE_POLL_INTERVAL", 0.02)
# Longest flag or short-text answer accepted: real flags are short, and regex flags
# are matched against what a learner types.
FLAG_ANSWER_MAX_LENGTH = env_int("FLAG_ANSWER_MAX_LENGTH", 500)
# The image of the demo lab machine, built locally by `make demo-image`.
VM_DEMO_IMAGE = os.environ.get("VM_DEMO_IMAGE", "cyberlab/demo:latest")
