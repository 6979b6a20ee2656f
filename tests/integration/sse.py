"""A server-sent events client for the tests: reads a stream in a thread, event by event."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Event:
    id: str | None
    event: str
    data: object


class EventStream:
    """`GET` a stream with these headers; `next()` returns its events as they arrive."""

    def __init__(self, base: str, path: str = "/api/v1/events/", *, headers: dict | None = None) -> None:
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.connection.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.sock = self.connection.sock
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.events: queue.Queue = queue.Queue()
        self.comments = 0
        self.retry: int | None = None
        self.ended = threading.Event()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.response.read()
            self.ended.set()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            while True:
                raw = self.response.readline()
                if not raw:
                    break
                line = raw.decode().rstrip("\n")
                if not line:
                    if "event" in fields or "data" in fields:
                        data = fields.get("data", "")
                        self.events.put(
                            Event(
                                fields.get("id"),
                                fields.get("event", "message"),
                                json.loads(data) if data else None,
                            )
                        )
                    fields = {}
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "retry":
                        self.retry = int(value)
                    else:
                        fields[name] = value
        except (OSError, ValueError, AttributeError):
            pass  # the connection was closed under the reader (by `close()` or the server)
        finally:
            self.ended.set()

    def next(self, *, timeout: float = 30.0, skip: tuple[str, ...] = ()) -> Event:
        """The next event (skipping names in `skip`); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event within {timeout}s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                raise AssertionError(f"no event within {timeout}s") from None
            if event.event not in skip:
                return event

    def until(self, predicate, *, timeout: float = 30.0) -> Event:
        """The first event for which `predicate(event)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(timeout=max(0.01, deadline - time.monotonic()))
            if predicate(event):
                return event

    def drain(self) -> list[Event]:
        found = []
        while not self.events.empty():
            found.append(self.events.get_nowait())
        return found

    def close(self) -> None:
        """Hangs up, as a browser tab that is closed."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.ended.wait(timeout=5)
