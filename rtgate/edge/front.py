"""The public port: accept, read the request head, send each connection to its plane.

Realtime WebSocket upgrades go to the data plane (:meth:`Gateway.serve_realtime`).
Every other HTTP request is spliced, bytes both ways, to the control plane:
hypercorn serving rtgate's ASGI app on a private Unix socket. So the control
plane uses only hypercorn's public API (``bind = unix:...``), and the data
plane never pays for ASGI.

The head must arrive within ``handshake_timeout`` (slowloris) and fit in
``MAX_HEAD`` bytes.
"""

from __future__ import annotations

import logging
import ssl
from urllib.parse import urlsplit

import h11
import trio

from rtgate.net.tls import TlsSocketStream
from rtgate.session.gateway import REALTIME_PATHS, Gateway

log = logging.getLogger("rtgate.front")

MAX_HEAD = 32 * 1024
SPLICE_CHUNK = 64 * 1024


class Front:
    """Per-connection entry point for :func:`trio.serve_listeners`."""

    def __init__(
        self, gateway: Gateway, control_socket: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.gateway = gateway
        self.control_socket = control_socket
        self.tls = tls
        self.connections = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        try:
            await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            await trio.aclose_forcefully(stream)
        except Exception:
            # A bug in one connection must never take the listener (and every session) down.
            log.exception("connection handler failed")
            await trio.aclose_forcefully(stream)
        finally:
            self.connections -= 1

    async def _handle(self, stream: trio.abc.Stream) -> None:
        client_addr = _peer(stream)
        limits = self.gateway.config.server.limits
        with trio.move_on_after(limits.handshake_timeout) as scope:
            if self.tls is not None:
                # The listeners are TCP sockets: OpenSSL works the socket itself (net/tls.py).
                assert isinstance(stream, trio.SocketStream)
                stream = await TlsSocketStream.wrap(stream, self.tls, server_side=True)
            head = await _read_head(stream)
        if scope.cancelled_caught or head is None:
            if scope.cancelled_caught:
                self.gateway.counters.relay.limit("handshake_timeout")
            await trio.aclose_forcefully(stream)
            return
        target, is_upgrade = _route_facts(head)
        if target is None:
            await _reply_400(stream)
            return
        path = urlsplit(target).path.rstrip("/")
        if path in REALTIME_PATHS and is_upgrade:
            await self.gateway.serve_realtime(stream, head, client_addr)
        else:
            await self._splice_to_control(stream, head)

    async def _splice_to_control(self, stream: trio.abc.Stream, head: bytes) -> None:
        try:
            control = await trio.open_unix_socket(self.control_socket)
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        async with control:
            await control.send_all(head)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_copy, stream, control, nursery.cancel_scope)
                nursery.start_soon(_copy, control, stream, nursery.cancel_scope)
        await _close_politely(stream)


async def _copy(src: trio.abc.Stream, dst: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(SPLICE_CHUNK):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        pass
    finally:
        scope.cancel()


async def _close_politely(stream: trio.abc.Stream) -> None:
    """Close with a TLS close_notify where there is TLS (HTTPS clients read to EOF), bounded."""
    with trio.move_on_after(1) as scope:
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
    if scope.cancelled_caught:
        await trio.aclose_forcefully(stream)


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """Bytes up to and including the blank line ending the request head (plus any extra read)."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            return None
        data = await stream.receive_some(16 * 1024)
        if not data:
            return None
        buf += data
    return bytes(buf)


def _route_facts(head: bytes) -> tuple[str | None, bool]:
    """Request target and whether it asks for a WebSocket upgrade (h11 parses the head)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None, False
    if not isinstance(event, h11.Request):
        return None, False
    upgrade = any(
        name == b"upgrade" and value.lower() == b"websocket" for name, value in event.headers
    )
    return event.target.decode("latin-1"), upgrade


async def _reply_400(stream: trio.abc.Stream) -> None:
    body = b'{"error":{"message":"malformed HTTP request","type":"invalid_request_error"}}'
    head = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    try:
        await stream.send_all(head + body)
    finally:
        await trio.aclose_forcefully(stream)


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"
