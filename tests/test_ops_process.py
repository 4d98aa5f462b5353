"""``rtgate serve`` as a real process: signals, drain, reload, systemd notify, workers.

Each test starts ``python -m rtgate serve`` on a free port with the ``mock/``
provider, bounds its time, and kills every child it started.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from rtgate.edge.signals import SAME_REQUEST_SECONDS, StopRequests
from rtgate.edge.systemd import Notifier, monotonic_usec, parse_message
from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from tests.test_ops_support import (
    MASTER,
    Child,
    close_code,
    free_port,
    http_get,
    mock_config,
    rtgate_process,
    scrape,
    value,
)
from tests.wsclient import connect, raw_handshake, recv_json, recv_until, send_json

AUTH = {"Authorization": f"Bearer {MASTER}"}


def _url(port: int, model: str = "m") -> str:
    return f"ws://127.0.0.1:{port}/v1/realtime?model={model}"


async def _still_relaying(ws: object) -> None:
    await send_json(ws, {"type": "input_audio_buffer.clear"})  # type: ignore[arg-type]
    assert (await recv_json(ws))["type"] == "input_audio_buffer.cleared"  # type: ignore[arg-type]


# -- drain --------------------------------------------------------------------------


async def test_sigterm_drains_then_closes_1001_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(25):
        async with rtgate_process(tmp_path, mock_config(port, drain=1.0), port) as child:
            async with connect(_url(port), AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                child.signal(signal.SIGTERM)
                started = trio.current_time()
                await trio.sleep(0.3)
                await _still_relaying(ws)  # the session runs on during the drain
                # Readiness turns 503 at once and new sessions are refused with 503,
                # while the port stays open so probes can see it.
                status, body = await http_get(port, "/health/readiness")
                assert status == 503 and b'"draining":true' in body
                refused, _, _ = await raw_handshake(
                    f"http://127.0.0.1:{port}/v1/realtime?model=m", AUTH
                )
                assert refused == 503
                error = await recv_json(ws, timeout=5)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                elapsed = trio.current_time() - started
            assert await child.wait(10) == 0
    assert error["type"] == "error" and error["error"]["code"] == "gateway_restarting"
    assert "restarting" in error["error"]["message"]
    assert close_code(info.value) == 1001
    assert 0.9 <= elapsed < 5


async def test_second_sigterm_ends_the_drain_early(tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(20):
        async with rtgate_process(tmp_path, mock_config(port, drain=60), port) as child:
            async with connect(_url(port), AUTH) as ws:
                await recv_json(ws)
                child.signal(signal.SIGTERM)
                await trio.sleep(0.3)
                await _still_relaying(ws)
                await trio.sleep(SAME_REQUEST_SECONDS)  # a later signal, not a copy of the first
                child.signal(signal.SIGTERM)
                started = trio.current_time()
                error = await recv_json(ws, timeout=5)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
            assert await child.wait(10) == 0
            assert trio.current_time() - started < 5
    assert error["error"]["code"] == "gateway_restarting"
    assert close_code(info.value) == 1001


def test_stop_signals_within_a_second_of_the_last_one_count_once() -> None:
    requests = StopRequests()
    assert requests.note(100.0)
    assert not requests.note(100.001)  # the group's copy
    assert not requests.note(100.9)
    assert requests.note(101.2)  # a second request: hurry
    assert not requests.note(101.3)
    assert requests.note(103.0)
    assert requests.count == 3


def _upstream_config(port: int, upstream: FakeRealtimeServer) -> str:
    return f"""model_list:
  - model_name: slow
    litellm_params:
      model: openai/gpt-realtime
      api_key: {upstream.api_key}
      api_base: {upstream.base_url}
general_settings:
  master_key: {MASTER}
rtgate:
  host: 127.0.0.1
  port: {port}
  limits:
    drain_seconds: 30
    ping_interval: 0
"""


async def _response_survives_a_group_sigterm(
    tmp_path: Path, nursery: trio.Nursery, *args: str, copies: int
) -> None:
    """A response in flight when the process group gets SIGTERM finishes; then exit 0."""
    upstream = FakeRealtimeServer(behaviour=FakeBehaviour(frame_delay=0.05, reply_audio_ms=1000))
    await nursery.start(upstream.serve)
    port = free_port()
    with trio.fail_after(40):
        async with rtgate_process(tmp_path, _upstream_config(port, upstream), port, *args) as child:
            async with connect(_url(port, "slow"), AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await send_json(ws, {"type": "response.create"})
                assert (await recv_json(ws))["type"] == "response.created"
                for copy in range(copies):  # one request whose copies arrive a few ms apart
                    if copy:
                        await trio.sleep(0.02)  # apart enough that trio reads them one by one
                    os.killpg(child.process.pid, signal.SIGTERM)
                signalled = trio.current_time()
                events = await recv_until(ws, "response.done", timeout=15)
                finished = trio.current_time() - signalled
            assert await child.wait(15) == 0
    kinds = [e["type"] for e in events]
    assert "error" not in kinds
    assert kinds.count("response.output_audio.delta") >= 5
    assert events[-1]["response"]["status"] == "completed"
    assert finished > SAME_REQUEST_SECONDS  # the response really was in flight that long


async def test_a_group_sigterm_delivered_twice_lets_the_response_finish(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    await _response_survives_a_group_sigterm(tmp_path, nursery, copies=2)


async def test_with_workers_a_group_sigterm_lets_the_response_finish(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # Workers run in their own sessions, so the group's copies reach the supervisor
    # (a `timeout` wrapper signals its child and then its group); it forwards once.
    await _response_survives_a_group_sigterm(tmp_path, nursery, "--workers", "2", copies=2)


# -- reload -------------------------------------------------------------------------


async def test_sighup_with_bad_file_keeps_config_then_good_file_applies(tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(30):
        async with rtgate_process(tmp_path, mock_config(port), port) as child:
            async with connect(_url(port), AUTH) as running:
                await recv_json(running)
                child.config_path.write_text("model_list: [\n  - {model_name: broken\n")
                child.signal(signal.SIGHUP)
                await _wait_for(lambda: "reload failed" in child.log())
                metrics = await scrape(port)
                assert value(metrics, "rtgate_config_reloads_total", result="error") == 1
                async with connect(_url(port), AUTH) as ws:  # the old config still serves
                    assert (await recv_json(ws))["type"] == "session.created"
                await _still_relaying(running)

                child.config_path.write_text(mock_config(port, groups=("m", "n")))
                child.signal(signal.SIGHUP)
                await _wait_for(lambda: "reloaded" in child.log())
                async with connect(_url(port, "n"), AUTH) as ws:
                    assert (await recv_json(ws))["type"] == "session.created"
                await _still_relaying(running)  # the running session was not dropped
                metrics = await scrape(port)
            assert value(metrics, "rtgate_config_reloads_total", result="ok") == 1
            # The unchanged deployment kept its pool state (its session count).
            assert value(metrics, "rtgate_deployment_active_sessions", deployment="dep-m") == 1


async def _wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


# -- systemd notify -------------------------------------------------------------------


class NotifyListener:
    """A fake ``$NOTIFY_SOCKET``: every datagram received, parsed."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.messages: list[dict[str, str]] = []

    async def run(self) -> None:
        while True:
            self.messages.append(parse_message(await self.sock.recv(4096)))

    async def wait(self, key: str, count: int = 1, timeout: float = 10) -> dict[str, str]:
        with trio.fail_after(timeout):
            while True:
                hits = [m for m in self.messages if key in m]
                if len(hits) >= count:
                    return hits[count - 1]
                await trio.sleep(0.02)


async def _notify_socket(path: str | bytes) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(path)
    return sock


async def test_notify_ready_watchdog_reload_stopping(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = str(tmp_path / "notify.sock")
    listener = NotifyListener(await _notify_socket(path))
    nursery.start_soon(listener.run)
    port = free_port()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    with trio.fail_after(25):
        async with rtgate_process(tmp_path, mock_config(port), port, env=env) as child:
            ready = await listener.wait("READY")
            assert ready["MAINPID"] == str(child.process.pid)
            await listener.wait("WATCHDOG", count=3)  # every 0.1 s
            before = monotonic_usec()
            child.signal(signal.SIGHUP)
            reloading = await listener.wait("RELOADING")
            assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
            await listener.wait("READY", count=2)
            child.signal(signal.SIGTERM)
            await listener.wait("STOPPING")
            assert await child.wait(10) == 0
    order = [k for m in listener.messages for k in m if k in ("READY", "RELOADING", "STOPPING")]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"]


async def test_notifier_abstract_socket_and_no_socket() -> None:
    name = f"@rtgate-test-{os.getpid()}"
    sock = await _notify_socket(b"\0" + name[1:].encode())
    with sock:
        notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"})
        assert notifier.watchdog_interval == 1.0
        assert notifier.reloading()
        with trio.fail_after(2):
            fields = parse_message(await sock.recv(4096))
        notifier.close()
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
    silent = Notifier({})
    assert not silent.enabled and not silent.ready()
    # A watchdog meant for another process is ignored.
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None


# -- workers --------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (of any of its threads: trio forks from a worker thread)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_workers_share_the_port_restart_after_crash_and_drain(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = str(tmp_path / "notify.sock")
    listener = NotifyListener(await _notify_socket(path))
    nursery.start_soon(listener.run)
    port = free_port()
    env = {"NOTIFY_SOCKET": path}
    seen: set[int] = set()
    try:
        with trio.fail_after(40):
            async with rtgate_process(
                tmp_path, mock_config(port), port, "--workers", "2", env=env
            ) as child:
                await listener.wait("READY")  # the supervisor: every worker is listening
                workers = _children(child.process.pid)
                seen |= workers
                assert len(workers) == 2
                pids = await _worker_pids(child, 24)  # new connections are spread by hash
                assert pids == {str(p) for p in workers}  # both workers answer on the port

                victim = min(workers)
                os.kill(victim, signal.SIGKILL)
                await _wait_for(lambda: len(_children(child.process.pid) - {victim}) == 2, 10)
                replaced = _children(child.process.pid)
                seen |= replaced
                assert victim not in replaced
                await _wait_for(lambda: "worker 0 ready" in child.log().split("exited")[-1]
                                or "worker 1 ready" in child.log().split("exited")[-1], 10)  # fmt: skip
                for _ in range(4):
                    async with connect(_url(port), AUTH) as ws:
                        assert (await recv_json(ws))["type"] == "session.created"

                # Reload is forwarded: every worker serves the new group.
                child.config_path.write_text(mock_config(port, groups=("m", "n")))
                child.signal(signal.SIGHUP)
                await listener.wait("RELOADING")
                await _wait_for(lambda: child.log().count("reloaded") >= 2, 10)
                for _ in range(4):
                    async with connect(_url(port, "n"), AUTH) as ws:
                        assert (await recv_json(ws))["type"] == "session.created"

                child.signal(signal.SIGTERM)
                await listener.wait("STOPPING")
                assert await child.wait(15) == 0
                assert not _children(child.process.pid)
                await _wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in seen), 5)
    finally:
        _kill_all(seen)


async def _worker_pids(child: Child, tries: int) -> set[str]:
    pids: set[str] = set()
    for _ in range(tries):
        for name, labels in await scrape(child.port):
            if name == "rtgate_info":
                pids.add(dict(labels)["pid"])
    return pids


async def test_with_workers_a_stop_during_start_up_exits_at_once(tmp_path: Path) -> None:
    # A worker told to stop before it installed its handlers dies of the signal and never
    # reports READY; the supervisor must not wait the start-up timeout (60 s) for it.
    port = free_port()
    with trio.fail_after(30):
        async with rtgate_process(
            tmp_path, mock_config(port), port, "--workers", "2", wait_ready=False
        ) as child:
            await _wait_for(lambda: "worker 1 started" in child.log(), timeout=15)
            child.process.send_signal(signal.SIGTERM)
            assert await child.wait(20) == 0, child.log()
