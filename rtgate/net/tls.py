"""TLS by the standard library's ``ssl.SSLSocket``, in non-blocking mode, under trio's readiness waits.

Every production upstream is ``wss://``, so every relayed message crosses TLS.
trio's ``SSLStream`` runs the record layer through memory BIOs from Python:
each read and write passes the encrypted bytes through several Python layers
and a conflict detector. Here OpenSSL reads and writes the socket itself (C),
and trio only waits for readiness, the way ``wsconn._RawSocket`` drives a
plain socket. The connection, certificate checks and ALPN are the same
``ssl.SSLContext``'s; only who moves the bytes changes.

Reads: OpenSSL's read-ahead is off (Python's default), so a record not yet
read stays in the kernel and epoll sees it; the only data epoll cannot see is
the rest of a record already decrypted (``pending()``), which is read without
waiting.

Renegotiation (TLS 1.2 only) can make a read need a write or a write need a
read. That is rare enough to be met by polling every millisecond, bounded by
the caller's timeouts, rather than by a second waiter on the same socket
(which trio refuses while the other direction's task waits there).
"""

from __future__ import annotations

import socket
import ssl

import trio

from rtgate.net import readable_now

# The same read size as the plain-socket path (see wsconn.READ_SIZE).
_READ_SIZE = 64 * 1024
_RENEGOTIATION_POLL = 0.001


class TlsSocketStream(trio.abc.Stream):
    """A TLS connection as a trio stream; also the relay's fast path (``try_send``)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.socket = sock

    @classmethod
    async def wrap(
        cls,
        tcp: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        server_side: bool = False,
    ) -> TlsSocketStream:
        """Take over ``tcp``'s socket and run the TLS handshake (the caller bounds the time).

        ``tcp`` is unusable afterwards. A failed handshake closes the socket and
        raises ``ssl.SSLError`` or ``trio.BrokenResourceError``.
        """
        raw = socket.socket(fileno=tcp.socket.detach())
        try:
            sock = context.wrap_socket(
                raw,
                server_side=server_side,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
            )
        except BaseException:
            raw.close()
            raise
        sock.setblocking(False)
        stream = cls(sock)
        try:
            await stream._handshake()
        except BaseException:
            stream._close_now()
            raise
        return stream

    async def _handshake(self) -> None:
        sock = self.socket
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(sock)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(sock)
            except ssl.SSLError:
                raise
            except OSError as exc:
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc

    def selected_alpn_protocol(self) -> str | None:
        return self.socket.selected_alpn_protocol()

    # -- receiving ---------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        sock = self.socket
        size = _READ_SIZE if max_bytes is None else max_bytes
        if sock.fileno() < 0:
            raise trio.ClosedResourceError("connection was closed")
        if sock.pending():
            await trio.lowlevel.checkpoint()  # decrypted bytes wait in OpenSSL
        else:
            await trio.lowlevel.wait_readable(sock)
        while True:
            if sock.fileno() < 0:
                raise trio.ClosedResourceError("connection was closed")
            try:
                return sock.recv(size)
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(sock)  # part of a record: wait for the rest
            except ssl.SSLWantWriteError:
                # OpenSSL must write before it can read on (renegotiation): retry the read
                # itself, which writes; waiting for readability could wait for a peer that
                # is waiting for us.
                await trio.sleep(_RENEGOTIATION_POLL)
            except (ssl.SSLError, OSError) as exc:
                raise trio.BrokenResourceError(f"TLS read failed: {exc}") from exc

    def input_waiting(self) -> bool | None:
        """Bytes (or an EOF) not yet read, in OpenSSL or in the socket; None once closed."""
        sock = self.socket
        if sock.fileno() < 0:
            return None
        return sock.pending() > 0 or readable_now(sock.fileno())

    # -- sending ---------------------------------------------------------------------

    def try_send(self, data: bytes | memoryview) -> int:
        """Bytes OpenSSL took now (0: try again later with the same bytes); never waits."""
        sock = self.socket
        if sock.fileno() < 0:
            raise trio.ClosedResourceError("connection was closed")
        try:
            return sock.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0
        except (ssl.SSLError, OSError) as exc:
            raise trio.BrokenResourceError(f"TLS write failed: {exc}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self.socket
        view = memoryview(data)
        if not view:
            await trio.lowlevel.checkpoint()
            return
        while view:
            if sock.fileno() < 0:
                raise trio.ClosedResourceError("connection was closed")
            await trio.lowlevel.wait_writable(sock)
            try:
                view = view[sock.send(view) :]
            except ssl.SSLWantWriteError:
                continue
            except ssl.SSLWantReadError:
                await trio.sleep(_RENEGOTIATION_POLL)
            except (ssl.SSLError, OSError) as exc:
                raise trio.BrokenResourceError(f"TLS write failed: {exc}") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    # -- closing ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send close_notify if the socket takes it now (never wait for the peer's), close."""
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        sock = self.socket
        if sock.fileno() < 0:
            return
        trio.lowlevel.notify_closing(sock)  # wakes a task waiting on this socket
        try:
            sock.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass  # waiting for the peer's close_notify, or the connection is already gone
        sock.close()
