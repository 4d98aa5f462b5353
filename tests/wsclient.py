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
