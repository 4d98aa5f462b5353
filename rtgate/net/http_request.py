"""One HTTP/1.1 request to a provider (h11 on a trio stream), with classified failures.

Used where a session's setup needs a plain HTTP exchange with the provider rather than a
WebSocket: posting a WebRTC call's SDP offer to OpenAI's or Azure's calls endpoint and
hanging the call up. Each request opens its own connection (``Connection: close``): these
happen once per call, never per message, so there is nothing to pool.

Failures raise :class:`rtgate.errors.UpstreamConnectError` with the ``kind`` the pool learns
from (``refused``, ``dns``, ``tls``, ``timeout``, ``closed``); a non-2xx answer is returned,
not raised, so the caller decides what it means. Messages never carry a header value.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs
import h11
import trio

from rtgate.config.model import TlsSettings
from rtgate.errors import UpstreamConnectError
from rtgate.net.upstream_ws import open_stream

READ_SIZE = 64 * 1024
MAX_REPLY_BYTES = 1024 * 1024
"""An SDP answer is a few KiB; a reply larger than this is not one."""


@attrs.frozen
class HttpReply:
    status: int
    headers: Mapping[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


async def request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    tls: TlsSettings,
    timeout: float,
    max_reply_bytes: int = MAX_REPLY_BYTES,
) -> HttpReply:
    """Send one request to ``url`` (``http://`` or ``https://``) and read the whole reply
    within ``timeout``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        with trio.fail_after(timeout):
            stream = await open_stream(host, port, secure=secure, tls=tls)
            try:
                return await _exchange(
                    stream, method, target, parts.netloc, headers, body, max_reply_bytes
                )
            finally:
                await trio.aclose_forcefully(stream)
    except trio.TooSlowError:
        raise UpstreamConnectError(f"{method} to {host} timed out", kind="timeout") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
        raise UpstreamConnectError(
            f"{host} dropped the connection during the {method}: {type(exc).__name__}",
            kind="closed",
        ) from None


async def _exchange(
    stream: trio.abc.Stream,
    method: str,
    target: str,
    netloc: str,
    headers: Mapping[str, str],
    body: bytes,
    max_reply_bytes: int,
) -> HttpReply:
    conn = h11.Connection(h11.CLIENT)
    sent = [("Host", netloc), ("Content-Length", str(len(body))), ("Connection", "close")]
    sent += [(name, value) for name, value in headers.items()]
    data = conn.send(h11.Request(method=method, target=target, headers=sent)) or b""
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
    status = 0
    reply_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))
        elif isinstance(event, h11.Response):
            status = event.status_code
            reply_headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_reply_bytes:
                raise UpstreamConnectError(
                    f"the reply to the {method} is larger than {max_reply_bytes} bytes",
                    kind="rejected",
                )
            chunks.append(bytes(event.data))
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            if status == 0:
                raise trio.BrokenResourceError("closed before a response")
            return HttpReply(status, reply_headers, b"".join(chunks))
