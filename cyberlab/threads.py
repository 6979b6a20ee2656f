"""Django code called from the ASGI edges (the event streams, the gateway)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import close_old_connections


def in_django(func):
    """`func` as a coroutine run in a worker thread, with that thread's stale database
    connections closed before and after, as Django does around a request (a connection is
    kept between calls within CONN_MAX_AGE)."""

    def call(*args, **kwargs):
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=False)
