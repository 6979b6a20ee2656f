"""/metrics: closed to all but the scraper, and each figure an operator reads is right.
Several server processes summing their counters: tests/integration/test_served_metrics.py."""

from __future__ import annotations

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from cyberlab.celery import app

pytestmark = pytest.mark.django_db

TOKEN = "scraper-secret"


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW = []


def scrape(client=None) -> dict[tuple[str, tuple], float]:
    response = (client or APIClient()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_without_the_token_or_an_allowed_address_metrics_are_not_found(settings):
    client = APIClient()
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404
    # an address on the allow-list gets them without a token
    settings.METRICS_ALLOW = ["10.0.0.0/8", "127.0.0.1"]
    assert client.get("/metrics").status_code == 200
    settings.METRICS_ALLOW = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 404


def test_requests_are_counted_by_route_pattern_and_status():
    route = "/api/v1/courses/<slug:slug>/"
    before = scrape()
    client = APIClient()
    for _ in range(3):
        assert client.get("/api/v1/courses/no-such-course/").status_code == 404
    after = scrape()
    name = "cyberlab_http_requests_total"
    assert (
        value(after, name, route=route, method="GET", status="404")
        - value(before, name, route=route, method="GET", status="404")
        == 3
    )
    latency = "cyberlab_http_request_duration_seconds_count"
    assert value(after, latency, route=route) - value(before, latency, route=route) == 3
    # the raw path never becomes a label
    assert not any("no-such-course" in str(labels) for _, labels in after)


def test_rate_limit_refusals_are_counted_by_the_scope_that_refused(settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login": "1/min"}
    client = APIClient()
    before = value(scrape(), "cyberlab_ratelimit_refusals_total", scope="login")
    for _ in range(3):
        client.post("/api/v1/auth/login/", {"username": "nobody", "password": "wrong"}, format="json")
    after = value(scrape(), "cyberlab_ratelimit_refusals_total", scope="login")
    assert after - before == 2


def test_the_broker_queue_depth_is_read_from_the_broker(settings):
    # a queue of this test's own, so no worker takes the task
    settings.METRICS_QUEUES = ["metrics-test"]
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("metrics-test")
    assert value(scrape(), "cyberlab_celery_queue_depth", queue="metrics-test") == 0
    try:
        with app.connection_for_write() as connection:
            app.send_task("no.such.task", connection=connection, queue="metrics-test")
        assert value(scrape(), "cyberlab_celery_queue_depth", queue="metrics-test") == 1
    finally:
        broker.delete("metrics-test")
