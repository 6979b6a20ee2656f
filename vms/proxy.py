"""The gateway: an ASGI reverse proxy from each machine's origin to the machine itself.

Served by scripts/gateway.sh (GATEWAY_BIND). Who may enter and where a request goes is
decided by `vms.gateway` (Django, in a worker thread); the bytes go through here, streamed
both ways with httpx, never buffered: any method, bodies, the lab's own cookies (kept on
its origin), redirects to the machine's own address rewritten to its origin. The
gateway's cookie is never passed on to the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cyberlab.settings")
django.setup()

import httpx  # noqa: E402
import websockets  # noqa: E402
import websockets.asyncio.client  # noqa: E402
from django.conf import settings  # noqa: E402

from cyberlab.threads import in_django  # noqa: E402
from vms import gateway  # noqa: E402

# Headers that belong to one hop, not to the request or the response (RFC 9110 7.6.1).
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}


redeem = in_django(gateway.redeem)
admit = in_django(gateway.admit)


class Gateway:
    def __init__(self) -> None:
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await websocket(scope, receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = _client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope, receive, send) -> None:
        headers = scope["headers"]
        host = _header(headers, b"host")
        try:
            if scope["path"] == gateway.ENTRY_PATH:
                token = _query_value(scope.get("query_string", b""), "token")
                cookie = await redeem(host=host, token=token)
                await _redirect_with_cookie(send, cookie)
                return
            target = await admit(host=host, cookie=_cookie(headers, gateway.COOKIE_NAME))
        except gateway.Refused as refusal:
            await _text(send, refusal.status, refusal.message)
            return
        try:
            with _slot(target):
                await self.forward(scope, receive, send, target)
        except gateway.Refused as refusal:
            await _text(send, refusal.status, refusal.message)

    async def forward(self, scope, receive, send, target: gateway.Target) -> None:
        if self.client is None:  # a server without lifespan events
            self.client = _client()
        upstream = f"http://{target.host}:{target.port}"
        url = upstream + _path_and_query(scope)
        has_body = any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])
        request = self.client.build_request(
            scope["method"],
            url,
            headers=_request_headers(scope, target),
            content=_body(receive) if has_body else None,
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError:
            await _text(send, 502, "The machine does not answer (yet): try again in a moment.")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _response_headers(response, upstream, target.origin),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def websocket(scope, receive, send) -> None:
    """A WebSocket to the machine's own (the lab's), or a tunnel to one of its TCP ports at
    `/_tcp/{port}`: binary frames carrying the raw byte stream. Access is checked again
    every VM_GATEWAY_RECHECK seconds, so a stop or a revoke closes it within that time."""
    if (await receive())["type"] != "websocket.connect":
        return
    headers = scope["headers"]
    host = _header(headers, b"host")
    path = scope["path"]
    tcp_port = int(path[len(gateway.TCP_PATH) :]) if _is_tunnel(path) else None
    passes = _bearer(scope) or _cookie(headers, gateway.COOKIE_NAME)
    try:
        target = await admit(host=host, cookie=passes, tcp_port=tcp_port)
    except gateway.Refused:
        await send({"type": "websocket.close", "code": 1008})
        return
    try:
        with _slot(target):
            await _websocket(scope, receive, send, host=host, passes=passes, tcp_port=tcp_port, target=target)
    except gateway.Refused:  # the machine's connections are all taken
        await send({"type": "websocket.close", "code": 1013})


async def _websocket(scope, receive, send, *, host, passes, tcp_port, target) -> None:
    try:
        if tcp_port is not None:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port), settings.VM_GATEWAY_CONNECT_TIMEOUT
            )
            upstream = None
        else:
            upstream = await _lab_websocket(scope, target)
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException):
        await send({"type": "websocket.close", "code": 1011})
        return
    accept = {"type": "websocket.accept"}
    if upstream is not None and upstream.subprotocol:
        accept["subprotocol"] = upstream.subprotocol
    await send(accept)

    traffic = [False]  # bytes went through since the last check (idle reaping)

    async def recheck() -> None:
        quiet = 0.0
        while True:
            await asyncio.sleep(settings.VM_GATEWAY_RECHECK)
            try:
                await admit(host=host, cookie=passes, tcp_port=tcp_port, active=traffic[0])
            except gateway.Refused:
                return
            quiet = 0.0 if traffic[0] else quiet + settings.VM_GATEWAY_RECHECK
            if settings.VM_GATEWAY_IDLE_CLOSE and quiet >= settings.VM_GATEWAY_IDLE_CLOSE:
                return  # nothing went through for that long: closed
            traffic[0] = False

    if upstream is None:
        pumps = [_client_to_tcp(receive, writer, traffic), _tcp_to_client(reader, send, traffic)]
    else:
        pumps = [_client_to_lab(receive, upstream, traffic), _lab_to_client(upstream, send, traffic)]
    tasks = [asyncio.ensure_future(pump) for pump in (*pumps, recheck())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        if upstream is None:
            writer.close()
        else:
            await upstream.close()
        with contextlib.suppress(RuntimeError, OSError):  # the client left first
            await send({"type": "websocket.close", "code": 1000})


_open: dict[str, int] = {}  # machine address -> connections open through this process


@contextlib.contextmanager
def _slot(target: gateway.Target):
    """One of the machine's VM_GATEWAY_MAX_CONNECTIONS (counted per gateway process)."""
    if _open.get(target.host, 0) >= settings.VM_GATEWAY_MAX_CONNECTIONS:
        raise gateway.Refused(503, "Too many connections to this machine are open; close some and retry.")
    _open[target.host] = _open.get(target.host, 0) + 1
    try:
        yield
    finally:
        _open[target.host] -= 1
        if not _open[target.host]:
            del _open[target.host]


def _is_tunnel(path: str) -> bool:
    return path.startswith(gateway.TCP_PATH) and path[len(gateway.TCP_PATH) :].isdigit()


def _bearer(scope) -> str | None:
    authorization = _header(scope["headers"], b"authorization")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return _query_value(scope.get("query_string", b""), "token") or None


async def _lab_websocket(scope, target: gateway.Target):
    # The handshake's own headers are the client library's to write.
    handshake = {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in _request_headers(scope, target)
        if name not in handshake
    ]
    return await websockets.asyncio.client.connect(
        f"ws://{target.host}:{target.port}{_path_and_query(scope)}",
        additional_headers=headers,
        subprotocols=scope.get("subprotocols") or None,
        open_timeout=settings.VM_GATEWAY_CONNECT_TIMEOUT,
        max_size=None,
        compression=None,
    )


async def _client_to_tcp(receive, writer, traffic: list[bool]) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        traffic[0] = True
        data = message.get("bytes") or (message.get("text") or "").encode()
        writer.write(data)
        await writer.drain()


async def _tcp_to_client(reader, send, traffic: list[bool]) -> None:
    while data := await reader.read(65536):
        traffic[0] = True
        await send({"type": "websocket.send", "bytes": data})


async def _client_to_lab(receive, upstream, traffic: list[bool]) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        traffic[0] = True
        await upstream.send(message["bytes"] if message.get("bytes") is not None else message.get("text", ""))


async def _lab_to_client(upstream, send, traffic: list[bool]) -> None:
    async for message in upstream:
        traffic[0] = True
        key = "bytes" if isinstance(message, bytes) else "text"
        await send({"type": "websocket.send", key: message})


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.VM_GATEWAY_CONNECT_TIMEOUT, read=settings.VM_GATEWAY_READ_TIMEOUT),
        limits=httpx.Limits(max_keepalive_connections=100),
        follow_redirects=False,
        trust_env=False,
    )


async def _body(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _path_and_query(scope) -> str:
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _request_headers(scope, target: gateway.Target) -> list[tuple[bytes, bytes]]:
    """The client's headers as the machine gets them: no hop-by-hop ones, no gateway cookie,
    and who asked (X-Forwarded-For, -Proto)."""
    forwarded = []
    for name, value in scope["headers"]:
        if name in HOP_BY_HOP:
            continue
        if name == b"cookie":
            value = _without_cookie(value, gateway.COOKIE_NAME)
            if not value:
                continue
        forwarded.append((name, value))
    client = scope.get("client") or ("", 0)
    forwarded.append((b"x-forwarded-for", client[0].encode()))
    forwarded.append((b"x-forwarded-proto", target.origin.split(":", 1)[0].encode()))
    return forwarded


def _response_headers(response: httpx.Response, upstream: str, public: str) -> list[tuple[bytes, bytes]]:
    headers = []
    for name, value in response.headers.raw:
        name = name.lower()
        if name in HOP_BY_HOP:
            continue
        if name == b"location" and value.decode("latin-1").startswith(upstream):
            value = (public + value.decode("latin-1")[len(upstream) :]).encode("latin-1")
        headers.append((name, value))
    return headers


def _header(headers, wanted: bytes) -> str:
    return next((value.decode("latin-1") for name, value in headers if name == wanted), "")


def _cookie(headers, name: str) -> str | None:
    for header, value in headers:
        if header == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                continue
            if name in jar:
                return jar[name].value
    return None


def _without_cookie(value: bytes, name: str) -> bytes:
    kept = [part for part in value.split(b";") if part.strip().split(b"=", 1)[0] != name.encode()]
    return b";".join(kept).strip()


def _query_value(query: bytes, name: str) -> str:
    values = parse_qs(query.decode("latin-1")).get(name)
    return values[0] if values else ""


async def _redirect_with_cookie(send, cookie: str) -> None:
    attributes = f"{gateway.COOKIE_NAME}={cookie}; Path=/; HttpOnly; SameSite=Lax"
    if settings.HTTPS:
        attributes += "; Secure"
    await send(
        {
            "type": "http.response.start",
            "status": 302,
            "headers": [
                (b"location", b"/"),
                (b"set-cookie", attributes.encode()),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _text(send, status: int, message: str) -> None:
    body = (message + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


application = Gateway()
