import logging
import threading
import time

import pytest
from django.test import override_settings

from cyberlab import ratelimit, redis_client
from cyberlab.ratelimit import Bucket, Rate
from tests.conftest import dead_redis_caches


def bucket(name: str, limit: int, window: float = 60.0) -> Bucket:
    return Bucket(ratelimit.key(scope="test", ident=name), Rate(limit=limit, window=window))


def test_fifty_concurrent_checks_at_a_limit_of_ten_admit_exactly_ten(redis):
    # given a bucket of 10 per minute and 50 threads released at once
    target = bucket("burst", limit=10)
    start = threading.Barrier(50)
    decisions = []
    lock = threading.Lock()

    def fire():
        start.wait()
        decision = ratelimit.hit([target])
        with lock:
            decisions.append(decision)

    threads = [threading.Thread(target=fire) for _ in range(50)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then
    assert len(decisions) == 50
    assert sum(d.admitted for d in decisions) == 10
    assert redis.zcard(target.key) == 10
    refused = [d for d in decisions if not d.admitted]
    assert all(0 < d.retry_after <= 60 for d in refused)


def test_a_refused_request_is_not_counted_and_says_when_to_retry(redis):
    # given a full bucket
    target = bucket("full", limit=2)
    first = ratelimit.hit([target])
    ratelimit.hit([target])
    # when
    refused = ratelimit.hit([target])
    # then
    assert first.admitted
    assert first.usages[0].remaining == 1
    assert not refused.admitted
    assert refused.usages[0].remaining == 0
    assert 59 < refused.retry_after <= 60
    assert redis.zcard(target.key) == 2


def test_capacity_returns_as_old_requests_leave_the_sliding_window(redis):
    # given 2 requests, then a third half a second later, at 3 per second
    target = bucket("slide", limit=3, window=1.0)
    assert ratelimit.hit([target]).admitted
    assert ratelimit.hit([target]).admitted
    time.sleep(0.5)
    assert ratelimit.hit([target]).admitted
    refused = ratelimit.hit([target])
    assert not refused.admitted
    # when the first two have left the window (about 0.5 s on), but not the third
    time.sleep(refused.retry_after + 0.1)
    later = [ratelimit.hit([target]) for _ in range(3)]
    # then exactly the two freed slots are admitted: no fixed-window reset to a full 3
    assert [d.admitted for d in later] == [True, True, False]


def test_a_request_counts_only_when_every_bucket_has_room(redis):
    # given a username bucket with room and an IP bucket that is full
    per_ip = bucket("ip", limit=1)
    per_user = bucket("user", limit=5)
    assert ratelimit.hit([per_ip, per_user]).admitted
    # when
    refused = ratelimit.hit([per_ip, per_user])
    # then nothing was counted in the bucket that had room
    assert not refused.admitted
    assert redis.zcard(per_user.key) == 1
    assert [u.remaining for u in refused.usages] == [0, 4]


def test_a_refund_gives_the_slot_back(redis):
    # given one request counted in a bucket of one
    target = bucket("refund", limit=1)
    decision = ratelimit.hit([target])
    # when it is taken back
    ratelimit.refund(decision=decision, buckets=[target])
    # then the bucket admits again
    assert redis.zcard(target.key) == 0
    assert ratelimit.hit([target]).admitted


def test_buckets_expire_with_their_window(redis):
    target = bucket("expiry", limit=5, window=30)
    ratelimit.hit([target])
    assert 0 < redis.pttl(target.key) <= 30_000


def test_the_script_is_reloaded_after_redis_forgot_it(redis):
    # given Redis restarted with an empty script cache
    target = bucket("reload", limit=5)
    ratelimit.hit([target])
    redis.script_flush()
    # when / then
    assert ratelimit.hit([target]).admitted
    assert redis.zcard(target.key) == 2


def test_redis_down_admits_every_request_and_warns_once(caplog):
    # given Redis does not answer
    with override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=0):
        caplog.set_level(logging.WARNING, logger="cyberlab.ratelimit")
        # when
        decisions = [ratelimit.hit([bucket("down", limit=1)]) for _ in range(3)]
    # then
    assert decisions == [None, None, None]
    warnings = [r for r in caplog.records if r.name == "cyberlab.ratelimit"]
    assert len(warnings) == 1
    assert "not enforced" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10/min", Rate(10, 60.0)), ("100/hour", Rate(100, 3600.0)), ("5/30s", Rate(5, 30.0))],
)
def test_rates_are_read_like_drf_with_an_optional_multiplier(text, expected):
    from cyberlab.throttling import parse_rate

    assert parse_rate(text) == expected
    assert parse_rate("none") is None


def test_a_connection_redis_closed_is_replaced_without_failing_open(redis):
    # given the limiter's connection, closed by Redis (a restart, an idle timeout)
    target = bucket("reconnect", limit=5)
    ratelimit.hit([target])
    for client in redis.client_list():
        if client["cmd"] == "evalsha":
            redis.client_kill_filter(_id=client["id"])
    # when / then: the next request is still counted, and no outage is declared
    decision = ratelimit.hit([target])
    assert decision is not None
    assert decision.admitted
    assert redis.zcard(target.key) == 2
    assert not redis_client.incident.is_down
