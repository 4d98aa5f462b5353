"""One WebSocket endpoint: the ``websockets`` sans-IO protocol driven over a trio stream.

This is the data plane's hot path. ``receive`` does one socket read, turns it
into *every* complete message it holds (batching: no task switch per message)
and ``send`` serialises a batch and writes it with one ``send_all``. Plain
data frames are decoded and text frames encoded by :mod:`rtgate.net.fastframes`;
RFC 6455 mechanics beyond that (control frames, fragments, close handshake,
size limit, protocol errors) are the library's. This module drives the socket
and flushes the library's automatic replies. Plain TCP (``_RawSocket``) and
TLS (:class:`rtgate.net.tls.TlsSocketStream`) take a fast path: readiness
waits from trio, the bytes moved by ``os.read``/``os.write`` or by OpenSSL.

A connection reading a client keeps the time its current unfinished message
started (``unfinished_since``) and reports what that message holds to the
gateway's buffer budget; its owner is told when one starts and when the budget
evicts it (:meth:`WsConnection.watch_unfinished`).

Two tasks may use one connection (one reads, both write), so writes go through
a FIFO lock; reads must come from one task at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence

import trio
from websockets.frames import Close, Frame
from websockets.protocol import CLIENT, CLOSED, OPEN, Protocol

from rtgate.net import readable_now
from rtgate.net.budget import BufferBudget
from rtgate.net.fastframes import MessageReader, encode_text, library_idle
from rtgate.net.tls import TlsSocketStream
from rtgate.wire import Binary
from rtgate.wire import Frame as Message

# 64 KiB: a read buffer past glibc's mmap threshold (128 KiB) costs an mmap/munmap
# pair per read, which tripled the cost of reading one 1.4 KB audio frame.
READ_SIZE = 64 * 1024
UNSENDABLE_CLOSE_CODES = frozenset({1005, 1006, 1015})
"""Codes that only describe a close and must never travel in a close frame (RFC 6455 7.4.1)."""

_QUIET = logging.getLogger("rtgate.wire")
_QUIET.setLevel(logging.WARNING)  # websockets logs every connection at INFO


class ConnectionClosed(Exception):
    """The WebSocket is over: the peer closed, broke, or violated the protocol.

    ``code``/``reason`` are what the peer sent (or what rtgate sent when it
    failed the connection: 1002, 1007, 1009); ``by_peer`` says who ended it.
    """

    def __init__(self, code: int, reason: str, *, by_peer: bool) -> None:
        super().__init__(f"websocket closed ({code}) {reason}".strip())
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class WsConnection:
    """A WebSocket over a trio stream, after the opening handshake."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        *,
        write_timeout: float = 20.0,
        early_events: Sequence[Frame] = (),
        budget: BufferBudget | None = None,
    ) -> None:
        self.stream = stream
        self._raw: _RawSocket | TlsSocketStream | None = None
        if type(stream) is trio.SocketStream:
            self._raw = _RawSocket(stream.socket)
        elif type(stream) is TlsSocketStream:
            self._raw = stream  # OpenSSL moves the bytes; the same fast path
        # Frames the peer sent in the same read as its handshake (already parsed).
        self._early_events: list[Frame] = [*early_events, *protocol.events_received()]  # type: ignore[list-item]
        self.protocol = protocol
        _forget_handshake(protocol)
        self._reader = MessageReader(protocol, budget=budget)
        self.unfinished_since: float | None = None
        """When the first bytes of the message not yet complete arrived (None: none is)."""
        self._on_unfinished: Callable[[float], None] | None = None
        self._fast_send = not protocol.extensions
        self._mask = protocol.side is CLIENT
        self.write_timeout = write_timeout
        self._send_lock = trio.StrictFIFOLock()
        self.last_received = trio.current_time()
        self.bytes_received = 0
        self._eof_sent = False

    # -- reading ---------------------------------------------------------------

    async def receive(self) -> list[Message]:
        """Every complete message of the next read(s); raises :class:`ConnectionClosed`."""
        protocol = self.protocol
        reader = self._reader
        messages: list[Message] = []
        if self._early_events:
            messages = reader.assemble(self._early_events)
            self._early_events = []
            reader.account()
        while True:
            if protocol.writes:
                await self._flush()  # pongs, close echo, failure close
            if messages:
                return messages
            if protocol.state is not OPEN or protocol.parser_exc is not None:
                self._raise_if_closed()
            try:
                data = await (self._raw or self.stream).receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            now = self.last_received = trio.current_time()
            if data:
                self.bytes_received += len(data)
                messages = reader.feed(data if type(data) is bytes else bytes(data))
            else:
                messages = reader.feed_eof()
            if reader.held:
                if messages or self.unfinished_since is None:
                    self._unfinished_started(now)
            elif self.unfinished_since is not None:
                self.unfinished_since = None

    def _unfinished_started(self, now: float) -> None:
        """A message began that this read did not complete (a message completed in the same
        read means the unfinished one began in it)."""
        first = self.unfinished_since is None
        self.unfinished_since = now
        if first and self._on_unfinished is not None:
            self._on_unfinished(now)

    def watch_unfinished(
        self, started: Callable[[float], None], evicted: Callable[[], None]
    ) -> None:
        """Call ``started(now)`` when an unfinished message begins and ``evicted()`` when the
        gateway's buffer budget drops this connection's message (both from the task that
        reads, or from another session's reader for ``evicted``)."""
        self._on_unfinished = started
        self._reader.on_evicted = evicted

    def drop_unfinished(self) -> None:
        """Free the unfinished message now and ignore further input: the connection is
        being closed for it, and its close frame cannot come before the message's end."""
        self._reader.discard()
        self.unfinished_since = None

    def input_waiting(self) -> bool | None:
        """Bytes (or an EOF) the peer sent that no receive has read yet; None when the
        stream is not one of the fast paths' sockets, or is closed."""
        raw = self._raw
        return raw.input_waiting() if raw is not None else None

    def _raise_if_closed(self) -> None:
        protocol = self.protocol
        if protocol.state is OPEN and protocol.parser_exc is None:
            return
        if protocol.close_rcvd is not None and (
            protocol.close_sent is None or protocol.close_rcvd_then_sent
        ):
            close: Close = protocol.close_rcvd
            raise ConnectionClosed(close.code, close.reason, by_peer=True)
        if protocol.close_sent is not None:
            sent: Close = protocol.close_sent
            raise ConnectionClosed(sent.code, sent.reason, by_peer=False)
        if protocol.state is CLOSED or protocol.parser_exc is not None:
            raise ConnectionClosed(1006, "connection lost", by_peer=True)

    # -- writing ---------------------------------------------------------------

    async def send(self, messages: Sequence[Message]) -> None:
        """Queue every message and write them with one ``send_all``."""
        protocol = self.protocol
        if protocol.state is not OPEN:
            self._raise_if_closed()
            raise ConnectionClosed(1006, "connection lost", by_peer=True)
        fast = self._fast_send and not protocol.expect_continuation_frame
        writes = protocol.writes
        mask = self._mask
        if fast and len(messages) == 1 and not writes and self._raw is not None:
            message = messages[0]
            if type(message) is bytes and not self._send_lock.locked():
                # The common batch (one event): its frame goes straight to the socket,
                # without the library's write queue.
                await self._write_now(self._raw, encode_text(message, mask=mask))
                return
        for message in messages:
            if type(message) is bytes:
                if fast:
                    writes.append(encode_text(message, mask=mask))
                else:
                    protocol.send_text(message)
            else:
                assert isinstance(message, Binary)
                protocol.send_binary(message.data)
        await self._flush()

    async def ping(self, payload: bytes = b"") -> None:
        if self.protocol.state is OPEN:
            self.protocol.send_ping(payload)
            await self._flush()

    def pending_bytes(self) -> int:
        return sum(len(chunk) for chunk in self.protocol.writes)

    async def _flush(self) -> None:
        raw = self._raw
        if raw is not None and not self._send_lock.locked():
            # Fast path (plain TCP): one non-blocking write, which the kernel takes
            # whole almost always; no lock round trip, no timer, no task switch.
            chunks = self.protocol.data_to_send()
            if chunks:
                await self._write_now(raw, b"".join(chunks), chunks[-1] == b"")
            return
        async with self._send_lock:
            chunks = self.protocol.data_to_send()
            if not chunks:
                return
            await self._write(self.stream.send_all, b"".join(chunks), chunks[-1] == b"")

    async def _write_now(
        self, raw: _RawSocket | TlsSocketStream, payload: bytes, eof: bool = False
    ) -> None:
        """One non-blocking write, which the kernel takes whole almost always; only a
        remainder (or a half-close) waits, under the send lock. The lock must be free."""
        try:
            sent = raw.try_send(payload) if payload else 0
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(1006, "connection lost", by_peer=True) from None
        if sent == len(payload) and not eof:
            return
        self._send_lock.acquire_nowait()  # free (checked by the caller, no await since)
        try:
            await self._write(raw.send_all, memoryview(payload)[sent:], eof)
        finally:
            self._send_lock.release()

    async def _write(
        self,
        send_all: Callable[[bytes | memoryview], Awaitable[None]],
        payload: bytes | memoryview,
        eof: bool,
    ) -> None:
        """Write ``payload`` within the write timeout (a peer that stops reading gets 1011),
        then half-close if the protocol asked for it."""
        try:
            if payload:
                with trio.fail_after(self.write_timeout):
                    await send_all(payload)
            if eof and not self._eof_sent:
                self._eof_sent = True
                await self._send_eof()
        except trio.TooSlowError:
            raise ConnectionClosed(1011, "peer is not reading", by_peer=False) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(1006, "connection lost", by_peer=True) from None

    async def _send_eof(self) -> None:
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # -- closing ---------------------------------------------------------------

    async def abandon(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame if open and close the socket, never reading (safe while another
        task reads: that reader then sees the connection end). Never raises."""
        try:
            with trio.move_on_after(1.0):
                await self._send_close(code, reason)
        except ConnectionClosed:
            pass
        finally:
            self._reader.discard()
            await trio.aclose_forcefully(self.stream)

    async def _send_close(self, code: int, reason: str) -> None:
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            await self._flush()

    async def close(self, code: int = 1000, reason: str = "", *, grace: float = 1.0) -> None:
        """Start (or finish) the closing handshake, wait ``grace`` for the peer, close the socket.

        Must not run while another task reads this connection. Never raises.
        """
        self._reader.release()  # the library reads the closing handshake itself
        try:
            if code in UNSENDABLE_CLOSE_CODES:
                return  # the peer is gone (or unreachable): no closing handshake to hold
            with trio.move_on_after(grace):
                await self._send_close(code, reason)
                while self.protocol.state is not CLOSED and not self._reader.discarding:
                    if self.protocol.writes:
                        await self._flush()
                    data = await self.stream.receive_some(READ_SIZE)
                    if data:
                        self.protocol.receive_data(data)
                    else:
                        self.protocol.receive_eof()
                        if self.protocol.writes:
                            await self._flush()
                        break
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            # Frees any unfinished message now: the session's objects form reference
            # cycles, so without this its buffers would live until a full collection.
            self._reader.discard()
            await trio.aclose_forcefully(self.stream)


def _forget_handshake(protocol: Protocol) -> None:
    """Let the parsed handshake go: the library's parser generator keeps the request (or
    response) and its headers in its frame for as long as the connection lives, a few
    KiB per idle session. Once the handshake is done and the parser waits for the first
    byte of a frame, a fresh frame parser (what the handshake parser continues into) is
    equivalent and holds nothing."""
    if library_idle(protocol):
        protocol.parser = Protocol.parse(protocol)
        next(protocol.parser)


class _RawSocket:
    """A plain TCP socket read and written with ``os.read``/``os.write`` (hot path).

    trio's ``SocketStream`` pays, per call, a conflict detector, an
    error-translating context manager, a failed ``recv`` before every wait and a
    rescheduling checkpoint after every successful ``send``; at 100+ messages per
    session per second that was a large share of the relay's CPU. Kept: each
    receive waits on the socket first (a checkpoint, so a busy peer cannot starve
    other tasks), errors become ``BrokenResourceError``/``ClosedResourceError``,
    and closing the socket from another task wakes a waiting reader.
    """

    __slots__ = ("sock",)

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    async def receive_some(self, max_bytes: int) -> bytes:
        sock = self.sock
        while True:
            fd = sock.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("socket was closed")
            await trio.lowlevel.wait_readable(fd)
            fd = sock.fileno()  # closed by another task meanwhile?
            if fd < 0:
                raise trio.ClosedResourceError("socket was closed")
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc

    def input_waiting(self) -> bool | None:
        fd = self.sock.fileno()
        return None if fd < 0 else readable_now(fd)

    def try_send(self, data: bytes | memoryview) -> int:
        """Bytes the kernel took now (0 if its buffer is full); never waits."""
        fd = self.sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("socket was closed")
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc

    async def send_all(self, data: bytes | memoryview) -> None:
        while data:
            if self.sock.fileno() < 0:
                raise trio.ClosedResourceError("socket was closed")
            await trio.lowlevel.wait_writable(self.sock)
            data = data[self.try_send(data) :]
