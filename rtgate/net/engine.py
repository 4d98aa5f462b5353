"""The fast lane: one private edge-triggered epoll that serves every relay's steady state.

trio wakes a task per readable socket: re-arm its one-shot registration
(``epoll_ctl``), park the task, wake it through the run loop, resume the
coroutine chain. At 100 messages per session per second that machinery cost
as much CPU as the relaying itself and, on a cold CPU, most of a hop's
latency. The engine instead registers relayed sockets once, edge-triggered,
in an epoll set of its own, and trio waits on that one descriptor: a single
wake-up serves every socket that became readable, and each is handled by a
plain function call (:class:`Lane.on_ready`) that reads, translates and
writes without awaiting.

A lane handles only what needs no waiting: a read that yields whole
messages, writes the kernel takes at once. Anything else (a close, a
protocol reply to flush, a full socket buffer, a translator that asks to
reconnect) is handed back to the lane's own trio task, which runs the
ordinary async path and re-arms the lane when it is done. So correctness
never depends on the fast lane; it only removes scheduling work.

One engine per trio run, started on first use as a trio system task (it is
a service of the run, like trio's own I/O manager) and closed with the run.
"""

from __future__ import annotations

import logging
import select
from typing import Protocol

import trio

log = logging.getLogger("rtgate.engine")

_EDGE_READ = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
# Events handed out per wake-up; more stay queued in the kernel for the next round.
_MAX_EVENTS = 512


class Lane(Protocol):
    """What the engine calls when a registered socket may have become readable."""

    def on_ready(self) -> bool:
        """Handle one read; return True when the socket may hold more (call again soon)."""

    def on_crash(self, exc: BaseException) -> None:
        """``on_ready`` raised: end the lane's session; never raises."""

    def on_hangup(self) -> None:
        """The socket reported a peer shutdown or an error: hand over to async code."""


class Engine:
    """The process's fast lane under one trio run (see module docstring)."""

    _current: trio.lowlevel.RunVar[Engine] = trio.lowlevel.RunVar("rtgate_engine")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._lanes: dict[int, Lane] = {}
        self._again: list[Lane] = []
        self.wakeups = 0
        """Times the engine woke (tests and benchmarks read it)."""

    @classmethod
    def current(cls) -> Engine:
        """The engine of the running trio run, started on first use."""
        try:
            return cls._current.get()
        except LookupError:
            engine = cls()
            cls._current.set(engine)
            trio.lowlevel.spawn_system_task(engine._run, name="rtgate.engine")
            return engine

    def arm(self, fd: int, lane: Lane) -> None:
        """Deliver readability of ``fd`` to ``lane`` (again). If ``fd`` is readable
        now, an event is queued at once (``EPOLL_CTL_MOD`` re-evaluates readiness)."""
        self._lanes[fd] = lane
        try:
            self._epoll.modify(fd, _EDGE_READ)
        except FileNotFoundError:
            self._epoll.register(fd, _EDGE_READ)

    def disarm(self, fd: int, lane: Lane) -> None:
        """Stop delivering ``fd`` to ``lane`` (a no-op if ``fd`` now belongs to another lane)."""
        if self._lanes.get(fd) is lane:
            del self._lanes[fd]
            try:
                self._epoll.unregister(fd)
            except (FileNotFoundError, ValueError, OSError):
                pass  # already closed: the kernel dropped it from the set

    async def _run(self) -> None:
        epoll = self._epoll
        lanes = self._lanes
        try:
            while True:
                if self._again:
                    await trio.lowlevel.checkpoint()  # a busy socket must not starve others
                else:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                self.wakeups += 1
                again, self._again = self._again, []
                for lane in again:
                    self._serve(lane)
                for fd, events in epoll.poll(0, _MAX_EVENTS):
                    ready = lanes.get(fd)
                    if ready is not None:
                        if events == select.EPOLLIN:
                            self._serve(ready)
                        else:
                            # The peer shut down or the socket failed: no further edge
                            # will come, so whatever is left must be read until EOF,
                            # which the lane's async path does (nginx treats a
                            # pending EOF the same way).
                            ready.on_hangup()
        finally:
            epoll.close()

    def _serve(self, lane: Lane) -> None:
        """One read for ``lane``: edge-triggered, so a short read means the socket
        is drained; a full one is served again after a checkpoint."""
        try:
            if lane.on_ready():
                self._again.append(lane)
        except Exception as exc:
            # A bug in one session's lane ends that session, never the engine.
            log.exception("fast lane failed; ending its session")
            lane.on_crash(exc)
