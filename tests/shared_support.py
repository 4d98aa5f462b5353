"""A real redis-server for a test: its own port on 127.0.0.1, its own directory, stopped after.

(No tests here.) ``redis-server`` is the Debian package CI installs; a test that
needs it is skipped where it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import redis
import trio

from tests.test_ops_support import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None and not Path(REDIS_SERVER).exists(),
    reason="redis-server is not installed (apt-get install -y redis-server)",
)


@attrs.define
class RedisServer:
    port: int
    directory: Path
    password: str | None
    process: trio.Process | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    async def start(self) -> None:
        command = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        self.process = await trio.lowlevel.open_process(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with trio.fail_after(10):
            while True:
                try:
                    await trio.to_thread.run_sync(self.client().ping)
                    return
                except redis.exceptions.ConnectionError:
                    await trio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
        self.process = None


@asynccontextmanager
async def redis_server(tmp_path: Path, password: str | None = None) -> AsyncIterator[RedisServer]:
    directory = tmp_path / f"redis-{free_port()}"
    directory.mkdir()
    server = RedisServer(free_port(), directory, password)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
