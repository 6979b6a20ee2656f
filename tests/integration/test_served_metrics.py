"""/metrics under scripts/serve.sh with two worker processes: a scrape sums them all."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.served import fetch, served

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def healthz_count(base: str) -> float:
    status, body, _ = fetch(f"{base}/metrics", headers={"Authorization": "Bearer scrape"})
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "cyberlab_http_requests_total" and sample.labels["route"] == "/healthz"
    )


def test_every_worker_process_is_counted_once(tmp_path):
    with served(tmp_path, asgi=True, workers=2, env={"METRICS_TOKEN": "scrape"}) as base:
        before = healthz_count(base)
        # many at once, a new connection each: both processes take some
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda _: fetch(f"{base}/healthz")[0], range(400)))
        assert answers == [200] * 400
        # and every scrape, whichever process answers it, counts them all
        with ThreadPoolExecutor(max_workers=4) as pool:
            counts = list(pool.map(lambda _: healthz_count(base), range(8)))
        assert counts == [before + 400] * 8
        # and nobody without the token learns the endpoint exists
        assert fetch(f"{base}/metrics")[0] == 404
