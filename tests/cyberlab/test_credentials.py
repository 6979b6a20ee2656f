"""The credential cache: who a token or session signs in, kept in process while Postgres
reports no change, and never trusted past a change another connection committed."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from cyberlab.accounts.services import token_for

pytestmark = pytest.mark.django_db(transaction=True)


def other_node():
    """A connection of its own, as another web node's would be: what it commits is
    committed, and reaches this process only through Postgres."""
    return psycopg.connect(**connections["default"].get_connection_params(), autocommit=True)


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user=user)}")
    return client


def served_from_memory(client: APIClient) -> None:
    """Waits until a request of `client` costs no query: the cache holds its credential."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/v1/auth/me/").status_code == 200
        if not queries.captured_queries:
            return
        time.sleep(0.05)
    pytest.fail("the credential cache never served the token")


def test_a_token_is_served_from_memory_once_checked(user):
    # given a token checked once in Postgres
    client = token_client(user)
    # then further requests are answered without a query
    served_from_memory(client)


def test_a_token_deleted_by_another_node_is_refused_on_the_next_request(user):
    # given a token served from memory
    client = token_client(user)
    served_from_memory(client)
    # when another node deletes it and commits
    with other_node() as conn:
        conn.execute("DELETE FROM authtoken_token WHERE user_id = %s", [user.pk])
    # then the very next request is refused
    assert client.get("/api/v1/auth/me/").json()["detail"] == "Invalid token."


def test_a_user_deactivated_by_another_node_is_refused_on_the_next_request(user):
    client = token_client(user)
    served_from_memory(client)
    with other_node() as conn:
        conn.execute("UPDATE accounts_user SET is_active = false WHERE id = %s", [user.pk])
    assert client.get("/api/v1/auth/me/").json()["detail"] == "User inactive or deleted."


def test_a_session_revoked_by_another_node_is_signed_out_on_the_next_request(user):
    # given a signed-in browser session served from memory
    client = APIClient()
    client.force_login(user)
    served_from_memory(client)
    # when another node ends its record
    with other_node() as conn:
        conn.execute("UPDATE accounts_usersession SET ended_at = now() WHERE user_id = %s", [user.pk])
    # then the next request is no longer signed in
    assert client.get("/api/v1/auth/me/").status_code == 403


def test_a_sign_in_elsewhere_keeps_the_cache(user):
    # Moving last_login (every sign-in does) changes nothing a credential depends on.
    client = token_client(user)
    served_from_memory(client)
    with other_node() as conn:
        conn.execute("UPDATE accounts_user SET last_login = now() WHERE id = %s", [user.pk])
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/auth/me/").status_code == 200
    assert not queries.captured_queries


def test_a_stalled_channel_stops_the_cache_and_a_revocation_still_holds(user, settings):
    # given a token served from memory
    client = token_client(user)
    served_from_memory(client)
    # when the backend behind this process's channel stops answering (notifications too)
    with other_node() as conn:
        pid = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'cyberlab-credentials' "
            "AND datname = current_database()"
        ).fetchone()[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            # and another node deletes the token
            conn.execute("DELETE FROM authtoken_token WHERE user_id = %s", [user.pk])
            # then within the lease every request asks Postgres, and the token is refused
            deadline = time.monotonic() + settings.CREDENTIAL_CACHE_LEASE + 0.5
            while client.get("/api/v1/auth/me/").status_code == 200:
                assert time.monotonic() < deadline, "a revoked token was served past the lease"
                time.sleep(0.01)
            assert client.get("/api/v1/auth/me/").json()["detail"] == "Invalid token."
        finally:
            os.kill(pid, signal.SIGCONT)


def test_without_the_cache_every_request_checks_postgres(user, settings):
    settings.CREDENTIAL_CACHE_ENABLED = False
    client = token_client(user)
    client.get("/api/v1/auth/me/")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/auth/me/").status_code == 200
    assert len(queries.captured_queries) == 1
