"""The ASGI entry point (scripts/serve.sh): the event streams, then Django for the rest.

The streams are served by cyberlab.events.stream directly: a stream lives for hours and
must not hold a thread or a Django request. Everything else is Django's WSGI handler on
a fixed pool of WEB_THREADS threads per process (a2wsgi): the API's views are
synchronous, and Django's own ASGI handler would run each request in a thread of its own
with a database connection of its own, which measured slower and cannot keep
connections (CONN_MAX_AGE) between requests.
"""

import gc
import os

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cyberlab.settings")

django_application = WSGIMiddleware(get_wsgi_application(), workers=settings.WEB_THREADS)
gc.set_threshold(*settings.WEB_GC_THRESHOLDS)

from cyberlab.events import stream  # noqa: E402 - needs the apps loaded

STREAM_PATHS = frozenset({stream.PATH, stream.PUBLIC_PATH})


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] in STREAM_PATHS:
        await stream.application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_application(scope, receive, send)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stream.hub.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
