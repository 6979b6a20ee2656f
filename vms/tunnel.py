"""Opens a lab machine's TCP port on this computer, through the gateway.

    python -m vms.tunnel wss://NAME.labs.example.org/_tcp/22 2222:22 --token TOKEN
    ssh -p 2222 user@127.0.0.1

Listens on 127.0.0.1:LOCAL; each connection made there becomes one WebSocket to the URL
(binary frames carrying the raw byte stream, as `websocat --binary` speaks). The URL and
the token are the port's `url` and `token` in the machine's `connection`
(`GET /api/v1/labs/{id}/vm/`), which also gives this command ready to paste. Needs only
Python and the `websockets` package: this file imports nothing else of the platform.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def serve(
    url: str, local_port: int, token: str, *, host: str = "127.0.0.1", via: str | None = None
) -> asyncio.Server:
    """Listens on host:local_port; `via` ("host:port") connects there instead of the URL's
    host, which the request still names (a gateway without DNS for its names)."""
    address = {}
    if via:
        via_host, _, via_port = via.rpartition(":")
        address = {"host": via_host, "port": int(via_port)}

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=None,
                compression=None,
                **address,
            ) as websocket:

                async def upstream() -> None:
                    while data := await reader.read(65536):
                        await websocket.send(data)

                async def downstream() -> None:
                    async for message in websocket:
                        writer.write(message if isinstance(message, bytes) else message.encode())
                        await writer.drain()

                tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
        except InvalidStatus as error:
            print(f"The gateway refused the tunnel ({error.response.status_code}).", file=sys.stderr)
        except (OSError, ConnectionClosed) as error:
            print(f"The tunnel closed: {error}", file=sys.stderr)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(tunnel, host, local_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vms.tunnel", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the port's WebSocket URL (wss://.../_tcp/PORT)")
    parser.add_argument("ports", help="LOCAL:REMOTE, e.g. 2222:22 (REMOTE is the machine's port, for show)")
    parser.add_argument("--token", required=True, help="the port's token from the machine's connection")
    parser.add_argument("--via", help="HOST:PORT to connect to instead of the URL's host")
    args = parser.parse_args(argv)
    local = int(args.ports.split(":", 1)[0])

    async def run() -> None:
        server = await serve(args.url, local, args.token, via=args.via)
        print(f"Listening on 127.0.0.1:{local}; Ctrl-C stops.", file=sys.stderr)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
