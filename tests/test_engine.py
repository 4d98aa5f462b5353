"""The fast-lane engine: edge-triggered delivery, hang-ups, crashes, busy sockets."""

from __future__ import annotations

import os
import socket

import trio
import trio.testing

from rtgate.net.engine import Engine


class Recorder:
    """A lane that reads its socket and records what happened."""

    def __init__(self, sock: socket.socket, *, chunk: int = 1 << 16, explode: bool = False) -> None:
        self.sock = sock
        self.chunk = chunk
        self.explode = explode
        self.reads: list[bytes] = []
        self.ready_calls = 0
        self.hangups = 0
        self.crashes: list[BaseException] = []

    def on_ready(self) -> bool:
        self.ready_calls += 1
        if self.explode:
            raise RuntimeError("lane bug")
        try:
            data = os.read(self.sock.fileno(), self.chunk)
        except BlockingIOError:
            return False
        self.reads.append(data)
        return len(data) == self.chunk

    def on_crash(self, exc: BaseException) -> None:
        self.crashes.append(exc)

    def on_hangup(self) -> None:
        self.hangups += 1


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    b.setblocking(False)
    return a, b


async def _settle() -> None:
    await trio.testing.wait_all_tasks_blocked(0.01)


async def test_each_arrival_is_delivered_once() -> None:
    with trio.fail_after(5):
        engine = Engine.current()
        a, b = _pair()
        with a, b:
            lane = Recorder(b)
            engine.arm(b.fileno(), lane)
            await _settle()
            assert lane.ready_calls == 0  # nothing to read yet
            a.send(b"one")
            await _settle()
            a.send(b"two")
            await _settle()
            assert lane.reads == [b"one", b"two"]
            assert lane.ready_calls == 2  # edge-triggered: no repeat without new data
            engine.disarm(b.fileno(), lane)


async def test_rearming_a_readable_socket_delivers_at_once() -> None:
    with trio.fail_after(5):
        engine = Engine.current()
        a, b = _pair()
        with a, b:
            lane = Recorder(b)
            engine.arm(b.fileno(), lane)
            a.send(b"x")
            await _settle()
            a.send(b"pending")
            await _settle()
            engine.disarm(b.fileno(), lane)
            a.send(b"more")
            await _settle()
            assert lane.reads == [b"x", b"pending"]
            engine.arm(b.fileno(), lane)  # data is waiting: it must not be missed
            await _settle()
            assert lane.reads == [b"x", b"pending", b"more"]
            engine.disarm(b.fileno(), lane)


async def test_a_full_read_is_served_again_until_drained() -> None:
    with trio.fail_after(5):
        engine = Engine.current()
        a, b = _pair()
        with a, b:
            lane = Recorder(b, chunk=4)
            a.send(b"0123456789")  # before arming: one edge, three reads needed
            engine.arm(b.fileno(), lane)
            await _settle()
            assert b"".join(lane.reads) == b"0123456789"
            engine.disarm(b.fileno(), lane)


async def test_peer_shutdown_goes_to_the_async_path() -> None:
    with trio.fail_after(5):
        engine = Engine.current()
        a, b = _pair()
        with b:
            lane = Recorder(b)
            engine.arm(b.fileno(), lane)
            a.send(b"last words")
            a.close()
            await _settle()
            # Data then FIN can arrive as one readiness report; the engine must not
            # rely on another edge after it (none will come).
            assert lane.hangups == 1
            engine.disarm(b.fileno(), lane)


async def test_a_crashing_lane_is_reported_and_others_keep_flowing() -> None:
    with trio.fail_after(5):
        engine = Engine.current()
        a1, b1 = _pair()
        a2, b2 = _pair()
        with a1, b1, a2, b2:
            bad = Recorder(b1, explode=True)
            good = Recorder(b2)
            engine.arm(b1.fileno(), bad)
            engine.arm(b2.fileno(), good)
            a1.send(b"boom")
            a2.send(b"fine")
            await _settle()
            assert len(bad.crashes) == 1 and isinstance(bad.crashes[0], RuntimeError)
            assert good.reads == [b"fine"]
            a2.send(b"still fine")
            await _settle()
            assert good.reads == [b"fine", b"still fine"]
            engine.disarm(b1.fileno(), bad)
            engine.disarm(b2.fileno(), good)


async def test_disarm_leaves_a_reused_descriptor_to_its_new_lane() -> None:
    with trio.fail_after(5):
        engine = Engine.current()
        a, b = _pair()
        with a, b:
            old = Recorder(b)
            new = Recorder(b)
            engine.arm(b.fileno(), old)
            engine.arm(b.fileno(), new)  # the number now belongs to another lane
            engine.disarm(b.fileno(), old)  # a late cleanup of the old owner
            a.send(b"for the new owner")
            await _settle()
            assert new.reads == [b"for the new owner"]
            assert old.ready_calls == 0
            engine.disarm(b.fileno(), new)


async def test_one_engine_per_run() -> None:
    assert Engine.current() is Engine.current()
