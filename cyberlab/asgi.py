"""The ASGI entry point (scripts/serve.sh): the event streams, then Django for the rest.

The streams are served by cyberlab.events.stream directly: a stream lives for hours and
must not hold a thread or a Django request, which Django's own handler would give it.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cyberlab.settings")

django_application = get_asgi_application()

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
