"""The systemd notify protocol: a few datagrams to ``$NOTIFY_SOCKET``, no libsystemd.

``READY=1`` once listening, ``RELOADING=1`` + ``MONOTONIC_USEC`` / ``READY=1``
around a reload, ``STOPPING=1`` when the drain starts, ``STATUS=...`` for
``systemctl status``, and ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``
(see sd_notify(3) and systemd.service(5), ``Type=notify-reload``).

Abstract sockets (``@name``) are supported. Without ``$NOTIFY_SOCKET`` every
call is a no-op, so the same code runs under systemd, in a container and in
tests. The supervisor of ``--workers N`` speaks this same protocol with its
workers over its own sockets. Sending never raises: a gateway must not die
because its service manager went away.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

import trio

log = logging.getLogger("rtgate.systemd")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares ``MONOTONIC_USEC`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends notify messages for this process (see module docstring)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; False if it could not be delivered."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("systemd notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            fields.append(f"STATUS={status}")
        return self.notify(*fields)

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading")

    def stopping(self, status: str = "draining") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def run_watchdog(self) -> None:
        """Ping the watchdog every half interval until cancelled (returns at once if none is set).

        It runs on the same trio loop as the relays, so a loop stuck for the
        whole ``WatchdogSec`` gets the process restarted.
        """
        interval = self.watchdog_interval
        if interval is None or self.address is None:
            return
        while True:
            self.watchdog()
            await trio.sleep(interval / 2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(raw: str) -> str | bytes | None:
    if not raw:
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()  # abstract namespace
    if raw.startswith("/"):
        return raw
    log.warning("ignoring NOTIFY_SOCKET=%r (neither a path nor @abstract)", raw)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds of ``$WATCHDOG_USEC``, if it is meant for this process."""
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # set for another process (a parent passed its environment down)
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def parse_message(data: bytes) -> dict[str, str]:
    """``KEY=value`` lines of a notify datagram (what the supervisor reads from workers)."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields
