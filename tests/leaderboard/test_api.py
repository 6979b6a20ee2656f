"""The board endpoints' paging: one rule for every board, refused input is a 400 saying why."""

from __future__ import annotations

import pytest
import redis
from django.urls import reverse

from tests.factories import UserFactory
from tests.leaderboard.conftest import award, moment

pytestmark = pytest.mark.django_db

INT64_MAX = 2**63 - 1


def _board_paths(slug: str) -> list[str]:
    return [
        reverse("leaderboard"),
        reverse("leaderboard-course", args=[slug]),
        reverse("leaderboard-weekly"),
    ]


@pytest.mark.parametrize("board_index", [0, 1, 2], ids=["global", "course", "weekly"])
def test_an_offset_beyond_any_board_is_a_400_not_a_500(board, learner_client, user, course, board_index):
    # given a board with a learner on it
    award(user, points=10, course=course, at=moment())
    path = _board_paths(course.slug)[board_index]
    # when a page is asked for past what Redis can index
    response = learner_client.get(path, {"limit": 50, "offset": INT64_MAX - 1})
    # then the answer says which parameter is wrong, in the API's error shape
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"]
    assert list(body["errors"]) == ["offset"]
    assert "whole number from 0 to" in body["errors"]["offset"][0]


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"limit": "abc"}, "limit", "A whole number is required."),
        ({"limit": 0}, "limit", "of at least 1"),
        ({"limit": -1}, "limit", "of at least 1"),
        ({"offset": -1}, "offset", "from 0 to"),
        ({"limit": 5, "offset": "x"}, "offset", "A whole number is required."),
    ],
)
def test_a_bad_page_query_is_a_400_naming_the_field(board, learner_client, course, query, field, message):
    for path in _board_paths(course.slug):
        response = learner_client.get(path, query)
        assert response.status_code == 400, path
        body = response.json()
        assert set(body) == {"detail", "code", "errors"}
        assert body["code"] == "invalid"
        assert body["detail"]
        assert message in body["errors"][field][0]


def test_the_deepest_allowed_offset_is_an_empty_page(board, learner_client, user, settings):
    award(user, points=10, at=moment())
    response = learner_client.get(reverse("leaderboard"), {"limit": 50, "offset": settings.API_MAX_OFFSET})
    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert response.json()["results"] == []


def test_a_limit_above_the_maximum_is_capped(board, learner_client, settings):
    # given more learners than the largest page
    settings.API_MAX_PAGE_SIZE = 3
    for index in range(5):
        award(UserFactory(), points=100 - index, at=moment())
    # when more are asked for, then the page is the largest allowed, and says so in its links
    page = learner_client.get(reverse("leaderboard"), {"limit": 100}).json()
    assert [row["rank"] for row in page["results"]] == [1, 2, 3]
    assert page["next"].endswith("?limit=3&offset=3")


def test_the_schema_documents_the_envelope_and_every_answer_of_each_board(api_client, course):
    # given what a signed-out visitor is answered (the session authenticator asks for no
    # credentials, so DRF says 403 rather than 401)
    signed_out = str(api_client.get(reverse("leaderboard")).status_code)
    # when the schema is read
    schema = api_client.get(reverse("schema"), {"format": "json"}).json()
    # then each board documents its page in the API's envelope and every error it answers
    paths = schema["paths"]
    for path, codes in [
        ("/api/v1/leaderboard/", {"200", "400", signed_out, "429"}),
        ("/api/v1/leaderboard/courses/{slug}/", {"200", "400", signed_out, "404", "429"}),
        ("/api/v1/leaderboard/weekly/", {"200", "400", signed_out, "429"}),
        ("/api/v1/leaderboard/me/", {"200", signed_out, "429"}),
    ]:
        operation = paths[path]["get"]
        assert set(operation["responses"]) == codes, path
        for code in codes - {"200"}:
            error = _resolve(schema, operation["responses"][code]["content"]["application/json"]["schema"])
            assert {"detail", "code"} <= set(error["properties"]), (path, code)
        if path.endswith("me/"):
            continue
        assert {parameter["name"] for parameter in operation["parameters"]} >= {"limit", "offset"}
        envelope = _resolve(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
        assert set(envelope["properties"]) >= {"count", "next", "previous", "results"}, path
        standing = _resolve(schema, envelope["properties"]["results"]["items"])
        assert set(standing["properties"]) == {"rank", "user_id", "display_name", "points", "last_scored_at"}
    weekly = paths["/api/v1/leaderboard/weekly/"]["get"]["responses"]["200"]
    assert "since" in _resolve(schema, weekly["content"]["application/json"]["schema"])["properties"]


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


@pytest.fixture
def leaderboard_round_trips(monkeypatch):
    """The round trips to Redis that name a leaderboard key, as they are sent."""
    sent: list[bytes] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        packed = b"".join(command) if isinstance(command, list | tuple) else command
        if b"leaderboard:" in packed:
            sent.append(packed)
        return send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


@pytest.mark.parametrize(
    ("name", "params"),
    [("leaderboard", {"limit": 10}), ("leaderboard-me", {}), ("leaderboard", {})],
    ids=["top-10", "my rank", "full standings"],
)
def test_a_hot_read_is_one_round_trip_to_the_board_at_most(
    board, learner_client, user, leaderboard_round_trips, name, params, settings
):
    # given a board, the full standings' snapshot already stored, and the read's script
    # already known to Redis (the first call of a script also loads it)
    for index in range(12):
        award(UserFactory(), points=100 - index, at=moment())
    award(user, points=50, at=moment())
    learner_client.get(reverse("leaderboard"))
    learner_client.get(reverse(name), params)
    leaderboard_round_trips.clear()
    # when read with the near cache off, then the answer took one round trip to the board
    settings.NEAR_CACHE_ENABLED = False
    response = learner_client.get(reverse(name), params)
    assert response.status_code == 200
    assert len(leaderboard_round_trips) == 1
    # and with it on, a page or my rank read again is answered from memory
    settings.NEAR_CACHE_ENABLED = True
    learner_client.get(reverse(name), params)
    leaderboard_round_trips.clear()
    again = learner_client.get(reverse(name), params)
    assert again.json() == response.json()
    full_standings = (name, params) == ("leaderboard", {})  # the snapshot is read from Redis
    assert len(leaderboard_round_trips) == (1 if full_standings else 0)


def test_a_solve_is_seen_on_the_next_read_of_a_page_held_in_memory(board, learner_client, user):
    # given top-10 and my rank read once (now in the near cache)
    for index in range(3):
        award(UserFactory(), points=100 - index, at=moment())
    award(user, points=50, at=moment())
    before = learner_client.get(reverse("leaderboard"), {"limit": 10}).json()
    learner_client.get(reverse("leaderboard-me"))
    # when I score enough to lead
    award(user, points=500, at=moment())
    # then the very next reads show it
    top = learner_client.get(reverse("leaderboard"), {"limit": 10}).json()
    assert before["results"][0]["user_id"] != user.pk
    assert top["results"][0]["user_id"] == user.pk
    assert learner_client.get(reverse("leaderboard-me")).json()["rank"] == 1
