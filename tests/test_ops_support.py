"""Helpers of the ops tests: a raw HTTP GET, a metrics parser, an ``rtgate serve`` child process.

(No tests here; the name keeps it among the ops test files.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

MASTER = "sk-ops-master-key-000000"


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """GET ``path`` on 127.0.0.1:port with ``Connection: close``; (status, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(port: int) -> Samples:
    """``GET /metrics`` (no auth), parsed."""
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return parse_metrics(body)


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def close_code(exc: ConnectionClosed) -> int | None:
    """The close code a trio-websocket client saw (``None``: no close frame)."""
    return exc.reason.code if exc.reason is not None else None


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on: a dial there is refused; a child may bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mock_config(
    port: int, *, drain: float = 1.0, groups: tuple[str, ...] = ("m",), extra: str = ""
) -> str:
    entries = "\n".join(
        f"""  - model_name: {g}
    litellm_params:
      model: mock/echo
    model_info:
      id: dep-{g}"""
        for g in groups
    )
    return f"""model_list:
{entries}
general_settings:
  master_key: {MASTER}
rtgate:
  host: 127.0.0.1
  port: {port}
  limits:
    drain_seconds: {drain}
    ping_interval: 0
{extra}
"""


@attrs.define
class Child:
    process: trio.Process
    port: int
    config_path: Path
    log_path: Path

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait(self, timeout: float) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def rtgate_process(
    tmp_path: Path,
    config: str,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> AsyncIterator[Child]:
    """``python -m rtgate serve -c CONFIG ARGS`` in its own process group; always killed at the end."""
    config_path = tmp_path / "config.yaml"
    config_path.touch(mode=0o600)  # the loader refuses world-readable files holding secrets
    config_path.write_text(config)
    log_path = tmp_path / "rtgate.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    child_env.pop("RTGATE_WORKER_ID", None)
    child_env.pop("RTGATE_SUPERVISOR_PID", None)
    child_env.update(env or {})
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "rtgate", "serve", "-c", str(config_path), *args],
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    child = Child(process, port, config_path, log_path)
    try:
        if wait_ready:
            with trio.fail_after(15):
                while True:
                    if process.returncode is not None:
                        raise AssertionError(f"rtgate exited early:\n{child.log()}")
                    try:
                        status, _ = await http_get(port, "/health/liveliness")
                        if status == 200:
                            break
                    except OSError:
                        pass
                    await trio.sleep(0.05)
        yield child
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await process.wait()
            else:
                try:  # workers left behind by a failed test
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
