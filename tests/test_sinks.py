"""Event-log sinks: file rotation, stderr, HTTP to a fake collector, retries and the spool."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import h11
import orjson
import pytest
import trio

from rtgate.config.model import EventLogSettings
from rtgate.errors import ConfigError
from rtgate.telemetry.eventlog import EventLogger
from rtgate.telemetry.sinks import (
    FileDestination,
    HttpDestination,
    Sink,
    SinkDown,
    Spool,
    StderrDestination,
    build_sink,
)
from rtgate.telemetry.tap import SessionInfo


def lines(start: int, n: int, pad: int = 0) -> list[bytes]:
    return [orjson.dumps({"n": i, "pad": "x" * pad}) for i in range(start, start + n)]


def numbers(data: bytes) -> list[int]:
    return [orjson.loads(line)["n"] for line in data.split(b"\n") if line]


class FakeCollector:
    """An HTTP/1.1 log collector on 127.0.0.1 (h11): answers each POST with the next status.

    ``statuses`` are consumed one per request (default 200); ``hang`` makes it read
    requests and never answer; only 2xx bodies are kept, like a real collector.
    """

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.requests: list[h11.Request] = []
        self.statuses: deque[int] = deque()
        self.connections = 0
        self.hang = False
        self.port = 0
        self._scope: trio.CancelScope | None = None

    async def serve(
        self, port: int = 0, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    partial(trio.serve_tcp, self._handle, port, host="127.0.0.1")
                )
                self.port = listeners[0].socket.getsockname()[1]
                task_status.started()

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest?stream=rt"

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    self.requests.append(event)
                    body.clear()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    if self.hang:
                        await trio.sleep_forever()
                    status = self.statuses.popleft() if self.statuses else 200
                    if 200 <= status < 300:
                        self.bodies.append(bytes(body))
                    reply = h11.Response(status_code=status, headers=[("Content-Length", "0")])
                    await stream.send_all(conn.send(reply) + conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.ProtocolError):
            return

    def received(self) -> list[int]:
        return [n for body in self.bodies for n in numbers(body)]


@pytest.fixture
async def collector(nursery: trio.Nursery) -> FakeCollector:
    server = FakeCollector()
    await nursery.start(server.serve)
    return server


def fast_sink(destination: Any, spool: Spool | None = None, **kw: Any) -> Sink:
    options: dict[str, Any] = {"retries": 2, "retry_backoff": 0.01, "down_backoff": 0.05}
    options.update(kw)
    return Sink("test", destination, spool=spool, **options)


# -- file -------------------------------------------------------------------------------


async def test_file_sink_appends_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "events.jsonl"
    sink = fast_sink(FileDestination(str(path), max_bytes=2000, backups=2))
    with trio.fail_after(10):
        for i in range(20):
            await sink.handle(lines(i * 10, 10, pad=10))  # ~260 bytes a batch
        await sink.destination.aclose()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    for name in files:
        assert (path.parent / name).stat().st_size <= 2000
    # Every file holds whole lines, the newest in events.jsonl, in order across files.
    seen = []
    for name in ("events.jsonl.2", "events.jsonl.1", "events.jsonl"):
        seen += numbers((path.parent / name).read_bytes())
    assert seen == list(range(seen[0], 200))
    assert sink.counters.written == 200


async def test_file_sink_reopens_existing_file_and_counts_its_size(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x" * 1500 + b"\n")
    dest = FileDestination(str(path), max_bytes=2000, backups=1)
    with trio.fail_after(5):
        await dest.deliver(lines(0, 20, pad=20))
        await dest.aclose()
    assert (tmp_path / "events.jsonl.1").read_bytes() == b"x" * 1500 + b"\n"
    assert numbers(path.read_bytes()) == list(range(20))


async def test_file_sink_spools_while_unwritable_then_replays(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log directory should be")
    path = blocker / "events.jsonl"
    spool = Spool(str(tmp_path / "spool"), max_bytes=1 << 20)
    await spool.open()
    sink = fast_sink(
        FileDestination(str(path), max_bytes=1 << 20, backups=1), spool, down_backoff=0
    )
    with trio.fail_after(10):
        await sink.handle(lines(0, 5))
        await sink.handle(lines(5, 5))
        assert sink.counters.spooled == 10
        assert sink.counters.written == 0
        assert sink.down
        blocker.unlink()
        await sink.handle(lines(10, 5))
        await sink.destination.aclose()
    assert numbers(path.read_bytes()) == list(range(15))  # spool first, in order
    assert sink.counters.replayed == 10
    assert sink.counters.written == 15
    assert len(spool) == 0 and not list((tmp_path / "spool").iterdir())


# -- stderr -----------------------------------------------------------------------------


async def test_stderr_sink_writes_lines() -> None:
    stream = io.BytesIO()
    sink = fast_sink(StderrDestination(stream))
    with trio.fail_after(5):
        await sink.handle(lines(0, 3))
    assert numbers(stream.getvalue()) == [0, 1, 2]
    assert stream.getvalue().endswith(b"\n")


# -- http -------------------------------------------------------------------------------


async def test_http_sink_posts_batches_as_json_lines_over_one_connection(
    collector: FakeCollector,
) -> None:
    sink = fast_sink(HttpDestination(collector.url, headers={"Authorization": "Bearer t0ken-abc"}))
    with trio.fail_after(10):
        for i in range(3):
            await sink.handle(lines(i * 4, 4))
        await sink.destination.aclose()
    assert [numbers(b) for b in collector.bodies] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert collector.connections == 1  # kept alive
    request = collector.requests[0]
    assert request.method == b"POST"
    assert request.target == b"/ingest?stream=rt"
    headers = dict(request.headers)
    assert headers[b"content-type"] == b"application/x-ndjson"
    assert headers[b"authorization"] == b"Bearer t0ken-abc"
    assert sink.counters.written == 12


async def test_http_sink_retries_a_server_error(collector: FakeCollector) -> None:
    collector.statuses.extend([503, 500])
    sink = fast_sink(HttpDestination(collector.url))
    with trio.fail_after(10):
        await sink.handle(lines(0, 3))
        await sink.destination.aclose()
    assert collector.received() == [0, 1, 2]
    assert len(collector.requests) == 3
    assert sink.counters.failures == 2
    assert sink.counters.written == 3
    assert not sink.down


async def test_http_sink_drops_a_batch_the_collector_rejects(collector: FakeCollector) -> None:
    collector.statuses.append(400)
    sink = fast_sink(HttpDestination(collector.url))
    with trio.fail_after(10):
        await sink.handle(lines(0, 3))
        await sink.handle(lines(3, 2))
        await sink.destination.aclose()
    assert len(collector.requests) == 2  # 400 is not retried
    assert collector.received() == [3, 4]
    assert sink.counters.dropped == {"rejected": 3}


async def test_http_sink_spools_during_an_outage_and_replays_when_back(tmp_path: Path) -> None:
    """Collector stops (connection refused), batches spool; it restarts on the same port."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            collector = FakeCollector()
            await nursery.start(collector.serve)
            port = collector.port
            spool = Spool(str(tmp_path / "spool"), max_bytes=1 << 20)
            sink = fast_sink(HttpDestination(collector.url), spool)
            send, receive = trio.open_memory_channel[Sequence[bytes]](8)
            nursery.start_soon(sink.run, receive)
            await send.send(lines(0, 5))
            while sink.counters.written < 5:
                await trio.sleep(0.01)
            collector.stop()
            await trio.sleep(0.05)
            for i in range(1, 4):
                await send.send(lines(i * 5, 5))
            while sink.counters.spooled < 15:
                await trio.sleep(0.01)
            assert sink.down
            assert len(spool) == 3
            # Back on the same port: the sink probes on its own (no new batch needed).
            revived = FakeCollector()
            await nursery.start(revived.serve, port)
            while sink.counters.replayed < 15:
                await trio.sleep(0.01)
            await send.send(lines(20, 5))
            while sink.counters.written < 25:
                await trio.sleep(0.01)
            await send.aclose()
            revived.stop()
    assert collector.received() == list(range(5))
    assert revived.received() == list(range(5, 25))  # spooled first, in order
    assert not sink.down
    assert len(spool) == 0


async def test_http_sink_times_out_a_silent_collector(collector: FakeCollector) -> None:
    collector.hang = True
    dest = HttpDestination(collector.url, timeout=0.2)
    with trio.fail_after(5), pytest.raises(SinkDown, match="no answer"):
        await dest.deliver(lines(0, 1))
    await dest.aclose()


async def test_http_sink_replaces_a_connection_the_collector_closed(
    collector: FakeCollector, nursery: trio.Nursery
) -> None:
    sink = fast_sink(HttpDestination(collector.url))
    with trio.fail_after(10):
        await sink.handle(lines(0, 1))
        collector.stop()  # drops the kept-alive connection too
        revived = FakeCollector()
        await nursery.start(revived.serve, collector.port)
        await sink.handle(lines(1, 1))
        await sink.destination.aclose()
    assert collector.received() == [0]
    assert revived.received() == [1]
    assert sink.counters.failures == 0


async def test_unreachable_without_spool_drops_and_counts() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    sink = fast_sink(HttpDestination(f"http://127.0.0.1:{port}/"), retries=1, down_backoff=60)
    with trio.fail_after(10):
        await sink.handle(lines(0, 4))
        await sink.handle(lines(4, 4))  # inside the pause: not even tried
    assert sink.counters.failures == 2
    assert sink.counters.dropped == {"down": 8}


# -- spool ------------------------------------------------------------------------------


async def test_spool_is_bounded_and_survives_a_restart(tmp_path: Path) -> None:
    directory = str(tmp_path / "spool")
    spool = Spool(directory, max_bytes=100)
    await spool.open()
    assert await spool.put(lines(0, 2))  # 2 x ~20 bytes
    assert await spool.put(lines(2, 2))
    assert not await spool.put(lines(4, 4))  # would exceed 100 bytes
    again = Spool(directory, max_bytes=100)
    await again.open()
    assert len(again) == 2
    assert again.bytes == spool.bytes
    assert await again.oldest() == lines(0, 2)
    await again.pop()
    assert await again.oldest() == lines(2, 2)
    assert await again.put(lines(9, 1))  # numbered after the files it found
    await again.pop()
    assert await again.oldest() == lines(9, 1)


async def test_full_spool_drops_and_counts(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"), max_bytes=60)
    await spool.open()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    sink = fast_sink(HttpDestination(f"http://127.0.0.1:{port}/"), spool, retries=0)
    with trio.fail_after(10):
        await sink.handle(lines(0, 2))
        await sink.handle(lines(2, 2))
    assert sink.counters.spooled == 2
    assert sink.counters.dropped == {"spool_full": 2}


# -- configuration -----------------------------------------------------------------------


def test_build_sink_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_TOKEN", "tok-123456")
    sink = build_sink(
        {
            "type": "http",
            "url": "https://logs.example.com/v1/ingest",
            "headers": {"Authorization": "os.environ/COLLECTOR_TOKEN"},
            "spool_dir": str(tmp_path),
            "retries": 5,
        },
        3,
    )
    assert sink.name == "http3"
    assert sink.retries == 5
    assert isinstance(sink.destination, HttpDestination)
    assert ("Authorization", "tok-123456") in sink.destination.headers
    assert sink.destination.https and sink.destination.port == 443
    assert sink.spool is not None
    file_sink = build_sink({"type": "file", "path": "/tmp/e.jsonl", "max_bytes": 10.0, "name": "f"})
    assert isinstance(file_sink.destination, FileDestination)
    assert file_sink.destination.max_bytes == 10
    bad: list[dict[str, object]] = [
        {"type": "kafka"},
        {"type": "file"},
        {"type": "file", "path": "/tmp/x", "colour": "blue"},
        {"type": "http", "url": "ftp://x"},
        {"type": "http", "url": "http://x", "timeout": -1},
        {"type": "http", "url": "http://x", "headers": {"A": "os.environ/RTGATE_NOT_SET_ANYWHERE"}},
        {"type": "stderr", "retries": True},
    ]
    for spec in bad:
        with pytest.raises(ConfigError):
            build_sink(spec)


async def test_event_log_to_file_and_http_end_to_end(
    tmp_path: Path, collector: FakeCollector
) -> None:
    """Two sinks fed by one writer: both get every record; shutdown flushes them."""
    path = tmp_path / "events.jsonl"
    settings = EventLogSettings(
        event_types=None,
        batch_size=50,
        flush_interval=0.05,
        sinks=({"type": "file", "path": str(path)}, {"type": "http", "url": collector.url}),
    )
    logger = EventLogger.from_settings(settings)
    info = SessionInfo("sess_9", None, "127.0.0.1:1", "m", "d", "mock", 0.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(logger.run)
            tap = logger.open_session(info)
            assert tap is not None
            for i in range(120):
                tap.record(
                    "client", orjson.dumps({"type": "response.create", "event_id": f"c{i}"}), 0.0
                )
                if i % 40 == 0:
                    await trio.sleep(0.01)
            await logger.aclose()
    from_file = [orjson.loads(line)["event_id"] for line in path.read_bytes().splitlines()]
    from_http = [
        orjson.loads(line)["event_id"] for body in collector.bodies for line in body.splitlines()
    ]
    assert from_file == from_http == [f"c{i}" for i in range(120)]
    snapshot = logger.snapshot()
    assert snapshot["sinks"]["file0"]["written"] == 120
    assert snapshot["sinks"]["http1"]["written"] == 120


async def test_a_spooled_batch_the_collector_rejects_is_dropped_not_replayed_forever(
    tmp_path: Path, collector: FakeCollector
) -> None:
    spool = Spool(str(tmp_path / "spool"), max_bytes=1 << 20)
    await spool.open()
    assert await spool.put(lines(0, 2))  # left over from an earlier outage
    collector.statuses.append(422)
    sink = fast_sink(HttpDestination(collector.url), spool)
    with trio.fail_after(10):
        await sink.handle(lines(2, 2))
        await sink.destination.aclose()
    assert collector.received() == [2, 3]
    assert sink.counters.dropped == {"rejected": 2}
    assert sink.counters.replayed == 0
    assert len(spool) == 0
