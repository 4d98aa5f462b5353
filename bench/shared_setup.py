"""Session setups per second and setup latency with shared state, against the local default.

``python bench/shared_setup.py [--sessions 2000] [--concurrency 8] [--rate 300]`` starts
one gateway (the in-process mock provider, so a setup is rtgate's own work: handshake,
auth, admission, pool walk, 101) three times: with in-memory admission (one process),
with the SQLite store of ``--workers`` and with a redis-server it starts on a free
loopback port. Each setup is a WebSocket upgrade answered 101, then closed (which
releases the lease). Two measurements per store:

* capacity: ``--concurrency`` clients back to back (closed loop), setups/s;
* latency at ``--rate`` setups/s offered (open loop: a setup starts every 1/rate s
  whatever the others do), p50/p99 of the upgrade's round trip and the p50 added over
  the local default. At saturation a closed loop's latency is its queue (concurrency
  over throughput), not what shared state adds to a setup, so latency is read below it.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import statistics
import subprocess
import tempfile

import trio

from rtgate.edge.server import freeze_startup_heap
from rtgate.session.shared_state import SHARED_STATE_FILE_ENV
from rtgate.testing.gateway import open_gateway

MASTER = "sk-bench-master-key-0000"
CONFIG = f"""model_list:
  - model_name: m
    litellm_params:
      model: mock/echo
general_settings:
  master_key: {MASTER}
rtgate:
  keys:
    - alias: team
      key: sk-bench-team-key-00000
      max_sessions: 100000
      rpm_limit: 10000000
  limits:
    ping_interval: 0
    max_sessions: 100000
"""
REQUEST = (
    "GET /v1/realtime?model=m HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Authorization: Bearer sk-bench-team-key-00000\r\nSec-WebSocket-Key: {key}\r\n\r\n"
)


async def one_setup(port: int) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        started = trio.current_time()
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(REQUEST.format(key=key).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise RuntimeError("connection closed during the upgrade")
            head += chunk
        elapsed = trio.current_time() - started
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    return elapsed


async def capacity(port: int, sessions: int, concurrency: int) -> float:
    """Setups per second of ``concurrency`` clients back to back."""
    remaining = sessions

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one_setup(port)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return sessions / (trio.current_time() - started)


async def latency_at(port: int, sessions: int, rate: float) -> list[float]:
    """Round trips of ``sessions`` setups started ``rate`` per second (open loop)."""
    latencies: list[float] = []

    async def timed() -> None:
        latencies.append(await one_setup(port))

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(sessions):
            await trio.sleep_until(started + n / rate)
            nursery.start_soon(timed)
    return latencies


async def measure(
    config: str, sessions: int, concurrency: int, rate: float
) -> tuple[float, list[float]]:
    async with open_gateway(config) as gw:
        for _ in range(50):  # warm up (connections, scripts, caches)
            await one_setup(gw.port)
        freeze_startup_heap()  # as `rtgate serve` does once it listens
        most = await capacity(gw.port, sessions, concurrency)
        latencies = await latency_at(gw.port, sessions, rate)
    return most, latencies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(sessions: int, concurrency: int, rate: float) -> None:
    rows: list[tuple[str, float, list[float]]] = []
    most, lat = await measure(CONFIG, sessions, concurrency, rate)
    rows.append(("local (one process)", most, lat))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[SHARED_STATE_FILE_ENV] = os.path.join(tmp, "shared.db")
        try:
            most, lat = await measure(CONFIG, sessions, concurrency, rate)
        finally:
            del os.environ[SHARED_STATE_FILE_ENV]
        rows.append(("host (SQLite, --workers)", most, lat))
        redis_server = shutil.which("redis-server")
        if redis_server is not None:
            port = free_port()
            process = await trio.lowlevel.open_process(
                [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", tmp],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                await trio.sleep(0.5)
                redis_config = CONFIG + (
                    f"router_settings:\n  redis_host: 127.0.0.1\n  redis_port: {port}\n"
                )
                most, lat = await measure(redis_config, sessions, concurrency, rate)
                rows.append(("redis", most, lat))
            finally:
                process.kill()
                await process.wait()
    base_p50 = statistics.median(rows[0][2]) * 1000
    print(f"{sessions} setups: capacity {concurrency} at a time; latency at {rate:g}/s offered")
    print(f"{'state':<26} {'setups/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10}")
    for name, most, lat in rows:
        ordered = sorted(lat)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
        print(f"{name:<26} {most:>9.0f} {p50:>8.2f} {p99:>8.2f} {p50 - base_p50:>+10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=300.0)
    args = parser.parse_args()
    trio.run(main, args.sessions, args.concurrency, args.rate)
