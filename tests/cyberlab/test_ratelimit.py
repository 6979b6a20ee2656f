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


# --- slots reserved in advance (`hit(..., reserve=True)`) --------------------------------


def counting_round_trips(monkeypatch) -> list[str]:
    """The scripts sent to Redis from now on (the real calls still happen)."""
    sent = []
    real = ratelimit._run_script

    def counting(sha, source, **kwargs):
        sent.append(sha)
        return real(sha, source, **kwargs)

    monkeypatch.setattr(ratelimit, "_run_script", counting)
    return sent


def test_a_busy_client_is_admitted_from_reserved_slots_counted_one_by_one(redis, monkeypatch):
    # given a client far from its limit, making request after request
    target = bucket("busy", limit=1000)
    sent = counting_round_trips(monkeypatch)
    # when
    decisions = [ratelimit.hit([target], reserve=True) for _ in range(100)]
    # then every request is admitted, most of them without a round trip
    assert all(d.admitted for d in decisions)
    assert len(sent) <= 10
    # and each still counts down the room left by one, as if it had asked Redis
    assert [d.usages[0].remaining for d in decisions] == list(range(999, 899, -1))
    # and Redis counts every one of them (and the slots still reserved)
    assert 100 <= redis.zcard(target.key) <= 100 + 32


def test_a_client_making_one_request_at_a_time_asks_redis_each_time(redis, monkeypatch, settings):
    # given requests spaced further apart than a reserve lives
    settings.RATELIMIT_RESERVE_LIFETIME = 0.05
    target = bucket("calm", limit=1000)
    sent = counting_round_trips(monkeypatch)
    # when
    for _ in range(4):
        assert ratelimit.hit([target], reserve=True).admitted
        time.sleep(0.12)
    # then nothing was reserved for them: each was decided and counted alone
    assert len(sent) == 4
    assert redis.zcard(target.key) == 4


def test_reserved_slots_left_unused_are_given_back(redis, settings):
    # given a burst that made this process reserve slots, then a pause past their lifetime
    settings.RATELIMIT_RESERVE_LIFETIME = 0.2
    target = bucket("burst-then-pause", limit=1000)
    for _ in range(12):
        ratelimit.hit([target], reserve=True)
    assert redis.zcard(target.key) > 12
    time.sleep(0.5)
    # when the next request asks Redis
    assert ratelimit.hit([target], reserve=True).admitted
    # then only requests that were admitted still count
    assert redis.zcard(target.key) == 13


def test_nothing_is_reserved_once_half_the_limit_is_used(redis, monkeypatch):
    # given a client that used half of its limit
    target = bucket("half-used", limit=100)
    for _ in range(50):
        ratelimit.hit([target])
    sent = counting_round_trips(monkeypatch)
    # when it keeps going until refused
    decisions = [ratelimit.hit([target], reserve=True) for _ in range(60)]
    # then each of its requests was decided by Redis, and exactly the limit admitted
    assert len(sent) == 60
    assert sum(d.admitted for d in decisions) == 50
    assert redis.zcard(target.key) == 100


def _hammer(bucket_key: str, limit: int, results) -> None:
    # One process of several: its threads share its reserved slots.
    target = Bucket(bucket_key, Rate(limit=limit, window=60.0))
    admitted = []
    lock = threading.Lock()

    def fire():
        for _ in range(150):
            decision = ratelimit.hit([target], reserve=True)
            with lock:
                admitted.append(bool(decision and decision.admitted))

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(sum(admitted))


def test_processes_sharing_a_limit_with_reserved_slots_admit_exactly_the_limit(redis):
    # given three processes of four threads each, 1,800 requests against a limit of 300
    import multiprocessing

    target = bucket("shared", limit=300)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    processes = [context.Process(target=_hammer, args=(target.key, 300, results)) for _ in range(3)]
    # when
    for process in processes:
        process.start()
    admitted = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    # then no more than the limit was admitted, and no slot was lost to a reserve
    assert sum(admitted) == 300
    assert redis.zcard(target.key) == 300
