"""Liveness and readiness probes, outside the API and its authentication."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from cyberlab import metrics, redis_client
from cyberlab.celery import app as celery_app


@require_GET
def healthz(request):
    """The process answers; no dependency is consulted."""
    return JsonResponse({"status": "ok"})


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        ok, error = check(), None
    except Exception as exc:  # a probe reports every failure rather than raising it
        ok, error = False, f"{type(exc).__name__}: {exc}"
    result = {"ok": bool(ok), "ms": round((time.perf_counter() - started) * 1000, 1)}
    if error:
        result["error"] = error
    return result


def _postgres() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


def _broker() -> bool:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.CELERY_PUBLISH_TIMEOUT)
    return True


def _reported() -> dict:
    """The engine as the workers last saw it, and the beat's heartbeat: their ages, read
    from Redis. They do not change the status: a web node serves without a beat, and
    restarting it would not bring one back."""
    now = time.time()
    try:
        engine = redis_client.json_get(metrics.ENGINE_KEY)
        with redis_client.connection() as client:
            beat = client.get(metrics.BEAT_KEY)
    except redis_client.RedisUnavailable:
        return {}
    fresh = settings.READY_REPORT_MAX_AGE
    if engine is None:
        engine_check = {"ok": False, "error": "no worker has reported the engine"}
    else:
        age = round(now - engine["at"], 1)
        engine_check = {"ok": engine["ok"] and age <= fresh, "age_s": age}
        if engine.get("error"):
            engine_check["error"] = engine["error"]
    if beat is None:
        beat_check = {"ok": False, "error": "no beat heartbeat"}
    else:
        age = round(now - float(beat), 1)
        beat_check = {"ok": age <= fresh, "age_s": age}
    return {"engine": engine_check, "beat": beat_check}


@require_GET
def readyz(request):
    """Each dependency reported; 503 without Postgres, "degraded" without Redis or broker."""
    checks = {
        "postgres": _timed(_postgres),
        "redis": _timed(redis_client.is_available),
        "broker": _timed(_broker),
    }
    if not checks["postgres"]["ok"]:
        status_text, code = "unavailable", 503
    elif all(check["ok"] for check in checks.values()):
        status_text, code = "ok", 200
    else:
        status_text, code = "degraded", 200
    return JsonResponse({"status": status_text, "checks": checks, "workers": _reported()}, status=code)
