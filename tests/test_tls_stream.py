"""TlsSocketStream: TLS by OpenSSL on a non-blocking socket, under trio's readiness waits.

The peer is trio's own ``SSLStream`` (an independent TLS implementation on
the same OpenSSL), over real loopback sockets.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from typing import cast

import pytest
import trio
import trustme

from rtgate.net.tls import TlsSocketStream

Peer = trio.SSLStream[trio.SocketStream]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


async def _pair(
    nursery: trio.Nursery, ca: trustme.CA, client_ctx: ssl.SSLContext | None = None
) -> tuple[TlsSocketStream, Peer]:
    """(our client, trio's TLS server end) over a loopback TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server_ctx = _server_context(ca)
    accepted: trio.MemorySendChannel[Peer]
    accepted, got = trio.open_memory_channel[Peer](1)

    async def accept() -> None:
        raw = await listeners[0].accept()
        await listeners[0].aclose()
        peer = trio.SSLStream(raw, server_ctx, server_side=True)
        try:
            await peer.do_handshake()
        except (ssl.SSLError, trio.BrokenResourceError):
            await trio.aclose_forcefully(peer)
            return
        except BaseException:  # cancelled by the test: close the socket too
            await trio.aclose_forcefully(peer)
            raise
        await accepted.send(peer)

    nursery.start_soon(accept)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    ctx = client_ctx or _client_context(ca)
    ours = await TlsSocketStream.wrap(tcp, ctx, server_hostname="127.0.0.1")
    return ours, await got.receive()


async def _read_exactly(stream: Peer | TlsSocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(65536)
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


async def test_bytes_flow_both_ways_in_order_across_many_records(ca: trustme.CA) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ours, peer = await _pair(nursery, ca)
            big = os.urandom(300_000)  # ~19 TLS records, several reads of 64 KiB
            async with trio.open_nursery() as io:
                io.start_soon(ours.send_all, big)
                assert await _read_exactly(peer, len(big)) == big
            back = os.urandom(200_000)
            async with trio.open_nursery() as io:
                io.start_soon(peer.send_all, back)
                assert await _read_exactly(ours, len(back)) == back
            await ours.aclose()
            await peer.aclose()


async def test_decrypted_bytes_left_in_openssl_are_read_without_new_socket_data(
    ca: trustme.CA,
) -> None:
    """A small read leaves the rest of a record inside OpenSSL, where epoll cannot see it;
    the next read must return it even though the socket stays quiet."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ours, peer = await _pair(nursery, ca)
            await peer.send_all(b"0123456789" * 10)
            first = await ours.receive_some(10)
            rest = await _read_exactly(ours, 100 - len(first))
            assert first + rest == b"0123456789" * 10
            await ours.aclose()
            await peer.aclose()


async def test_try_send_takes_what_fits_and_send_all_finishes_with_the_same_bytes(
    ca: trustme.CA,
) -> None:
    """When the peer stops reading, try_send returns 0 without waiting; the rest goes out
    by send_all once the peer reads (OpenSSL needs the same bytes again), byte-exact."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            ours, peer = await _pair(nursery, ca)
            chunk = os.urandom(64 * 1024)
            sent = bytearray()
            while True:
                n = ours.try_send(chunk)
                if n == 0:
                    break
                sent += chunk[:n]
                assert len(sent) < 256 * 2**20, "the kernel never filled up"
            expected = bytes(sent) + chunk
            async with trio.open_nursery() as io:
                io.start_soon(ours.send_all, chunk)
                assert await _read_exactly(peer, len(expected)) == expected
            await ours.aclose()
            await peer.aclose()


async def test_aclose_sends_close_notify_so_the_peer_sees_a_clean_eof(ca: trustme.CA) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ours, peer = await _pair(nursery, ca)
            await ours.send_all(b"last words")
            await ours.aclose()
            assert await _read_exactly(peer, 10) == b"last words"
            assert await peer.receive_some(100) == b""  # trio raises on a ragged EOF
            await peer.aclose()


async def test_closing_wakes_a_waiting_reader(ca: trustme.CA) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ours, peer = await _pair(nursery, ca)
            outcome: list[BaseException] = []

            async def reader() -> None:
                try:
                    await ours.receive_some()
                except trio.ClosedResourceError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as io:
                io.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await ours.aclose()
            assert len(outcome) == 1
            with pytest.raises(trio.ClosedResourceError):
                await ours.send_all(b"x")
            await peer.aclose()


async def test_untrusted_certificate_fails_the_handshake_and_closes_the_socket(
    ca: trustme.CA,
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            before = len(os.listdir("/proc/self/fd"))
            with pytest.raises(ssl.SSLCertVerificationError):
                await _pair(nursery, ca, client_ctx=_client_context(trustme.CA()))
            nursery.cancel_scope.cancel()
        assert len(os.listdir("/proc/self/fd")) == before


async def test_input_waiting_sees_bytes_left_inside_openssl(ca: trustme.CA) -> None:
    """What the warm pool's hand-out check asks: bytes OpenSSL already decrypted are
    invisible to poll and must count as waiting too."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ours, peer = await _pair(nursery, ca)
            assert ours.input_waiting() is False
            await peer.send_all(b"x" * 100)
            await ours.receive_some(10)
            assert ours.socket.pending() and not select.select([ours.socket], [], [], 0)[0]
            assert ours.input_waiting() is True
            await ours.aclose()
            assert ours.input_waiting() is None
            await peer.aclose()


class _RenegotiatingSocket:
    """An SSLSocket stand-in whose first read needs a write first (TLS 1.2 renegotiation);
    the real socket under it never becomes readable."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reads = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> int:
        return 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        if self.reads == 1:
            self._sock.recv(1)  # what woke the reader is consumed; nothing more comes
            raise ssl.SSLWantWriteError("renegotiating")
        return b"after renegotiation"


async def test_a_read_that_needs_a_write_is_retried_without_waiting_for_data() -> None:
    """Waiting for readability there could wait for a peer that waits for our handshake
    message; the read itself must be retried (it is what makes OpenSSL write)."""
    a, b = socket.socketpair()
    with a, b, trio.fail_after(5):
        fake = _RenegotiatingSocket(a)
        stream = TlsSocketStream(cast(ssl.SSLSocket, fake))
        b.send(b"x")  # the first wait (before any read) must return
        assert await stream.receive_some() == b"after renegotiation"
        assert fake.reads == 2
