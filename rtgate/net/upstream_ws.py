"""Dial a provider's WebSocket: TCP, optional TLS, the upgrade, classified failures.

Every failure becomes :class:`rtgate.errors.UpstreamConnectError` with the
``kind`` the pool acts on (``refused``, ``dns``, ``tls``, ``timeout``,
``rejected``/``auth``/``throttled`` from the HTTP status, ``closed``), and the
message never carries a header value (keys travel in headers only).
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame as WsFrame
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from rtgate.config.model import TlsSettings
from rtgate.errors import UpstreamClosed, UpstreamConnectError, UpstreamRejected
from rtgate.net.tls import TlsSocketStream
from rtgate.net.wsconn import _QUIET, READ_SIZE, ConnectionClosed, WsConnection
from rtgate.wire import Frame

_ssl_contexts: dict[TlsSettings, ssl.SSLContext] = {}


def ssl_context_for(tls: TlsSettings) -> ssl.SSLContext:
    """A cached client TLS context honouring ``verify`` and ``ca_bundle``."""
    ctx = _ssl_contexts.get(tls)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=tls.ca_bundle)
        if not tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _ssl_contexts[tls] = ctx
    return ctx


def websocket_url(base: str) -> str:
    """``http(s)://`` to ``ws(s)://``; ws URLs unchanged."""
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


async def open_stream(host: str, port: int, *, secure: bool, tls: TlsSettings) -> trio.abc.Stream:
    """TCP (+TLS) to host:port with classified errors. Caller bounds the time."""
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except socket.gaierror as exc:
        raise UpstreamConnectError(f"cannot resolve {host}", kind="dns") from exc
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, None):
            raise UpstreamConnectError(
                f"connection to {host}:{port} refused", kind="refused"
            ) from exc
        raise UpstreamConnectError(
            f"cannot connect to {host}:{port}: {exc.strerror}", kind="refused"
        ) from exc
    if not secure:
        return tcp
    try:
        return await TlsSocketStream.wrap(tcp, ssl_context_for(tls), server_hostname=host)
    except (ssl.SSLError, trio.BrokenResourceError) as exc:
        detail = getattr(exc, "reason", None) or type(exc).__name__
        raise UpstreamConnectError(
            f"TLS handshake with {host} failed: {detail}", kind="tls"
        ) from exc


class WsUpstream:
    """An upstream WebSocket session; implements :class:`rtgate.providers.base.UpstreamLink`."""

    def __init__(self, conn: WsConnection) -> None:
        self.conn = conn
        self.first_frames: list[Frame] = []

    async def receive(self) -> list[Frame]:
        try:
            return await self.conn.receive()
        except ConnectionClosed as exc:
            raise UpstreamClosed(exc.code, exc.reason) from None

    async def send(self, frames: Sequence[Frame]) -> None:
        try:
            await self.conn.send(frames)
        except ConnectionClosed as exc:
            raise UpstreamClosed(exc.code, exc.reason) from None

    async def ping(self) -> None:
        try:
            await self.conn.ping()
        except ConnectionClosed as exc:
            raise UpstreamClosed(exc.code, exc.reason) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.conn.close(code, reason)

    def pending_bytes(self) -> int:
        return self.conn.pending_bytes()

    async def abandon(self, code: int = 1000, reason: str = "") -> None:
        """Close without reading (another task may be reading): close frame, then the socket."""
        await self.conn.abandon(code, reason)

    async def read_first(self, timeout: float) -> None:
        """Wait for the first server event; a close or silence counts as a failed dial."""
        try:
            with trio.fail_after(timeout):
                self.first_frames = await self.receive()
        except UpstreamClosed as exc:
            await self.conn.close()
            kind = "auth" if "api_key" in exc.reason or exc.code in (3000, 1008) else "closed"
            raise UpstreamConnectError(
                f"upstream closed before its first event ({exc.code})", kind=kind
            ) from None


async def dial_websocket(
    url: str,
    headers: Mapping[str, str],
    subprotocols: Sequence[str] = (),
    *,
    tls: TlsSettings,
    max_message_bytes: int,
    timeout: float,
) -> WsUpstream:
    """Open a WebSocket to ``url`` (ws/wss/http/https) within ``timeout`` seconds."""
    url = websocket_url(url)
    try:
        with trio.fail_after(timeout):
            return await _dial(url, headers, subprotocols, tls, max_message_bytes)
    except trio.TooSlowError:
        host = urlsplit(url).hostname
        raise UpstreamConnectError(f"connecting to {host} timed out", kind="timeout") from None


async def _dial(
    url: str,
    headers: Mapping[str, str],
    subprotocols: Sequence[str],
    tls: TlsSettings,
    max_message_bytes: int,
) -> WsUpstream:
    uri = parse_uri(url)
    stream = await open_stream(uri.host, uri.port, secure=uri.secure, tls=tls)
    protocol = ClientProtocol(
        uri,
        subprotocols=[Subprotocol(s) for s in subprotocols] or None,
        max_size=max_message_bytes,
        logger=_QUIET,
    )
    request = protocol.connect()
    for name, value in headers.items():
        request.headers[name] = value
    protocol.send_request(request)
    try:
        await stream.send_all(b"".join(protocol.data_to_send()))
        response, early = await _read_response(stream, protocol)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        await trio.aclose_forcefully(stream)
        raise UpstreamConnectError(
            "upstream dropped the connection during the upgrade", kind="closed"
        ) from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    if response.status_code != 101 or protocol.handshake_exc is not None:
        await trio.aclose_forcefully(stream)
        body = (response.body or b"")[:2048].decode("utf-8", "replace")
        retry_after = _retry_after(response.headers)
        if response.status_code == 101:
            raise UpstreamConnectError("upstream upgrade response was invalid", kind="rejected")
        raise UpstreamRejected(response.status_code, body, retry_after=retry_after)
    return WsUpstream(WsConnection(stream, protocol, early_events=early))


async def _read_response(
    stream: trio.abc.Stream, protocol: ClientProtocol
) -> tuple[Response, list[WsFrame]]:
    """The upgrade response, and any frames that arrived in the same read (kept, not lost)."""
    while True:
        events = protocol.events_received()
        for index, event in enumerate(events):
            if isinstance(event, Response):
                return event, events[index + 1 :]  # type: ignore[return-value]
        if protocol.handshake_exc is not None and protocol.state is not protocol.state.CONNECTING:
            raise UpstreamConnectError("upstream sent an invalid upgrade response", kind="rejected")
        data = await stream.receive_some(READ_SIZE)
        if not data:
            protocol.receive_eof()
            for event in protocol.events_received():
                if isinstance(event, Response):
                    return event, []
            raise UpstreamConnectError("upstream closed during the upgrade", kind="closed")
        protocol.receive_data(data)


def _retry_after(headers: Headers) -> float | None:
    return retry_after_seconds(headers.get("Retry-After"))


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` of seconds (None: absent or not a number)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
