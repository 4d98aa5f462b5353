"""Listening sockets a worker can inherit: shared by the supervisor and each worker.

Its own module so that ``edge/server.py`` (the ops port of each worker) and
``edge/supervisor.py`` (the public port it hands to its workers) both use it
without importing each other.
"""

from __future__ import annotations

import socket


def bind_listener(
    host: str, port: int, backlog: int = 4096, *, reuse_port: bool = False
) -> socket.socket:
    """A listening socket a worker can inherit (inheritable, non-blocking)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock
