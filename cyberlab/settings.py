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

# Old keys still accepted while a new SECRET_KEY takes over (docs/operations.md).
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")

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
    "cyberlab.events",
    "labs",
    "leaderboard",
    "vms",
]

MIDDLEWARE = [
    # Counts every answer, the ones middleware below gives too (cyberlab/metrics.py).
    "cyberlab.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Revoked sessions stop here, whatever copy Redis holds (see Rate limits and sessions).
    "cyberlab.accounts.middleware.SessionGuardMiddleware",
    # RateLimit-* headers, flag-answer refunds and the admin login limit (see Rate limits).
    "cyberlab.throttling.RateLimitMiddleware",
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
        "DIRS": [BASE_DIR / "cyberlab" / "templates"],
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
# The near cache (cyberlab/nearcache.py): a few hot reads kept in each process and dropped
# the moment Redis reports a change; the lifetime bounds an entry whose report was lost.
NEAR_CACHE_ENABLED = env_bool("NEAR_CACHE_ENABLED", True)
NEAR_CACHE_TTL = env_float("NEAR_CACHE_TTL", 30.0)
NEAR_CACHE_MAX_ENTRIES = env_int("NEAR_CACHE_MAX_ENTRIES", 10_000)

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

# cached_db with each session linked to its sign-in record (cyberlab/accounts/session_store.py).
SESSION_ENGINE = "cyberlab.accounts.session_store"
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
# The deepest offset a list accepts: beyond any real list, inside every store's integers.
API_MAX_OFFSET = env_int("API_MAX_OFFSET", 1_000_000_000)
PROFILE_CACHE_TTL = env_int("PROFILE_CACHE_TTL", 5 * 60)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "cyberlab.accounts.credentials.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["cyberlab.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "cyberlab.api.Pagination",
    # Rates and proxies: the "Rate limits and sessions" banner at the end of this file.
    "DEFAULT_THROTTLE_CLASSES": ["cyberlab.throttling.RateLimitThrottle"],
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

# Threads per web process serving the (synchronous) API under scripts/serve.sh; each
# keeps its own database connection. The event streams need none.
WEB_THREADS = env_int("WEB_THREADS", 2)
# The garbage collector's thresholds in the web processes (gc.set_threshold). Thousands
# of open event streams are long-lived objects every full collection walks; Python's
# defaults (700, 10, 10) made the API 0.68x as fast with 5,000 streams open, these 0.92x
# (bench/events_bench.py).
WEB_GC_THRESHOLDS = tuple(int(n) for n in os.environ.get("WEB_GC_THRESHOLDS", "20000,50,50").split(","))

# =============================================================================
# Live events: the stream at /api/v1/events/ (cyberlab/events/)
# README.md "Live events"; cyberlab/events/stream.py explains the stream.
# =============================================================================

# The replay window a reconnecting client resumes from (Last-Event-ID): per learner and
# for everyone, at most this many events and this many seconds; older: `resync`.
EVENTS_REPLAY_MAXLEN = env_int("EVENTS_REPLAY_MAXLEN", 1000)
EVENTS_REPLAY_SECONDS = env_int("EVENTS_REPLAY_SECONDS", 60 * 60)
# A comment line this often keeps proxies from closing an idle stream.
EVENTS_HEARTBEAT = env_float("EVENTS_HEARTBEAT", 15.0)
# A revoke is announced through Redis and acts at once; besides, every stream checks its
# credentials again about this often (and after Redis was away), in case one was missed.
EVENTS_RECHECK_INTERVAL = env_float("EVENTS_RECHECK_INTERVAL", 300.0)
# What a stream advises its client to wait before reconnecting (the SSE `retry:`).
EVENTS_RETRY_MS = env_int("EVENTS_RETRY_MS", 3000)
# Leaderboard changes reach one stream at most once per this many seconds.
EVENTS_LEADERBOARD_INTERVAL = env_float("EVENTS_LEADERBOARD_INTERVAL", 1.0)
# Open streams per learner, across every process; a new one closes the oldest.
EVENTS_MAX_STREAMS_PER_USER = env_int("EVENTS_MAX_STREAMS_PER_USER", 5)
# Events queued for one slow client before it is sent `resync` instead.
EVENTS_QUEUE_MAX = env_int("EVENTS_QUEUE_MAX", 100)
EVENTS_REDIS_MAX_CONNECTIONS = env_int("EVENTS_REDIS_MAX_CONNECTIONS", 20)

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
# Celery's own scheduler, with a heartbeat in Redis (cyberlab/celery.py).
CELERY_BEAT_SCHEDULER = "cyberlab.celery:HeartbeatScheduler"
# Celery closes the worker's database connections around every task unless told to keep
# them for this many tasks: a new Postgres connection per task (a machine start waited
# for one). Kept, they are checked before each task as Django checks them before each
# request (DATABASE_CONN_MAX_AGE, health checks; see cyberlab/celery.py).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
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
# Invalidations that failed while Redis was down are recorded in Postgres; a process
# that sees Redis return drops them at once, and this beat task (seconds) catches the
# processes that never saw the outage: once Redis is back, an edit shows within this
# long at worst (at once in a process that saw the outage).
CATALOGUE_REPAIR_INTERVAL = env_int("CATALOGUE_REPAIR_INTERVAL", 60)
CELERY_BEAT_SCHEDULE["labs-catalogue-repair"] = {
    "task": "labs.tasks.catalogue_repair",
    "schedule": CATALOGUE_REPAIR_INTERVAL,
    "options": {"expires": CATALOGUE_REPAIR_INTERVAL},
}
# Longest flag or short-text answer accepted: real flags are short, and regex flags
# are matched against what a learner types.
FLAG_ANSWER_MAX_LENGTH = env_int("FLAG_ANSWER_MAX_LENGTH", 500)
# The image of the demo lab machine, built locally by `make demo-image`.
VM_DEMO_IMAGE = os.environ.get("VM_DEMO_IMAGE", "cyberlab/demo:latest")

# =============================================================================
# VMs: personal lab machines (providers, live state in Redis, the ledger, sweeper)
# README.md "Lab machines"; vms/services.py explains the lifecycle.
# =============================================================================

# Which provider runs machines: "docker", or "none" to switch machines off. Explicit,
# never guessed per process, so every web node and worker agrees.
VM_PROVIDER = os.environ.get("VM_PROVIDER", "docker")
# Name -> class. A provider scheduling across many hosts (Kubernetes) plugs in here.
VM_PROVIDERS = {"docker": "vms.providers.docker.DockerProvider", "none": ""}
# The engine the Docker provider drives; empty means the local socket. In production
# point it at a host of its own: this socket is root on the host it controls.
VM_DOCKER_HOST = os.environ.get("DOCKER_HOST", "")
# Docker API calls (create, start, remove) rarely take more than a few seconds.
VM_DOCKER_TIMEOUT = env_float("VM_DOCKER_TIMEOUT", 30.0)
# Asking "does the engine answer?" before a start must not hold the request long.
VM_DOCKER_PING_TIMEOUT = env_float("VM_DOCKER_PING_TIMEOUT", 2.0)
# Machine networks get a subnet of this prefix length from VM_DOCKER_SUBNET_POOL when set
# (e.g. "10.213.0.0/16"); empty leaves it to Docker's default pools, which hold only
# about 30 networks, so raise VM_MAX_TOTAL only together with a pool.
VM_DOCKER_SUBNET_POOL = os.environ.get("VM_DOCKER_SUBNET_POOL", "")
VM_DOCKER_SUBNET_PREFIX = env_int("VM_DOCKER_SUBNET_PREFIX", 28)
# Isolated networks kept ready for the next starts: creating a bridge is most of what
# isolation costs at start, so a warm one takes it off the learner's wait (0: none).
VM_DOCKER_NETWORK_POOL = env_int("VM_DOCKER_NETWORK_POOL", 2)
# Labels every machine, so two platforms sharing one engine never reclaim each other's.
VM_PLATFORM_NAME = os.environ.get("VM_PLATFORM_NAME", "cyberlab")
# Host address machine ports are published on (VM_HOST_ADDRESS is the compose stack's
# name for it), and the name learners connect to.
# Machines publish nothing on the lab host: learners come in through the gateway. 1 also
# publishes every port on VM_PUBLISH_HOST, for a single-host classroom.
VM_PUBLISH_PORTS = env_bool("VM_PUBLISH_PORTS", False)
VM_PUBLISH_HOST = os.environ.get("VM_PUBLISH_HOST") or os.environ.get("VM_HOST_ADDRESS") or "127.0.0.1"
VM_CONNECT_HOST = os.environ.get("VM_CONNECT_HOST", "") or VM_PUBLISH_HOST
# The gateway (vms/gateway.py, vms/proxy.py, scripts/gateway.sh): each machine's HTTP ports
# at an origin of its own built from this pattern ({name}: unguessable, per machine
# session); empty turns the entry links off. Entry links live VM_GATEWAY_ENTRY_TTL seconds.
VM_GATEWAY_URL = os.environ.get("VM_GATEWAY_URL", "http://{name}.localhost:8001/")
VM_GATEWAY_ENTRY_TTL = env_int("VM_GATEWAY_ENTRY_TTL", 60)
VM_GATEWAY_CONNECT_TIMEOUT = env_float("VM_GATEWAY_CONNECT_TIMEOUT", 5.0)
# Seconds the gateway waits for the next bytes from a machine (long polls, slow labs).
VM_GATEWAY_READ_TIMEOUT = env_float("VM_GATEWAY_READ_TIMEOUT", 300.0)
# Seconds between the access checks of an open WebSocket or tunnel (stop, revoke: closed).
VM_GATEWAY_RECHECK = env_float("VM_GATEWAY_RECHECK", 1.0)
# Connections open at once to one machine (per gateway process), and seconds a WebSocket
# or tunnel may stay silent before it is closed (0: never).
VM_GATEWAY_MAX_CONNECTIONS = env_int("VM_GATEWAY_MAX_CONNECTIONS", 32)
VM_GATEWAY_IDLE_CLOSE = env_float("VM_GATEWAY_IDLE_CLOSE", 600.0)
# Machines are deliberately vulnerable: only these images (fnmatch patterns) and these
# capabilities may start, whatever a content author typed in a template.
VM_ALLOWED_IMAGES = env_list("VM_ALLOWED_IMAGES", "cyberlab/*")
VM_ALLOWED_CAPABILITIES = env_list(
    "VM_ALLOWED_CAPABILITIES",
    "CHOWN,DAC_OVERRIDE,FOWNER,SETUID,SETGID,NET_BIND_SERVICE,KILL,SYS_CHROOT,AUDIT_WRITE",
)
# Ceilings on what a template may ask for; above them the start is refused.
VM_MAX_MEMORY_MB = env_int("VM_MAX_MEMORY_MB", 2048)
VM_MAX_CPUS = env_float("VM_MAX_CPUS", 2.0)
# A fork bomb inside a machine stops here instead of starving the host.
VM_PIDS_LIMIT = env_int("VM_PIDS_LIMIT", 256)
# Published ports a template may ask for; each costs a host port and a proxy.
VM_MAX_PORTS = env_int("VM_MAX_PORTS", 8)
# Durations are in seconds. A lab takes an hour or two; extending adds an hour, only in
# the last half hour (so nobody keeps a machine by clicking early), at most twice and
# never past four hours from the start, which bounds what one learner can hold.
VM_LIFETIME = env_int("VM_LIFETIME", 2 * 3600)
VM_EXTEND = env_int("VM_EXTEND", 3600)
VM_EXTEND_WINDOW = env_int("VM_EXTEND_WINDOW", 30 * 60)
VM_MAX_RENEWALS = env_int("VM_MAX_RENEWALS", 2)
VM_MAX_LIFETIME = env_int("VM_MAX_LIFETIME", 4 * 3600)
# Live machines per learner, and on the whole platform (see VM_DOCKER_SUBNET_POOL).
VM_MAX_PER_USER = env_int("VM_MAX_PER_USER", 1)
VM_MAX_TOTAL = env_int("VM_MAX_TOTAL", 25)
# Live state outlives the expiry by this much, so the sweeper, which tears the machine
# down, ends it rather than Redis forgetting it first.
VM_STATE_GRACE = env_int("VM_STATE_GRACE", 10 * 60)
# A failed start stays visible to the learner this long.
VM_FAILED_STATE_TTL = env_int("VM_FAILED_STATE_TTL", 10 * 60)
# After a session closes, late writes of its state are refused for this long.
VM_CLOSED_MARKER_TTL = env_int("VM_CLOSED_MARKER_TTL", 15 * 60)
# A start still provisioning after this long (its worker died) is failed by the
# sweeper; longer than CELERY_TASK_TIME_LIMIT so a slow start is never cut short.
VM_PROVISION_TIMEOUT = env_int("VM_PROVISION_TIMEOUT", 10 * 60)
# A stop whose teardown has not finished after this long is torn down again.
VM_STOP_TIMEOUT = env_int("VM_STOP_TIMEOUT", 5 * 60)
# Live state with no ledger row younger than this is a start still committing.
VM_CLAIM_GRACE = env_int("VM_CLAIM_GRACE", 60)
# The learner is warned (the `machine.expiring` event) this long before expiry, and once
# more, the final warning, this long before.
VM_EXPIRY_WARNING = env_int("VM_EXPIRY_WARNING", 10 * 60)
VM_EXPIRY_FINAL_WARNING = env_int("VM_EXPIRY_FINAL_WARNING", 2 * 60)
# Idle reaping (vms/activity.py): a machine without gateway traffic for VM_IDLE_TIMEOUT
# seconds (0: never) is warned, and stopped VM_IDLE_GRACE later if still idle. The gateway
# writes a machine's activity at most once per VM_ACTIVITY_RESOLUTION seconds.
VM_IDLE_TIMEOUT = env_int("VM_IDLE_TIMEOUT", 30 * 60)
VM_IDLE_GRACE = env_int("VM_IDLE_GRACE", 5 * 60)
VM_ACTIVITY_RESOLUTION = env_int("VM_ACTIVITY_RESOLUTION", 10)
# Sessions the sweeper handles per pass; the next pass takes the rest.
VM_SWEEP_BATCH = env_int("VM_SWEEP_BATCH", 500)
# Warnings and teardowns land within this of their time; a sweep costs a few
# milliseconds whatever the number of live machines (bench/vms_sweep_bench.py).
VM_SWEEP_INTERVAL = env_int("VM_SWEEP_INTERVAL", 10)
VM_RECONCILE_INTERVAL = env_int("VM_RECONCILE_INTERVAL", 5 * 60)
# Each Celery worker follows the engine's event stream, so a machine that dies or is
# removed behind the platform's back is failed at once (vms/watch.py); the stream is
# read with this timeout, and read again this long after the engine went away.
VM_WATCH_ENGINE = env_bool("VM_WATCH_ENGINE", True)
VM_WATCH_READ_TIMEOUT = env_float("VM_WATCH_READ_TIMEOUT", 5.0)
VM_WATCH_RETRY = env_float("VM_WATCH_RETRY", 1.0)
CELERY_BEAT_SCHEDULE["vms-sweep"] = {
    "task": "vms.tasks.vm_sweep",
    "schedule": VM_SWEEP_INTERVAL,
    # A sweep queued behind a backlog is worthless once the next one is due.
    "options": {"expires": VM_SWEEP_INTERVAL},
}
CELERY_BEAT_SCHEDULE["vms-reconcile"] = {
    "task": "vms.tasks.vm_reconcile",
    "schedule": VM_RECONCILE_INTERVAL,
    "options": {"expires": VM_RECONCILE_INTERVAL},
}

# =============================================================================
# Rate limits and sessions
# README "Rate limits and sessions"; cyberlab/ratelimit.py, cyberlab/throttling.py
# =============================================================================

# "N/unit" per scope (s, min, hour, day; "5/30s" for N per 30 seconds; "none" for no
# limit), each overridable with THROTTLE_RATE_<SCOPE>, e.g. THROTTLE_RATE_REGISTER=1000/hour.
_THROTTLE_DEFAULTS = {
    # Per client IP for signed-out requests; a classroom behind one NAT shares it.
    "anon": "300/min",
    # Per user: well above what the SPA's polling needs, well below a scraper.
    "user": "1200/min",
    # Per client IP and, separately, per username: slows password guessing.
    "login": "10/min",
    "register": "20/hour",
    # Wrong flag answers per learner, as CTFd: enough to fix typos, too few to brute-force.
    "flag": "10/min",
    # Machines started per learner (starts and resets that created one; a start that
    # returns the live machine is free): each costs a container. The only start limit.
    "vm_start": "20/hour",
}
THROTTLE_RATES = {
    scope: os.environ.get(f"THROTTLE_RATE_{scope.upper()}", default)
    for scope, default in _THROTTLE_DEFAULTS.items()
}
# Reverse proxies in front of the app: X-Forwarded-For is trusted for this many hops
# only, so a client cannot claim another address (0: REMOTE_ADDR alone).
NUM_PROXIES = env_int("NUM_PROXIES", 0)
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = THROTTLE_RATES
REST_FRAMEWORK["NUM_PROXIES"] = NUM_PROXIES
# A session's last_seen_at is written at most this often, not on every request.
SESSION_TOUCH_INTERVAL = env_int("SESSION_TOUCH_INTERVAL", 60)
# Who a token or session signs in is kept in each process while Postgres reports no change
# (cyberlab/accounts/credentials.py): trusted only while a ping over the reporting
# connection came back within the lease; every entry ends after the TTL in any case.
CREDENTIAL_CACHE_ENABLED = env_bool("CREDENTIAL_CACHE_ENABLED", True)
CREDENTIAL_CACHE_TTL = env_float("CREDENTIAL_CACHE_TTL", 60.0)
CREDENTIAL_CACHE_LEASE = env_float("CREDENTIAL_CACHE_LEASE", 1.0)
CREDENTIAL_CACHE_PING = env_float("CREDENTIAL_CACHE_PING", 0.25)
CREDENTIAL_CACHE_MAX_ENTRIES = env_int("CREDENTIAL_CACHE_MAX_ENTRIES", 10_000)

# =============================================================================
# Leaderboard
# README "Leaderboard"; leaderboard/keys.py and scores.py explain the keys and their scores
# =============================================================================

# Lifetime of the `leaderboard:all` snapshot (the seed's 5 minutes); a solve makes it
# stale sooner, so this only bounds how old an unchanged board's snapshot gets.
LEADERBOARD_CACHE_TTL = env_int("LEADERBOARD_CACHE_TTL", 5 * 60)
# Two receivers of a flag's first solves racing to announce first blood: one claim,
# kept this long, lets only one of them.
LEADERBOARD_FIRST_BLOOD_CLAIM_TTL = env_int("LEADERBOARD_FIRST_BLOOD_CLAIM_TTL", 60 * 60)
# The snapshot is rebuilt by the first reader this many seconds before it expires, so it
# never runs out under traffic and no reader finds it missing.
LEADERBOARD_SNAPSHOT_REFRESH_AHEAD = env_int("LEADERBOARD_SNAPSHOT_REFRESH_AHEAD", 30)
# One reader rebuilds the snapshot at a time; the lock outlives any sane rebuild.
LEADERBOARD_SNAPSHOT_LOCK_TTL = env_float("LEADERBOARD_SNAPSHOT_LOCK_TTL", 10.0)
# A queued rebuild of the boards blocks further ones this long (or until it finishes).
LEADERBOARD_REBUILD_LOCK_TTL = env_int("LEADERBOARD_REBUILD_LOCK_TTL", 60)
# Staff test the labs; their points would crowd out learners'. Changing it needs a rebuild.
LEADERBOARD_INCLUDE_STAFF = env_bool("LEADERBOARD_INCLUDE_STAFF", False)
# Standings shown above and below mine on leaderboard/me/.
LEADERBOARD_AROUND = env_int("LEADERBOARD_AROUND", 5)
# Let signed-out visitors read the boards (not leaderboard/me/), as a public CTF
# scoreboard does. Off: display names fall back to usernames, which are login names.
LEADERBOARD_PUBLIC = env_bool("LEADERBOARD_PUBLIC", False)
# How often the catch-up task applies solves the live updates missed.
LEADERBOARD_CATCHUP_INTERVAL = env_int("LEADERBOARD_CATCHUP_INTERVAL", 60)
# The catch-up's cursor stays behind solves younger than this, so a transaction still
# open (its solve id taken, not yet committed) cannot commit below it.
LEADERBOARD_CATCHUP_SETTLE = env_int("LEADERBOARD_CATCHUP_SETTLE", 300)
LEADERBOARD_CATCHUP_BATCH = env_int("LEADERBOARD_CATCHUP_BATCH", 2000)
# Periodic full rebuild from Postgres: the backstop for changes no event reports (a solve
# deleted while Redis was unreachable, a bulk UPDATE in SQL).
LEADERBOARD_REBUILD_INTERVAL = env_int("LEADERBOARD_REBUILD_INTERVAL", 24 * 3600)
# A weekly board is kept this long after its week ends, for late readers.
LEADERBOARD_WEEKLY_GRACE = env_int("LEADERBOARD_WEEKLY_GRACE", 24 * 3600)
# A learner's refresh re-reads Postgres after writing and retries this often if it moved.
LEADERBOARD_REFRESH_ATTEMPTS = env_int("LEADERBOARD_REFRESH_ATTEMPTS", 3)
# Deleting more learners' solves than this at once (a course) queues a rebuild instead.
LEADERBOARD_REFRESH_MAX_LEARNERS = env_int("LEADERBOARD_REFRESH_MAX_LEARNERS", 50)
CELERY_BEAT_SCHEDULE["leaderboard-catch-up"] = {
    "task": "leaderboard.catch_up",
    "schedule": LEADERBOARD_CATCHUP_INTERVAL,
}
CELERY_BEAT_SCHEDULE["leaderboard-rebuild"] = {
    "task": "leaderboard.rebuild",
    "schedule": LEADERBOARD_REBUILD_INTERVAL,
}

# =============================================================================
# Metrics (cyberlab/metrics.py): /metrics for a scraper holding METRICS_TOKEN (bearer) or
# coming from an address in METRICS_ALLOW (addresses or networks); 404 for anyone else.
# =============================================================================
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOW = env_list("METRICS_ALLOW")
# Seconds the sweep, reconcile and beat stamps live in Redis: a stamp older than this is
# gone, and the scrape shows no value rather than a stale one.
METRICS_STAMP_TTL = env_int("METRICS_STAMP_TTL", 86400)
# The broker queues whose depth is reported (Celery's default queue is "celery").
METRICS_QUEUES = env_list("METRICS_QUEUES", "celery")
# /readyz calls the workers' engine report and the beat's heartbeat stale after this many
# seconds (the sweep, which reports the engine, runs every VM_SWEEP_INTERVAL).
READY_REPORT_MAX_AGE = env_int("READY_REPORT_MAX_AGE", 60)
