"""Helpers of the fault tests: a raw sans-IO WebSocket client, leak counters, waits.

(No tests here; the name keeps it among the fault test files.)

``RawWs`` drives ``websockets``' sans-IO ``ClientProtocol`` over a plain trio
stream, so a test can send what well-behaved clients never do (invalid UTF-8,
fragments with control frames between them, frames over the size limit) and
always closes its own socket, which keeps the fd counts exact.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CLOSED
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from rtgate.edge.server import ServerHandle
from tests.conftest import CLIENT_KEY, gateway_yaml, openai_deployment

_QUIET = logging.getLogger("tests.rawws")
_QUIET.setLevel(logging.WARNING)

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
PATH = "/v1/realtime?model=gpt-realtime"


def single_yaml(base: str, *, params: str = "", limits: str = "") -> str:
    """Group ``gpt-realtime`` with one OpenAI deployment, id ``only``.

    ``params`` are extra ``litellm_params`` lines, ``limits`` extra ``rtgate.limits`` lines.
    """
    return gateway_yaml(
        openai_deployment("gpt-realtime", base, extra=params, deployment_id="only"),
        limits=f"    connect_timeout: 2\n    ping_interval: 0\n    drain_seconds: 0.5\n{limits}",
    )


class HandshakeRefused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status = response.status_code
        self.headers = response.headers
        self.body = response.body or b""


class RawWs:
    """A test client with full control over the frames it sends."""

    def __init__(self, stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.close_frame: Close | None = None
        self.eof = False
        self._stash: list[Frame] = []
        self._early: list[Frame] = []
        """Frames that arrived in the same read as the 101 response."""

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/v1/realtime?model=gpt-realtime",
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
        *,
        max_size: int | None = 64 * 1024 * 1024,
    ) -> RawWs:
        """Upgrade or raise :class:`HandshakeRefused` (the socket is closed either way on error)."""
        protocol = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{port}{path}"),
            subprotocols=[Subprotocol(s) for s in subprotocols] or None,
            max_size=max_size,
            logger=_QUIET,
        )
        request = protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        protocol.send_request(request)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_all(b"".join(protocol.data_to_send()))
            early: list[Frame] = []
            while True:
                events = protocol.events_received()
                response = next((e for e in events if isinstance(e, Response)), None)
                early = [e for e in events if isinstance(e, Frame)]
                if response is not None:
                    break
                data = await stream.receive_some(65536)
                if not data:
                    protocol.receive_eof()
                    response = next(
                        (e for e in protocol.events_received() if isinstance(e, Response)), None
                    )
                    if response is None:
                        raise ConnectionError("server closed during the handshake")
                    break
                protocol.receive_data(data)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        if response.status_code != 101:
            await trio.aclose_forcefully(stream)
            raise HandshakeRefused(response)
        ws = cls(stream, protocol)
        ws._early = early
        return ws

    async def flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            await self.stream.send_all(data)

    async def send_json(self, event: dict[str, Any]) -> None:
        self.protocol.send_text(orjson.dumps(event))
        await self.flush()

    async def send_raw_text(self, data: bytes) -> None:
        """A text frame with exactly these bytes (valid UTF-8 or not)."""
        self.protocol.send_text(data)
        await self.flush()

    async def frames(self, timeout: float = 5.0) -> list[Frame]:
        """Data and control frames of the next read; [] once the connection is over."""
        with trio.fail_after(timeout):
            while True:
                events = self._early + [
                    e for e in self.protocol.events_received() if isinstance(e, Frame)
                ]
                self._early = []
                for event in events:
                    if event.opcode is Opcode.CLOSE:
                        self.close_frame = (
                            Close.parse(event.data) if event.data else Close(1005, "")
                        )
                await self.flush()  # pongs, the close echo
                if events:
                    return events
                if self.eof or self.protocol.state is CLOSED:
                    return []
                data = await self.stream.receive_some(1 << 20)
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.eof = True
                    self.protocol.receive_eof()

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text message as JSON (control frames skipped); fails if the socket ends."""
        with trio.fail_after(timeout):
            while True:
                frames = await self.frames(timeout)
                if not frames:
                    raise ConnectionError(f"closed: {self.close_frame}")
                self._stash.extend(f for f in frames if f.opcode is Opcode.TEXT)
                if self._stash:
                    event = orjson.loads(self._stash.pop(0).data)
                    assert isinstance(event, dict)
                    return event

    async def recv_until_closed(self, timeout: float = 5.0) -> tuple[list[dict[str, Any]], Close]:
        """Every JSON event until the server's close frame (or EOF: code 1006)."""
        events: list[dict[str, Any]] = [orjson.loads(f.data) for f in self._stash]
        self._stash.clear()
        with trio.fail_after(timeout):
            while True:
                frames = await self.frames(timeout)
                events += [orjson.loads(f.data) for f in frames if f.opcode is Opcode.TEXT]
                if self.close_frame is not None:
                    return events, self.close_frame
                if not frames:
                    return events, Close(1006, "")

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def open_session(gw: ServerHandle) -> RawWs:
    """A client of ``gpt-realtime`` that has seen ``session.created``."""
    ws = await RawWs.open(gw.port, PATH, AUTH)
    try:
        assert (await ws.recv_json())["type"] == "session.created"
    except BaseException:
        await ws.aclose()
        raise
    return ws


# -- leaks ---------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _tasks() -> list[trio.lowlevel.Task]:
    found: list[trio.lowlevel.Task] = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        found.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


def task_count() -> int:
    """Every trio task of this run (the root task's descendants)."""
    return len(_tasks())


class LeakCheck:
    """Counts before, then waits (bounded) for fds and tasks to come back down."""

    def __init__(self) -> None:
        self.fds = open_fds()
        self.task_names = sorted(t.name for t in _tasks())
        self.tasks = len(self.task_names)

    @classmethod
    async def start(cls) -> LeakCheck:
        """A baseline taken once every task (a just-started listener too) is blocked."""
        await trio.testing.wait_all_tasks_blocked(0.01)
        return cls()

    async def settled(
        self, *, slack_fds: int = 0, slack_tasks: int = 0, timeout: float = 5
    ) -> None:
        with trio.move_on_after(timeout):
            while open_fds() > self.fds + slack_fds or task_count() > self.tasks + slack_tasks:
                await trio.sleep(0.02)
        assert open_fds() <= self.fds + slack_fds, f"fds: {self.fds} -> {open_fds()}"
        now = sorted(t.name for t in _tasks())
        extra = Counter(now) - Counter(self.task_names)
        assert len(now) <= self.tasks + slack_tasks, f"tasks: {self.tasks} -> {len(now)}: {extra}"


async def sessions_idle(gw: ServerHandle, timeout: float = 5) -> None:
    """Wait until the gateway holds no session."""
    with trio.fail_after(timeout):
        while gw.gateway.counters.sessions_active:
            await trio.sleep(0.01)


def pool_stats(gw: ServerHandle) -> dict[str, dict[str, object]]:
    return gw.gateway.pool.statistics(trio.current_time())
