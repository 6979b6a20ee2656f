"""Publishing live events: after commit, to the right learners, into the replay window."""

import json

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from cyberlab.events import services
from cyberlab.events.models import Announcement
from labs.models import Enrollment
from tests.factories import UserFactory
from tests.labs.factories import CourseFactory


def replay(redis, key: str) -> list[tuple[str, dict]]:
    return [(f[b"event"].decode(), json.loads(f[b"data"])) for _, f in redis.xrange(key)]


@pytest.mark.django_db(transaction=True)
def test_an_event_is_published_only_once_its_transaction_commits(redis):
    # given a learner listening on the live channel
    user = UserFactory()
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(services.CHANNEL)
    key = services.user_stream_key(user_id=user.pk)
    # when an event is published inside a transaction
    with transaction.atomic():
        services.solved(user_id=user.pk, solve_id=1, points=10, lab_id=2, flag_id=3)
        # then nothing is out before the commit
        assert redis.xlen(key) == 0
    # and both the replay window and the live channel have it after
    assert replay(redis, key) == [("solve", {"solve_id": 1, "points": 10, "lab_id": 2, "flag_id": 3})]
    message = None
    for _ in range(20):  # the first read may be the subscription's confirmation
        message = message or pubsub.get_message(timeout=0.2)
    live = json.loads(message["data"])
    assert live["event"] == "solve"
    assert list(live["targets"]) == [key]
    pubsub.close()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_publishes_nothing(redis):
    user = UserFactory()

    @transaction.atomic
    def failing_solve():
        services.solved(user_id=user.pk, solve_id=1, points=10, lab_id=2, flag_id=3)
        raise RuntimeError("the solve failed")

    with pytest.raises(RuntimeError):
        failing_solve()
    assert redis.xlen(services.user_stream_key(user_id=user.pk)) == 0


@pytest.mark.django_db(transaction=True)
def test_a_course_announcement_reaches_its_enrolled_learners_only(redis):
    # given a course with one enrolled learner, and one learner outside it
    course = CourseFactory()
    enrolled, outsider = UserFactory(), UserFactory()
    Enrollment.objects.create(user=enrolled, course=course)
    # when staff announce to the course
    services.announcement_publish(
        announcement=Announcement(title="Lab 3 is out", body="Go *now*", course=course)
    )
    # then only the enrolled learner's stream has it, rendered, and nobody's broadcast
    events = replay(redis, services.user_stream_key(user_id=enrolled.pk))
    assert [name for name, _ in events] == ["announcement"]
    assert events[0][1]["body_html"] == "<p>Go <em>now</em></p>"
    assert events[0][1]["course_id"] == course.pk
    assert redis.xlen(services.user_stream_key(user_id=outsider.pk)) == 0
    assert redis.xlen(services.BROADCAST_STREAM) == 0
    assert Announcement.objects.get().published_at is not None


@pytest.mark.django_db(transaction=True)
def test_the_replay_window_is_capped(redis, settings):
    settings.EVENTS_REPLAY_MAXLEN = 10
    user = UserFactory()
    for number in range(300):
        services.solved(user_id=user.pk, solve_id=number, points=1, lab_id=None, flag_id=None)
    # approximate trimming: near the cap, never the whole history
    assert redis.xlen(services.user_stream_key(user_id=user.pk)) < 200


def test_the_stream_paths_served_by_a_wsgi_server_say_where_the_stream_is(learner_client):
    response = learner_client.get("/api/v1/events/")
    assert response.status_code == 503
    assert response.json()["code"] == "stream_unavailable"


@pytest.mark.django_db
def test_the_schema_documents_both_streams_as_event_streams():
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    for path in ("/api/v1/events/", "/api/v1/events/public/"):
        content = schema["paths"][path]["get"]["responses"]["200"]["content"]
        assert "text/event-stream" in content
    assert "first_blood" in schema["paths"]["/api/v1/events/"]["get"]["description"]


@pytest.mark.django_db(transaction=True)
def test_staff_announce_to_everyone_from_the_admin(admin_client, staff_user, redis):
    # when staff add an announcement with no course
    response = admin_client.post(
        "/admin/events/announcement/add/", {"title": "Maintenance at noon", "body": "Save your work."}
    )
    # then it is sent to everyone, recorded with its author, and cannot be edited
    assert response.status_code == 302
    (event,) = replay(redis, services.BROADCAST_STREAM)
    assert event[0] == "announcement"
    assert event[1]["title"] == "Maintenance at noon"
    announcement = Announcement.objects.get()
    assert announcement.created_by == staff_user
    page = admin_client.get(f"/admin/events/announcement/{announcement.pk}/change/")
    assert b'name="title"' not in page.content
