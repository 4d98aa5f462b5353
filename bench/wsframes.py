"""Just enough RFC 6455 for the benchmark tools: upgrade helpers, a frame codec and
the buffered non-blocking send both epoll loops use.

The load generator and the fast fake upstream must cost far less per message
than the gateway they measure, so they skip general-purpose WebSocket stacks:
peers here never fragment (rtgate and ``websockets`` send whole messages), so
a frame is parsed with a few slices and unmasked by ``websockets``' C
``apply_mask``. Anything unexpected (a fragment, a reserved bit) raises, so
a benchmark never silently measures a broken exchange.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import ssl
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships in the wheels
    from websockets.utils import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class ProtocolError(Exception):
    """The peer sent something these minimal codecs do not handle."""


def accept_for(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def new_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def encode(payload: bytes, opcode: int = TEXT, mask: bytes | None = None) -> bytes:
    """One final frame; ``mask`` (4 bytes) for client-to-server frames."""
    n = len(payload)
    first = 0x80 | opcode
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask:
        return head + mask + apply_mask(payload, mask)
    return head + payload


def close_payload(code: int = 1000, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class FrameReader:
    """Incremental parser: ``feed(bytes)`` returns the complete ``(opcode, payload)`` frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            first = buf[pos]
            second = buf[pos + 1]
            if first & 0x70 or not first & 0x80:
                raise ProtocolError(f"fragmented or extended frame (0x{first:02x})")
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if second & 0x80:
                head += 4
            end = pos + head + length
            if end > size:
                break
            payload = buf[pos + head : end]
            if second & 0x80:
                payload = apply_mask(payload, buf[pos + head - 4 : pos + head])
            out.append((first & 0x0F, payload))
            pos = end
        self._buf = buf[pos:] if pos < size else b""
        return out

    def pending(self) -> int:
        return len(self._buf)


def parse_head(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """Request line (or status line) and lower-cased headers of an HTTP/1.1 head."""
    lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def send_buffered(ep: select.epoll, sock: socket.socket, pending: bytes, data: bytes) -> bytes:
    """Send ``pending + data`` as far as the socket takes it now; return what is left.

    The socket's epoll interest gains ``EPOLLOUT`` when a backlog appears and loses
    it when the backlog clears, so the loop wakes for writes only while one waits.
    Errors other than a full buffer (a reset, a broken pipe) are the caller's.
    """
    buf = pending + data if pending else data
    if not buf:
        return b""
    try:
        sent = sock.send(buf)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        sent = 0  # a TLS socket retries with the same bytes first, as OpenSSL requires
    rest = buf[sent:]
    if rest and not pending:
        ep.modify(sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
    elif not rest and pending:
        ep.modify(sock.fileno(), select.EPOLLIN)
    return rest
