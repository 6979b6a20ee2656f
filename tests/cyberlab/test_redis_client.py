import datetime
import logging
import time

import pytest
from django.test import override_settings

from cyberlab import redis_client
from tests.conftest import dead_redis_caches


def test_json_round_trip_with_ttl(redis):
    # given
    value = {"a": 1, "when": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC), "tags": ["x"]}
    # when
    stored = redis_client.json_set("sample:json", value, ttl=60)
    # then
    assert stored is True
    assert redis_client.json_get("sample:json") == {"a": 1, "when": "2026-01-02T00:00:00Z", "tags": ["x"]}
    assert 59_000 <= redis.pttl("sample:json") <= 60_000
    assert redis.get("sample:json").startswith(b"{")


def test_json_get_of_missing_key_returns_the_default():
    assert redis_client.json_get("sample:missing", default={"empty": True}) == {"empty": True}


def test_json_set_refuses_a_value_that_is_not_json_ready(redis):
    assert redis_client.json_set("sample:bad", {"x": object()}) is False
    assert redis.exists("sample:bad") == 0


def test_delete_removes_named_keys(redis):
    redis.set("a:1", "x")
    redis.set("a:2", "x")
    assert redis_client.delete("a:1", "a:2", "a:3") == 2
    assert redis_client.delete() == 0


def test_fallback_returns_the_callers_default_when_redis_is_down():
    with override_settings(CACHES=dead_redis_caches()):
        assert redis_client.fallback(lambda: redis_client.json_get("k"), "default") == "default"
        assert redis_client.is_available() is False


def test_an_outage_is_logged_once_not_once_per_call(caplog):
    with (
        override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=0.05),
        caplog.at_level(logging.WARNING, logger="cyberlab.redis_client"),
    ):
        for _ in range(20):
            redis_client.fallback(lambda: redis_client.json_get("k"), None)
            time.sleep(0.01)
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1


def test_recovery_is_logged_and_redis_is_used_again(caplog, redis):
    # given an outage
    with override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=0.0):
        redis_client.fallback(lambda: redis_client.json_get("k"), None)
    assert redis_client.incident.is_down
    # when Redis answers again
    with caplog.at_level(logging.WARNING, logger="cyberlab.redis_client"):
        redis_client.json_set("back", {"ok": True})
    # then
    assert not redis_client.incident.is_down
    assert redis.get("back") == b'{"ok":true}'
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_calls_skip_redis_while_an_incident_is_fresh():
    with override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=30):
        redis_client.fallback(lambda: redis_client.json_get("k"), None)
        with pytest.raises(redis_client.RedisUnavailable, match="retrying"):
            redis_client.json_get("k")


def test_django_cache_errors_are_ignored_and_logged_once_per_outage(caplog):
    from django.core.cache import caches

    with (
        override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=0.0),
        caplog.at_level(logging.INFO),
    ):
        cache = caches["default"]
        results = [cache.get("anything", "default") for _ in range(10)]
        cache.set("anything", {"x": 1}, 60)
    assert results == ["default"] * 10
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in messages if "Redis unavailable" in m]) == 1
    assert not [m for m in messages if "Exception ignored" in m]


def test_cache_calls_skip_redis_while_an_outage_is_known():
    from django.core.cache import caches

    with override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=30):
        caches["default"].get("anything")
        assert redis_client.incident.is_down
        retry_at = redis_client.incident.retry_at
        # skipped calls neither reach Redis nor extend the outage
        assert caches["default"].get("anything", "default") == "default"
        assert redis_client.incident.retry_at == retry_at


@pytest.fixture
def callbacks(monkeypatch):
    """The recovery callbacks of the test alone (apps' own ones set aside)."""
    monkeypatch.setattr(redis_client.incident, "_callbacks", [])


def an_outage() -> None:
    with override_settings(CACHES=dead_redis_caches(), REDIS_RETRY_INTERVAL=0.0):
        redis_client.fallback(lambda: redis_client.json_get("k"), None)
    assert redis_client.incident.is_down


def test_recovery_callbacks_run_once_per_outage_before_the_next_command(callbacks, redis):
    # given a callback that uses Redis itself, and an outage
    calls = []

    def redo_lost_writes() -> None:
        calls.append(1)
        redis_client.json_set("redone", len(calls))

    redis_client.on_recover(redo_lost_writes)
    redis_client.on_recover(redo_lost_writes)  # registered twice, runs once
    an_outage()
    # when Redis answers again, for several calls
    with override_settings(REDIS_RETRY_INTERVAL=0.0):
        first = redis_client.json_get("redone")
        redis_client.json_get("redone")
    # then the callback ran once, before the first call's own command
    assert first == 1
    assert calls == [1]
    # and once more after the next outage
    an_outage()
    with override_settings(REDIS_RETRY_INTERVAL=0.0):
        assert redis_client.json_get("redone") == 2


def test_a_failing_recovery_callback_is_logged_and_the_others_and_the_call_go_on(callbacks, redis, caplog):
    # given a callback that fails, registered before one that works
    ran = []

    def broken() -> None:
        raise ValueError("broken callback")

    redis_client.on_recover(broken)
    redis_client.on_recover(lambda: ran.append(1))
    an_outage()
    # when Redis answers again
    with caplog.at_level(logging.ERROR, logger="cyberlab.redis_client"):
        stored = redis_client.json_set("after", {"ok": True})
    # then the failure is logged, not raised, and everything else happened
    assert stored is True
    assert redis.get("after") == b'{"ok":true}'
    assert ran == [1]
    assert [r.exc_info[1].args for r in caplog.records if r.exc_info] == [("broken callback",)]


def test_a_reset_forgets_the_outage_without_running_the_callbacks(callbacks):
    ran = []
    redis_client.on_recover(lambda: ran.append(1))
    an_outage()
    redis_client.incident.reset()
    assert not redis_client.incident.is_down
    assert ran == []


def test_a_short_lock_is_single_flight_and_released_only_by_its_holder():
    first = redis_client.lock_acquire("lock:test", ttl=5)
    assert first is not None
    assert redis_client.lock_acquire("lock:test", ttl=5) is None
    redis_client.lock_release("lock:test", "someone-else")
    assert redis_client.lock_acquire("lock:test", ttl=5) is None
    redis_client.lock_release("lock:test", first)
    assert redis_client.lock_acquire("lock:test", ttl=5) is not None
