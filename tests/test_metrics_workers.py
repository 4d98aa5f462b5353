"""``rtgate serve --workers 2`` as real processes: every scrape answers for the host.

Many short sessions land on both workers (the kernel spreads connections by
hash); every scrape, whichever worker takes it, must then report the host's
total, never one worker's, never less than the scrape before, also across a
worker killed with SIGKILL and restarted by the supervisor.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from rtgate.control.host_metrics import HOST_METRICS_DIR_ENV, parse_snapshot, render_families
from tests.test_ops_support import (
    MASTER,
    Child,
    free_port,
    mock_config,
    parse_metrics,
    rtgate_process,
    scrape,
    value,
)
from tests.wsclient import connect, recv_json

AUTH = {"Authorization": f"Bearer {MASTER}"}
STARTED = "rtgate_sessions_started_total"
URL = "ws://127.0.0.1:PORT/v1/realtime?model=m"


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (of any of its threads: trio forks from a worker thread)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def _snapshot_dir(worker_pid: int) -> Path:
    environ = Path(f"/proc/{worker_pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        name, _, val = entry.partition(b"=")
        if name.decode() == HOST_METRICS_DIR_ENV:
            return Path(val.decode())
    raise AssertionError("the supervisor gave its worker no snapshot directory")


def _started_per_worker(directory: Path) -> dict[str, float]:
    """Sessions started as each worker's own file says (its predecessors' included)."""
    out = {}
    for path in directory.glob("worker-*.prom"):
        header, families = parse_snapshot(path.read_bytes())
        out[header.worker] = value(parse_metrics(render_families(families)), STARTED)
    return out


async def _open_sessions(port: int, count: int) -> None:
    for _ in range(count):
        async with connect(URL.replace("PORT", str(port)), AUTH) as ws:
            assert (await recv_json(ws))["type"] == "session.created"


async def _wait_for(check: Callable[[], bool], timeout: float) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


class Scrapes:
    """Scrapes the port and checks that the host's counter never goes down."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.last = 0.0
        self.seen: list[float] = []

    async def once(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        samples = await scrape(self.child.port)
        total = value(samples, STARTED, model_group="m")
        assert total >= self.last, f"the host's sessions went down: {[*self.seen, total]}"
        self.last = total
        self.seen.append(total)
        return samples

    async def until(self, expected: float, timeout: float = 10) -> None:
        """Scrape until the total is ``expected`` (peers' files lag by up to a second)."""
        with trio.fail_after(timeout):
            while True:
                samples = await self.once()
                if value(samples, STARTED, model_group="m") == expected and not value(
                    samples, "rtgate_sessions_active"
                ):
                    return
                await trio.sleep(0.1)

    async def steady(self, expected: float, times: int) -> None:
        for _ in range(times):
            samples = await self.once()
            assert value(samples, STARTED, model_group="m") == expected, self.seen
            assert value(samples, "rtgate_sessions_active") == 0


def _workers_in(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {dict(labels)["pid"] for name, labels in samples if name == "rtgate_info"}


async def test_every_scrape_answers_for_both_workers_and_survives_a_sigkill(
    tmp_path: Path,
) -> None:
    port = free_port()
    seen_pids: set[int] = set()
    try:
        with trio.fail_after(90):
            async with rtgate_process(tmp_path, mock_config(port), port, "--workers", "2") as child:
                scrapes = Scrapes(child)
                await _wait_for(lambda: len(_children(child.process.pid)) == 2, 10)
                workers = _children(child.process.pid)
                seen_pids |= workers
                directory = _snapshot_dir(min(workers))
                await _wait_for(lambda: "2 workers listening" in child.log(), 15)

                opened = 24
                await _open_sessions(port, opened)
                await scrapes.until(opened)
                await scrapes.steady(opened, 30)
                # Every scrape names both workers (one rtgate_info series each).
                assert _workers_in(await scrapes.once()) == {str(p) for p in workers}
                per_worker = _started_per_worker(directory)
                assert sorted(per_worker) == ["0", "1"]
                assert all(n > 0 for n in per_worker.values()), per_worker  # both served some
                assert sum(per_worker.values()) == opened

                # Sessions held open on both workers: the active gauge is the host's sum.
                held = 6
                async with AsyncExitStack() as stack:
                    for _ in range(held):
                        url = URL.replace("PORT", str(port))
                        ws = await stack.enter_async_context(connect(url, AUTH))
                        assert (await recv_json(ws))["type"] == "session.created"
                    with trio.fail_after(10):
                        while value(await scrapes.once(), "rtgate_sessions_active") != held:
                            await trio.sleep(0.1)
                    for _ in range(10):
                        assert value(await scrapes.once(), "rtgate_sessions_active") == held
                opened += held
                await scrapes.until(opened)

                # SIGKILL one worker: its sessions stay in every scrape while it is gone and
                # after the supervisor restarted its slot.
                victim = min(workers)
                os.kill(victim, signal.SIGKILL)
                await _wait_for(lambda: victim not in _children(child.process.pid), 10)
                await scrapes.steady(opened, 10)
                await _wait_for(lambda: len(_children(child.process.pid) - {victim}) == 2, 15)
                replaced = _children(child.process.pid)
                seen_pids |= replaced
                with trio.fail_after(15):  # the new worker listening and published
                    while _workers_in(await scrapes.once()) != {str(p) for p in replaced}:
                        await trio.sleep(0.1)
                await scrapes.steady(opened, 10)

                more = 16
                await _open_sessions(port, more)
                await scrapes.until(opened + more)
                await scrapes.steady(opened + more, 20)
                assert sum(_started_per_worker(directory).values()) == opened + more
    finally:
        for pid in seen_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
