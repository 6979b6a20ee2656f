"""The shared catalogue cache: single flight under concurrent misses, safe invalidation."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from redis import Redis
from rest_framework.test import APIClient

from cyberlab import redis_client
from labs import cache, selectors, tasks
from labs.models import PendingCatalogueInvalidation
from tests.conftest import dead_redis_caches
from tests.labs.factories import CourseFactory, LabFactory, lab_admin_form


def _run_parallel(count: int, target) -> list:
    barrier = threading.Barrier(count)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(target())
        except Exception as error:  # collected and asserted by the caller
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


@pytest.mark.django_db(transaction=True)
def test_an_expired_hot_entry_is_recomputed_once_under_concurrent_requests(monkeypatch, redis):
    # given a published course, no cache entry, and a recompute slow enough to overlap
    CourseFactory(slug="hot")
    build = selectors._course_list_build
    calls = []

    def counting_build(**kwargs):
        calls.append(1)
        time.sleep(0.2)  # widens the window so every request arrives during the recompute
        return build(**kwargs)

    monkeypatch.setattr(selectors, "_course_list_build", counting_build)
    anonymous = type("Anonymous", (), {"is_authenticated": False, "is_staff": False})()
    # when twenty requests miss at once
    results = _run_parallel(20, lambda: selectors.course_list(user=anonymous))
    # then one recomputed, and all twenty got the course
    assert len(calls) == 1
    assert all([course["slug"] for course in result] == ["hot"] for result in results)
    assert json.loads(redis.get("courses:list"))[0]["slug"] == "hot"


def test_a_cached_entry_is_read_in_one_redis_command(redis, monkeypatch):
    # given an entry already cached (and the script that reads it known to Redis)
    cache.catalogue_cached("course:one", lambda: {"value": 1})
    client = redis_client.get_client()
    commands = []
    send = client.execute_command

    def counting(*args, **options):
        commands.append(args[0])
        return send(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    # when it is read again, then it comes from Redis in one command, not recomputed
    assert cache.catalogue_cached("course:one", lambda: {"value": "recomputed"}) == {"value": 1}
    assert commands == ["EVALSHA"]


def test_waiters_compute_themselves_when_the_lock_holder_died(settings, redis):
    # given a lock left by a holder that died, and a short wait
    settings.CATALOGUE_CACHE_LOCK_WAIT = 0.05
    redis.set("lock:course:x", "dead-holder", px=60_000)
    calls = []

    def compute():
        calls.append(1)
        return {"value": 1}

    # when a request misses
    value = cache.catalogue_cached("course:x", compute)
    # then it computed the value itself after the wait, and left the dead lock alone
    assert value == {"value": 1}
    assert calls == [1]
    assert redis.get("lock:course:x") == b"dead-holder"


def test_a_recompute_that_raced_an_invalidation_is_not_stored(redis):
    # given a recompute that reads the catalogue, then an invalidation lands meanwhile
    def compute():
        cache.catalogue_invalidate(keys=["course:y"])
        return {"stale": True}

    # when the recompute finishes
    value = cache.catalogue_cached("course:y", compute)
    # then its caller gets the value, but the stale value is not cached, nor the lock kept
    assert value == {"stale": True}
    assert redis.get("course:y") is None
    assert redis.get("lock:course:y") is None


def test_a_failing_recompute_releases_the_lock(redis):
    def compute():
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError):
        cache.catalogue_cached("course:z", compute)
    assert redis.get("lock:course:z") is None


def test_a_cache_entry_that_is_not_json_is_recomputed(redis):
    redis.set("course:bad", b"\x80not-json")
    assert cache.catalogue_cached("course:bad", lambda: {"ok": True}) == {"ok": True}
    assert json.loads(redis.get("course:bad")) == {"ok": True}


@pytest.mark.django_db
def test_without_redis_every_call_computes_from_postgres(settings):
    # given Redis configured at a port nobody listens on
    settings.CACHES = dead_redis_caches()
    calls = []
    # when the catalogue is read twice, then both computed and neither failed
    assert cache.catalogue_cached("courses:list", lambda: calls.append(1) or [1]) == [1]
    assert cache.catalogue_cached("courses:list", lambda: calls.append(1) or [1]) == [1]
    assert len(calls) == 2
    cache.catalogue_invalidate(keys=["courses:list"])  # recorded, not raised
    assert list(PendingCatalogueInvalidation.objects.values_list("keys", flat=True)) == [["courses:list"]]


@pytest.mark.django_db
def test_saving_a_lab_drops_its_entries_after_commit(redis, django_capture_on_commit_callbacks):
    # given cached entries for a course and its lab
    lab = LabFactory()
    for key in ["courses:list", f"course:{lab.course.slug}", f"lab:{lab.pk}", "course:unrelated"]:
        redis.set(key, "{}")
    # when the lab is saved, before commit the entries remain
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        lab.title = "New"
        lab.save()
    assert redis.get(f"lab:{lab.pk}") is not None
    for callback in callbacks:
        callback()
    # then after commit they are gone, and the unrelated one stays
    assert redis.get(f"lab:{lab.pk}") is None
    assert redis.get(f"course:{lab.course.slug}") is None
    assert redis.get("courses:list") is None
    assert redis.get("course:unrelated") is not None


@pytest.mark.django_db
def test_renaming_a_course_slug_drops_the_old_entry(redis, django_capture_on_commit_callbacks):
    course = CourseFactory(slug="old-slug")
    redis.set("course:old-slug", "{}")
    with django_capture_on_commit_callbacks(execute=True):
        course.slug = "new-slug"
        course.save()
    assert redis.get("course:old-slug") is None


@pytest.mark.django_db
def test_moving_a_lab_to_another_course_drops_both_courses(redis, django_capture_on_commit_callbacks):
    lab = LabFactory(course=CourseFactory(slug="from"))
    CourseFactory(slug="to")
    redis.set("course:from", "{}")
    redis.set("course:to", "{}")
    with django_capture_on_commit_callbacks(execute=True):
        lab.course = type(lab.course).objects.get(slug="to")
        lab.save()
    assert redis.get("course:from") is None
    assert redis.get("course:to") is None


@pytest.mark.django_db
def test_deleting_a_course_drops_the_entries_of_its_labs(redis, django_capture_on_commit_callbacks):
    lab = LabFactory()
    course = lab.course
    redis.set(f"lab:{lab.pk}", "{}")
    redis.set(f"course:{course.slug}", "{}")
    with django_capture_on_commit_callbacks(execute=True):
        course.delete()
    assert redis.get(f"lab:{lab.pk}") is None
    assert redis.get(f"course:{course.slug}") is None


@pytest.mark.django_db(transaction=True)
def test_an_edit_made_while_redis_was_down_shows_when_redis_returns_with_its_old_entries(
    private_redis, user, staff_user
):
    caches = copy.deepcopy(django_settings.CACHES)
    caches["default"]["LOCATION"] = private_redis.url
    with override_settings(CACHES=caches, REDIS_RETRY_INTERVAL=0):
        # given a lab and its course a learner has read, so both are cached in this Redis
        lab = LabFactory(title="Old title")
        lab_url = reverse("lab-detail", args=[lab.pk])
        course_url = reverse("course-detail", args=[lab.course.slug])
        learner = APIClient()
        learner.force_login(user)
        staff = Client()
        staff.force_login(staff_user)
        assert learner.get(lab_url).json()["title"] == "Old title"
        assert learner.get(course_url).json()["labs"][0]["title"] == "Old title"
        private = Redis.from_url(private_redis.url)
        # when Redis dies keeping a snapshot, staff rename the lab meanwhile, and Redis
        # returns with the snapshot
        private_redis.stop_keeping_data()
        edit = staff.post(
            reverse("admin:labs_lab_change", args=[lab.pk]), lab_admin_form(lab, title="New title")
        )
        private_redis.start()
        assert b"Old title" in private.get(f"lab:{lab.pk}")
        # then the learner's next requests show the edit, and nothing is left to repair
        assert edit.status_code == 302
        assert learner.get(lab_url).json()["title"] == "New title"
        assert learner.get(course_url).json()["labs"][0]["title"] == "New title"
        assert b"New title" in private.get(f"lab:{lab.pk}")
        assert not PendingCatalogueInvalidation.objects.exists()
        private.close()


@pytest.mark.django_db
def test_the_beat_task_drops_what_failed_for_a_process_that_never_saw_the_outage(redis, settings):
    # given cached entries, and an invalidation that failed in another process while
    # Redis was unreachable from there (this process never saw an outage)
    for key in ["courses:list", "lab:1", "course:unrelated"]:
        redis.set(key, "{}")
    with override_settings(CACHES=dead_redis_caches()):
        cache.catalogue_invalidate(keys=["lab:1", "courses:list"])
    redis_client.incident.reset()
    assert redis.get("lab:1") is not None
    # when the beat task runs
    applied = tasks.catalogue_repair()
    # then the recorded entries are gone, the others stay, and the record is done with
    assert applied == 1
    assert redis.get("lab:1") is None
    assert redis.get("courses:list") is None
    assert redis.get("course:unrelated") is not None
    assert not PendingCatalogueInvalidation.objects.exists()


@pytest.mark.django_db
def test_a_repair_while_redis_is_still_down_keeps_the_record(settings):
    PendingCatalogueInvalidation.objects.create(keys=["lab:1"])
    settings.CACHES = dead_redis_caches()
    assert tasks.catalogue_repair() == 0
    assert PendingCatalogueInvalidation.objects.count() == 1
