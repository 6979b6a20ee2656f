import datetime
import pickle

from django.core.cache import cache
from django.urls import reverse


def _is_pickle(raw: bytes) -> bool:
    try:
        pickle.loads(raw)  # noqa: S301 - test data from our own Redis
    except Exception:
        return False
    return raw[:1] == b"\x80"


def test_no_value_in_redis_is_a_pickle_after_login_and_cached_reads(api_client, user, redis):
    # given a login (session), a profile read (raw key) and a Django cache write
    api_client.post(reverse("auth-login"), {"username": user.username, "password": "correct-horse-battery"})
    assert api_client.get(reverse("auth-me")).status_code == 200
    cache.set("sample", {"when": datetime.datetime.now(datetime.UTC)}, 60)
    # when every key is read back
    keys = list(redis.scan_iter("*"))
    # then there are values and none is a pickle
    assert len(keys) >= 3
    for key in keys:
        kind = redis.type(key)
        if kind == b"string":
            raw = redis.get(key)
            assert not _is_pickle(raw), key
            assert raw[:1] in (b"{", b"[", b'"') or raw.isdigit(), (key, raw[:40])
        elif kind == b"hash":
            assert not any(_is_pickle(v) for v in redis.hvals(key)), key


def test_a_value_the_json_serializer_cannot_encode_is_not_cached_and_not_an_error():
    assert cache.set("sample:object", {"o": object()}, 60) is False
    assert cache.get("sample:object") is None


def test_datetimes_are_cached_as_strings():
    when = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
    cache.set("sample:when", when, 60)
    assert cache.get("sample:when") == "2026-05-01T12:00:00Z"
