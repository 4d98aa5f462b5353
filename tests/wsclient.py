"""A minimal trio WebSocket client for tests (trio-websocket), plus JSON helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from trio_websocket import WebSocketConnection, open_websocket_url


@asynccontextmanager
async def connect(
    url: str, headers: dict[str, str] | None = None, subprotocols: list[str] | None = None
) -> AsyncIterator[WebSocketConnection]:
    extra = [(k, v) for k, v in (headers or {}).items()]
    async with open_websocket_url(
        url, extra_headers=extra, subprotocols=subprotocols or [], max_message_size=64 * 1024 * 1024
    ) as ws:
        yield ws


async def send_json(ws: WebSocketConnection, event: dict[str, Any]) -> None:
    await ws.send_message(orjson.dumps(event).decode())


async def recv_json(ws: WebSocketConnection, timeout: float = 5) -> dict[str, Any]:
    with trio.fail_after(timeout):
        message = await ws.get_message()
    event = orjson.loads(message)
    assert isinstance(event, dict)
    return event


async def recv_until(
    ws: WebSocketConnection, kind: str, timeout: float = 5
) -> list[dict[str, Any]]:
    """Every event up to and including the first of type ``kind``."""
    seen: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        while True:
            event = await recv_json(ws, timeout)
            seen.append(event)
            if event.get("type") == kind:
                return seen


async def raw_handshake(
    url: str, headers: dict[str, str] | None = None, subprotocols: list[str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send a WebSocket upgrade and return (status, headers, body) of the answer, then close.

    For rejection tests: it always closes its socket (trio-websocket's client leaks
    the socket when the server refuses the upgrade).
    """
    import base64
    import os
    from urllib.parse import urlsplit

    import h11

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request_headers = [
        ("Host", parts.netloc),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-WebSocket-Version", "13"),
        *(headers or {}).items(),
    ]
    if subprotocols:
        request_headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    async with stream:
        await stream.send_all(
            conn.send(h11.Request(method="GET", target=target, headers=request_headers))
        )
        body = b""
        status = 0
        response_headers: dict[str, str] = {}
        with trio.fail_after(10):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        break
                    continue
                if isinstance(event, h11.InformationalResponse | h11.Response):
                    status = event.status_code
                    response_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    if status == 101:
                        break
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    return status, response_headers, body
