"""The floor under any Python relay: two byte pipes measured with the same load as rtgate.

Owns two reference relays and the context manager that runs one pinned to
the proxy core. Both accept a connection, connect to the fake upstream and
then copy bytes both ways, doing no per-message work at all (no WebSocket
parsing, no auth, no counters), which is what nginx does after the upgrade:

* ``trio``: the copy loop on trio (``wait_readable``, then one ``os.read`` and
  ``os.write`` per wake-up, as rtgate's relay does). Its cost is what trio's
  I/O and scheduling take per message; no relay built on trio can go below it.
* ``epoll``: the copy loop on one plain edge-triggered ``select.epoll`` (no
  trio): what the interpreter and the kernel take, without an event-loop
  library.

So the report can say how much of rtgate's cost is its own work, how much is
trio's, and how much is Python's. Run one by hand with
``python -m bench.floors trio --port P --upstream-port U``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import trio

from bench.procs import PROXY_CORE, PYTHON, free_port, pin, process, wait_port

KINDS = ("trio", "epoll")
READ_SIZE = 64 * 1024


# -- trio ----------------------------------------------------------------------


async def _trio_copy(src: trio.socket.SocketType, dst: trio.socket.SocketType) -> None:
    """Copy until EOF: wait, read once, write it all (a short read means drained)."""
    src_fd, dst_fd = src.fileno(), dst.fileno()
    while True:
        await trio.lowlevel.wait_readable(src_fd)
        try:
            data = os.read(src_fd, READ_SIZE)
        except BlockingIOError:
            continue
        except OSError:
            return
        if not data:
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(dst_fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(dst_fd)
            except OSError:
                return


async def _trio_serve(port: int, upstream_port: int) -> None:
    async def pair(stream: trio.SocketStream) -> None:
        client = stream.socket
        upstream = trio.socket.socket()
        with client, upstream:
            await upstream.connect(("127.0.0.1", upstream_port))
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with trio.open_nursery() as nursery:
                # Either side ending ends both (as nginx does): a WebSocket has no half-close.
                async def one_way(src: trio.socket.SocketType, dst: trio.socket.SocketType) -> None:
                    await _trio_copy(src, dst)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(one_way, client, upstream)
                nursery.start_soon(one_way, upstream, client)

    await trio.serve_tcp(pair, port, host="127.0.0.1", backlog=1024)


# -- plain edge-triggered epoll --------------------------------------------------------

_EDGE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET


def _epoll_serve(port: int, upstream_port: int) -> None:
    """One thread, one epoll; every readable socket is drained at each edge."""
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)
    peer: dict[int, int] = {}
    sockets: dict[int, socket.socket] = {}

    def drop(fd: int) -> None:
        for end in (fd, peer.pop(fd, -1)):
            peer.pop(end, None)
            sock = sockets.pop(end, None)
            if sock is not None:
                epoll.unregister(end)
                sock.close()

    while True:
        for fd, _events in epoll.poll():
            if fd == listener.fileno():
                _accept_all(listener, upstream_port, epoll, peer, sockets)
                continue
            dst = peer.get(fd)
            while dst is not None:
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    drop(fd)
                    break
                try:
                    _write_all(dst, data)
                except OSError:
                    drop(fd)
                    break


def _accept_all(
    listener: socket.socket,
    upstream_port: int,
    epoll: select.epoll,
    peer: dict[int, int],
    sockets: dict[int, socket.socket],
) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            sockets[sock.fileno()] = sock
        peer[client.fileno()] = upstream.fileno()
        peer[upstream.fileno()] = client.fileno()
        epoll.register(client.fileno(), _EDGE)
        epoll.register(upstream.fileno(), _EDGE)


def _write_all(fd: int, data: bytes) -> None:
    """Write everything; on loopback at benchmark rates the kernel takes it at once,
    and a full buffer waits with ``select`` (the floor never drops bytes)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


# -- running one -------------------------------------------------------------------------


@contextlib.contextmanager
def floor(kind: str, workdir: Path, upstream_port: int) -> Iterator[tuple[int, list[int]]]:
    """(port, [pid]) of one floor relay pinned to the proxy core."""
    if kind not in KINDS:
        raise ValueError(f"unknown floor {kind!r}; expected one of {', '.join(KINDS)}")
    port = free_port()
    argv = [*pin(PROXY_CORE), PYTHON, "-m", "bench.floors", kind]
    argv += ["--port", str(port), "--upstream-port", str(upstream_port)]
    with process(argv, log=workdir / f"floor-{kind}.log") as proc:
        wait_port(port, proc=proc)
        yield port, [proc.pid]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        if args.kind == "trio":
            trio.run(_trio_serve, args.port, args.upstream_port)
        else:
            _epoll_serve(args.port, args.upstream_port)


if __name__ == "__main__":
    main()
