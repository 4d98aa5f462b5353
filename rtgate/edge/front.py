"""The public port: accept, read the request head, send each connection to its plane.

Realtime WebSocket upgrades go to the data plane (:meth:`Gateway.serve_realtime`).
Every other HTTP request is spliced, bytes both ways, to the control plane:
hypercorn serving rtgate's ASGI app on a private Unix socket. So the control
plane uses only hypercorn's public API (``bind = unix:...``), and the data
plane never pays for ASGI.

The head must arrive within ``handshake_timeout`` (slowloris) and fit the
limits of :mod:`rtgate.edge.head` (header count, line length, total size),
checked here once for both planes; a head over a limit gets 431 (414 for the
request line) with a JSON body, a malformed one 400, each at once. Those are
the client's errors: one rate-limited INFO line each, never a traceback.

A front made with ``realtime=False`` is the ops listener's (``rtgate.ops_listen``):
it splices every request to the ops control socket and serves no sessions.
"""

from __future__ import annotations

import logging
import ssl
from http import HTTPStatus
from urllib.parse import urlsplit

import h11
import orjson
import trio

from rtgate.edge.head import HEAD_LIMITS, MAX_HEAD, Refusal, scan_head
from rtgate.edge.logs import RateLimitedLog
from rtgate.net.tls import TlsSocketStream
from rtgate.session.gateway import REALTIME_PATHS, Gateway, close_after_answer

log = logging.getLogger("rtgate.front")

SPLICE_CHUNK = 64 * 1024
CONTROL_RETRY_SECONDS = 1.0
"""How long a control request waits for the control socket to accept (a restart's gap)."""


class Front:
    """Per-connection entry point for :func:`trio.serve_listeners`."""

    def __init__(
        self,
        gateway: Gateway,
        control_socket: str,
        tls: ssl.SSLContext | None = None,
        *,
        realtime: bool = True,
    ) -> None:
        self.gateway = gateway
        self.control_socket = control_socket
        self.tls = tls
        self.realtime = realtime
        """False on the ops listener: no sessions there, only the control plane."""
        self.connections = 0
        self.refusals = RateLimitedLog(log)

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
        if isinstance(head, Refusal):
            await self._refuse(stream, head, client_addr)
            return
        request = _parse_request(head)
        if request is None:
            refusal = Refusal(400, "malformed", "malformed HTTP request")
            await self._refuse(stream, refusal, client_addr)
            return
        path = urlsplit(request.target.decode("latin-1")).path.rstrip("/")
        if path in REALTIME_PATHS and _asks_websocket(request):
            if not self.realtime:
                refusal = Refusal(404, "ops_listener", "realtime sessions use the public port")
                await self._refuse(stream, refusal, client_addr)
                return
            await self.gateway.serve_realtime(stream, head, client_addr)
        else:
            await self._splice_to_control(stream, _without_upgrade(head, request))

    async def _refuse(self, stream: trio.abc.Stream, refusal: Refusal, client_addr: str) -> None:
        """Answer a head no plane may see: one JSON error, one rate-limited log line, close."""
        rejected = self.gateway.counters.handshakes_rejected
        rejected[refusal.status] = rejected.get(refusal.status, 0) + 1
        self.refusals.log(
            trio.current_time(),
            logging.INFO,
            "refused request from %s: %d %s",
            client_addr,
            refusal.status,
            refusal.reason,
        )
        await _reply_error(stream, refusal.status, refusal.message)

    async def _splice_to_control(self, stream: trio.abc.Stream, head: bytes) -> None:
        control = await self._open_control()
        if control is None:
            await trio.aclose_forcefully(stream)
            return
        async with control:
            await control.send_all(head)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_copy, stream, control, nursery.cancel_scope)
                nursery.start_soon(_copy, control, stream, nursery.cancel_scope)
        await _close_politely(stream)

    async def _open_control(self) -> trio.SocketStream | None:
        """The control socket; while hypercorn is being started again (see
        :mod:`rtgate.edge.control_server`) it is briefly absent, so a refusal is retried."""
        with trio.move_on_after(CONTROL_RETRY_SECONDS):
            while True:
                try:
                    return await trio.open_unix_socket(self.control_socket)
                except OSError:
                    await trio.sleep(0.01)
        return None


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


async def _read_head(stream: trio.abc.Stream) -> bytes | Refusal | None:
    """The request head up to its blank line (plus any extra read), a refusal, or None at EOF."""
    buf = bytearray()
    while True:
        data = await stream.receive_some(16 * 1024)
        if not data:
            return None
        buf += data
        scanned = scan_head(buf, HEAD_LIMITS)
        if isinstance(scanned, Refusal):
            return scanned
        if scanned is not None:
            return bytes(buf)


def _parse_request(head: bytes) -> h11.Request | None:
    """The request head, parsed by h11 (None: malformed)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def _asks_websocket(request: h11.Request) -> bool:
    return any(
        name == b"upgrade" and value.lower() == b"websocket" for name, value in request.headers
    )


_UPGRADE_HEADERS = (b"upgrade", b"http2-settings")


def _without_upgrade(head: bytes, request: h11.Request) -> bytes:
    """The head for the control plane, which never switches protocols (RFC 9110 7.8 lets it ignore
    ``Upgrade``): hypercorn would otherwise take ``Upgrade: h2c`` and speak HTTP/2 past the front."""
    if not any(name in _UPGRADE_HEADERS for name, _ in request.headers):
        return head
    lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
    for name, value in request.headers:
        if name in _UPGRADE_HEADERS:
            continue
        if name == b"connection":
            tokens = [t.strip() for t in value.split(b",")]
            value = b", ".join(t for t in tokens if t and t.lower() not in _UPGRADE_HEADERS)
            if not value:
                continue
        lines.append(name + b": " + value)
    end = scan_head(head)
    assert isinstance(end, int)  # the front read this head whole
    return b"\r\n".join(lines) + b"\r\n\r\n" + head[end:]


async def _reply_error(stream: trio.abc.Stream, status: int, message: str) -> None:
    """One JSON error response, then close (the rest of the request is never read)."""
    error = {"message": message, "type": "invalid_request_error", "code": _CODES.get(status)}
    body = orjson.dumps({"error": error})
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with trio.move_on_after(5):
            await stream.send_all(head + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        pass
    await close_after_answer(stream)


_CODES = {
    400: "bad_request",
    404: "not_found",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
}


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"
