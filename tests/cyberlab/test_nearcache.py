"""The near cache against the real Redis: served from memory until Redis reports a change,
and never across an outage or a lost tracking connection."""

from __future__ import annotations

import copy
import logging
import os
import time

import pytest
from django.conf import settings
from django.test import override_settings
from redis import ResponseError
from redis.client import PubSub

from cyberlab import nearcache, redis_client
from cyberlab.nearcache import near_cache

nearcache.track_prefix("nctest:")


class Loader:
    """Reads a key from Redis, counting how often it really did."""

    def __init__(self, redis, key: str = "nctest:value") -> None:
        self.redis = redis
        self.key = key
        self.calls = 0
        self.during = None

    def __call__(self):
        self.calls += 1
        value = self.redis.get(self.key)
        if self.during is not None:
            self.during()
        return value

    def read(self):
        return nearcache.read(self.key, self, deps=[self.key])


def wait_until(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_second_read_is_served_from_memory(redis):
    redis.set("nctest:value", "one")
    loader = Loader(redis)
    assert loader.read() == b"one"
    assert loader.read() == b"one"
    assert loader.calls == 1


def test_a_write_by_anyone_is_seen_on_the_next_read(redis):
    # given a value this process holds in memory
    redis.set("nctest:value", "one")
    loader = Loader(redis)
    loader.read()
    # when another client changes it, then the very next read has the new value
    other = redis.from_url(settings.REDIS_URL)
    other.set("nctest:value", "two")
    assert loader.read() == b"two"
    other.delete("nctest:value")
    assert loader.read() is None
    assert loader.calls == 3


def test_a_key_that_expires_in_redis_is_not_served_from_memory(redis):
    redis.set("nctest:value", "short", px=100)
    loader = Loader(redis)
    assert loader.read() == b"short"
    time.sleep(0.15)
    redis.exists("nctest:value")  # Redis deletes an expired key at the latest when it is touched
    assert loader.read() is None


def test_a_read_that_raced_a_change_is_not_kept(redis):
    # given a load that reads the old value while another client changes it
    redis.set("nctest:value", "old")
    loader = Loader(redis)
    loader.during = lambda: redis.set("nctest:value", "new")
    # when it returns, what it read is answered but not kept
    assert loader.read() == b"old"
    loader.during = None
    assert wait_until(lambda: loader.read() == b"new")
    calls = loader.calls
    assert loader.read() == b"new"
    assert loader.calls == calls


def test_a_flush_drops_everything(redis):
    redis.set("nctest:value", "one")
    loader = Loader(redis)
    loader.read()
    redis.flushdb()
    assert loader.read() is None


def test_an_answer_not_to_keep_is_loaded_every_time(redis):
    loads = []

    def load():
        loads.append(1)
        return None

    for _ in range(3):
        nearcache.read("nctest:none", load, deps=["nctest:none"], keep=lambda value: value is not None)
    assert len(loads) == 3


def test_entries_end_with_their_lifetime(redis):
    redis.set("nctest:value", "one")
    loader = Loader(redis)
    with override_settings(NEAR_CACHE_TTL=0.05):
        loader.read()
        loader.read()
        time.sleep(0.06)
        loader.read()
    assert loader.calls == 2


def test_the_size_is_capped_oldest_first(redis):
    with override_settings(NEAR_CACHE_MAX_ENTRIES=3):
        for number in range(5):
            nearcache.read(f"nctest:{number}", lambda n=number: n, deps=[f"nctest:{number}"])
        assert len(near_cache) == 3
        assert nearcache.read("nctest:0", lambda: "reloaded", deps=["nctest:0"]) == "reloaded"
        assert nearcache.read("nctest:4", lambda: "reloaded", deps=["nctest:4"]) == 4


def test_disabled_it_always_loads(redis):
    redis.set("nctest:value", "one")
    loader = Loader(redis)
    with override_settings(NEAR_CACHE_ENABLED=False):
        loader.read()
        loader.read()
    assert loader.calls == 2


@pytest.fixture
def private_cache(private_redis):
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = private_redis.url
    with override_settings(CACHES=caches, REDIS_URL=private_redis.url, REDIS_RETRY_INTERVAL=0):
        yield private_redis


def test_nothing_is_served_from_memory_across_an_outage(private_cache):
    # given a value held in memory, read from a Redis that then dies keeping a snapshot
    redis_client.get_client().set("nctest:value", "before")

    def get():
        with redis_client.connection() as client:
            return client.get("nctest:value")

    def read():
        load = lambda: redis_client.fallback(get, "fallback")  # noqa: E731
        return nearcache.read("nctest:value", load, deps=["nctest:value"])

    assert read() == b"before"
    private_cache.stop_keeping_data()
    # when Redis is gone, the reads go to the fallback rather than memory
    assert read() == "fallback"
    # and when Redis returns with its snapshot and the value changes, the change is seen
    private_cache.start()
    assert wait_until(lambda: read() == b"before")
    redis_client.get_client().set("nctest:value", "after")
    assert read() == b"after"


def test_a_tracking_connection_closed_by_the_server_drops_everything(redis):
    redis.set("nctest:value", "one")
    loader = Loader(redis)
    loader.read()
    # when Redis closes the tracking connection (the only subscriber of the channel)
    tracking = [c for c in redis.client_list() if c["name"] == f"nearcache-{os.getpid()}"]
    assert len(tracking) == 1
    redis.client_kill_filter(_id=tracking[0]["id"])
    redis.set("nctest:value", "two")  # a change nobody reported to this process
    # then nothing is served from memory until a new connection is tracking
    assert loader.read() == b"two"


def test_a_redis_that_refuses_tracking_is_read_through_and_warned_about_once(redis, monkeypatch, caplog):
    # given a Redis that refuses the tracking command (an old or locked-down server)
    real = PubSub.execute_command

    def refusing(self, *args):
        if "TRACKING" in args:
            raise ResponseError("ERR unknown command 'CLIENT TRACKING'")
        return real(self, *args)

    monkeypatch.setattr(PubSub, "execute_command", refusing)
    # (a Celery worker started earlier in the run may have disabled existing loggers)
    monkeypatch.setattr(nearcache.logger, "disabled", False)
    monkeypatch.setattr(nearcache.logger, "propagate", True)
    caplog.set_level(logging.WARNING, logger="cyberlab.nearcache")
    near_cache.reset()
    redis.set("nctest:value", "one")
    loader = Loader(redis)
    # when
    with override_settings(REDIS_RETRY_INTERVAL=0):
        values = [loader.read() for _ in range(3)]
    # then every read goes to Redis, and one warning says so
    assert values == [b"one"] * 3
    assert loader.calls == 3
    warnings = [r for r in caplog.records if r.name == "cyberlab.nearcache" and r.levelname == "WARNING"]
    assert len(warnings) == 1


@pytest.mark.parametrize("write", ["set", "script"])
def test_a_change_is_seen_by_the_very_next_read_every_time(redis, write):
    # Redis sends a change's report before the writer's reply: a read right after the
    # write never serves the old value, whatever the timing (500 rounds).
    stale = 0
    for round_ in range(500):
        nearcache.read("nctest:round", lambda r=round_: r, deps=["nctest:round"])
        if write == "set":
            redis.set("nctest:round", round_)
        else:
            redis.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "nctest:round", round_)
        if nearcache.read("nctest:round", lambda: "fresh", deps=["nctest:round"]) != "fresh":
            stale += 1
    assert stale == 0
