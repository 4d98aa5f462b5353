"""The data plane's I/O: the front accept loop, the sans-IO WebSocket driver, TLS, upstream
dialing; here, the one readiness poll the plain and TLS sockets share."""

from __future__ import annotations

import select


def readable_now(fd: int) -> bool:
    """Would a read of ``fd`` return at once (data, an EOF or an error)? Never waits."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLRDHUP)
    return bool(poller.poll(0))
