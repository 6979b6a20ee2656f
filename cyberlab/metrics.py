"""Prometheus metrics at /metrics, for an operator's scraper only.

Two kinds, so that every figure is right however many processes serve:
- What a web process counts itself (requests, latency, rate-limit refusals, Redis
  incidents and fallbacks, open event streams) lives in prometheus_client's metrics. Under
  several worker processes `scripts/serve.sh` points PROMETHEUS_MULTIPROC_DIR at a
  directory of the server's own, and a scrape sums every process of that server.
- What the workers and beat do is read at scrape time from where they leave it: the
  ledger (machines by status, starts, stops by reason, failures, start-to-running times,
  the oldest overdue machine), Redis (the last sweep and reconcile, the beat's heartbeat)
  and the broker (queue depth). Any web node answers the same for these.

The counters are incremented from redis_client and throttling, which this module must not
import at its top (they import it); it reaches them inside its functions.

Access: a bearer token (METRICS_TOKEN) or a client address in METRICS_ALLOW; anything else
gets 404, so the endpoint does not say it exists.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from datetime import timedelta

import redis
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

REQUESTS = Counter(
    "cyberlab_http_requests",
    "Requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "cyberlab_http_request_duration_seconds",
    "Time to answer a request, by route pattern.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter("cyberlab_ratelimit_refusals", "Requests refused by a rate limit.", ["scope"])
REDIS_INCIDENTS = Counter("cyberlab_redis_incidents", "Redis outages begun (one per incident).")
REDIS_FALLBACKS = Counter("cyberlab_redis_fallbacks", "Fallbacks served while Redis was unavailable.")
EVENT_STREAMS = Gauge("cyberlab_event_streams_open", "Event streams open.", multiprocess_mode="livesum")

# Redis keys the workers and beat keep for the scrape (DESIGN.md's schema).
SWEEP_KEY = "vm:maintenance:sweep"
RECONCILE_KEY = "vm:maintenance:reconcile"
BEAT_KEY = "celery:beat:heartbeat"
ENGINE_KEY = "vm:maintenance:engine"
START_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300)


def observe(request, response, started: float) -> None:
    """Counts one answered request under its route pattern (never the raw path: the
    number of label values stays that of the routes)."""
    match = getattr(request, "resolver_match", None)
    route = "/" + match.route if match is not None else "unmatched"
    REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    LATENCY.labels(route).observe(time.perf_counter() - started)


class MetricsMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        observe(request, response, started)
        return response


def mark_stamp(key: str) -> None:
    """Records that a periodic job ran now (Redis down: the scrape shows it late)."""
    from cyberlab import redis_client

    try:
        with redis_client.connection() as client:
            client.set(key, time.time(), ex=settings.METRICS_STAMP_TTL)
    except redis_client.RedisUnavailable:
        pass


def _stamp(client: redis.Redis, key: str) -> float | None:
    value = client.get(key)
    return float(value) if value is not None else None


class PlatformCollector:
    """The figures read at scrape time: the ledger, Redis and the broker."""

    def collect(self):
        from vms.models import VMSession, VMStatus

        now = timezone.now()
        open_rows = VMSession.objects.filter(stopped_at__isnull=True)
        machines = GaugeMetricFamily("cyberlab_machines", "Live machines, by status.", labels=["status"])
        by_status = dict(open_rows.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        for status in (VMStatus.PROVISIONING, VMStatus.RUNNING, VMStatus.STOPPING):
            machines.add_metric([status.value], by_status.get(status.value, 0))
        yield machines
        yield CounterMetricFamily(
            "cyberlab_machine_starts", "Machines asked for.", value=VMSession.objects.count()
        )
        stops = CounterMetricFamily("cyberlab_machine_stops", "Machines stopped.", labels=["reason"])
        closed = VMSession.objects.filter(stopped_at__isnull=False).values_list("stop_reason")
        for reason, count in closed.annotate(n=Count("id")).values_list("stop_reason", "n"):
            stops.add_metric([reason or "unknown"], count)
        yield stops
        yield CounterMetricFamily(
            "cyberlab_machine_failures",
            "Machines that failed to start or died.",
            value=VMSession.objects.filter(status=VMStatus.FAILED).count(),
        )
        yield self._start_times(VMSession)
        # A machine marked stopping has been handled; its teardown waits in the queue.
        active = open_rows.filter(status__in=[VMStatus.PROVISIONING, VMStatus.RUNNING])
        overdue = active.filter(expires_at__lt=now).aggregate(oldest=Min("expires_at"))["oldest"]
        yield GaugeMetricFamily(
            "cyberlab_sweeper_lag_seconds",
            "How long the oldest machine past its expiry has waited for the sweeper.",
            value=(now - overdue).total_seconds() if overdue else 0.0,
        )
        yield from self._from_redis()

    @staticmethod
    def _start_times(model) -> HistogramMetricFamily:
        took = ExpressionWrapper(F("running_at") - F("started_at"), output_field=DurationField())
        rows = model.objects.filter(running_at__isnull=False).annotate(took=took)
        within = {
            f"le{bound}": Count("id", filter=Q(took__lte=timedelta(seconds=bound))) for bound in START_BUCKETS
        }
        found = rows.aggregate(total=Count("id"), seconds=Sum("took"), **within)
        histogram = HistogramMetricFamily(
            "cyberlab_machine_start_seconds", "From the learner's start to the machine running."
        )
        buckets = [(str(float(bound)), found[f"le{bound}"]) for bound in START_BUCKETS]
        buckets.append(("+Inf", found["total"]))
        total = found["seconds"].total_seconds() if found["seconds"] else 0.0
        histogram.add_metric([], buckets, sum_value=total)
        return histogram

    @staticmethod
    def _from_redis():
        from cyberlab import redis_client

        stamps = {
            "cyberlab_sweep_last_timestamp_seconds": (SWEEP_KEY, "When the sweeper last finished."),
            "cyberlab_reconcile_last_timestamp_seconds": (RECONCILE_KEY, "When reconciling last finished."),
            "cyberlab_beat_heartbeat_timestamp_seconds": (BEAT_KEY, "When the beat last ticked."),
        }
        try:
            with redis_client.connection() as client:
                values = {name: _stamp(client, key) for name, (key, _) in stamps.items()}
        except redis_client.RedisUnavailable:
            values = {}
        for name, (_, description) in stamps.items():
            if values.get(name) is not None:
                yield GaugeMetricFamily(name, description, value=values[name])
        depth = GaugeMetricFamily("cyberlab_celery_queue_depth", "Tasks waiting.", labels=["queue"])
        broker = settings.CELERY_BROKER_URL
        if broker.startswith(("redis://", "rediss://", "unix://")):
            try:
                client = redis.Redis.from_url(broker, socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
                with client:
                    for queue in settings.METRICS_QUEUES:
                        depth.add_metric([queue], client.llen(queue))
            except redis.RedisError:
                pass
        yield depth


def _allowed(request) -> bool:
    from cyberlab.throttling import client_address

    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    if not settings.METRICS_ALLOW:
        return False
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOW)


@require_GET
def metrics(request):
    if not _allowed(request):
        raise Http404
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    platform = CollectorRegistry()
    platform.register(PlatformCollector())
    body = generate_latest(processes) + generate_latest(platform)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
