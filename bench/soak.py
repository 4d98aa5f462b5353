"""Bounded soak test: N sessions streaming audio both ways for M minutes through rtgate.

The gateway runs in a child process (this file with ``--serve``) serving the
``mock/`` model with an event-log file sink; inside it a sampler writes RSS,
open fds, trio task count and active sessions every few seconds. The parent
drives the sessions: each streams 100 ms of PCM16 audio every 100 ms, asks for
a spoken reply every 2 s, reads every event, and reconnects every
``--session-seconds`` so many session records are written. At the end it
reports the slopes of RSS, fds and tasks over the second half of the run
(after warm-up), unexpected closes, and whether every session got its record.

``python bench/soak.py --sessions 8 --minutes 1`` (defaults: small). Not part
of the unit suite.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

KEY = "soak-master-key-0000000000"
CHUNK = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz PCM16


def config_text(events_path: Path) -> str:
    return f"""
model_list:
  - model_name: soak
    litellm_params:
      model: mock/soak
      reply_audio_ms: 600
general_settings:
  master_key: {KEY}
rtgate:
  limits:
    ping_interval: 5
    ping_timeout: 10
  event_log:
    flush_interval: 0.2
    sinks:
      - type: file
        path: {events_path}
"""


# -- child: the gateway and its sampler ------------------------------------------------------


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _tasks() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None  # called from inside trio.run
    count, stack = 0, [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def serve_child(config_path: str, port: int, samples_path: str, every: float) -> None:
    from rtgate.edge.configfile import load_config
    from rtgate.edge.server import ServerHandle, serve
    from rtgate.telemetry.eventlog import EventLogger

    config = load_config(config_path).config
    event_log = EventLogger.for_config(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        handle: ServerHandle = await nursery.start(
            lambda task_status: serve(
                config,
                host="127.0.0.1",
                port=port,
                stop=stop,
                event_log=event_log,
                task_status=task_status,
            )
        )

        async def sample() -> None:
            started = trio.current_time()
            with open(samples_path, "a") as out:  # noqa: ASYNC230 (tiny local writes, once per sample)
                while True:
                    row = {
                        "t": round(trio.current_time() - started, 2),
                        "rss": _rss_bytes(),
                        "fds": len(os.listdir("/proc/self/fd")),
                        "tasks": _tasks(),
                        "sessions": handle.gateway.counters.sessions_active,
                    }
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    await trio.sleep(every)

        nursery.start_soon(sample)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        stop.set()
        with trio.move_on_after(10):
            while handle.gateway.counters.sessions_active:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    if event_log is not None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await event_log.aclose()


# -- parent: the sessions ----------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.sessions = 0
        self.unexpected_closes: list[str] = []
        self.responses = 0
        self.audio_deltas = 0
        self.appends = 0
        self.errors = 0


async def one_session(url: str, seconds: float, tally: Tally) -> None:
    headers: list[tuple[bytes, bytes]] = [(b"Authorization", f"Bearer {KEY}".encode())]
    async with open_websocket_url(url, extra_headers=headers) as ws:
        tally.sessions += 1
        first = orjson.loads(await ws.get_message())
        assert first["type"] == "session.created", first
        end = trio.current_time() + seconds
        append = orjson.dumps({"type": "input_audio_buffer.append", "audio": CHUNK}).decode()

        async def send() -> None:
            tick = 0
            while trio.current_time() < end:
                await ws.send_message(append)
                tally.appends += 1
                tick += 1
                if tick % 20 == 0:
                    await ws.send_message('{"type":"input_audio_buffer.commit"}')
                    await ws.send_message('{"type":"response.create"}')
                await trio.sleep(0.1)

        async def receive() -> None:
            while True:
                message = await ws.get_message()
                kind = orjson.loads(message).get("type")
                if kind == "response.output_audio.delta":
                    tally.audio_deltas += 1
                elif kind == "response.done":
                    tally.responses += 1
                elif kind == "error":
                    tally.errors += 1

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await send()
                await trio.sleep(0.5)  # let the last reply drain
                nursery.cancel_scope.cancel()
        except ConnectionClosed as exc:
            tally.unexpected_closes.append(str(exc.reason))
            return
        await ws.aclose(1000, "soak session done")


async def drive(url: str, sessions: int, minutes: float, session_seconds: float) -> Tally:
    tally = Tally()
    deadline = trio.current_time() + minutes * 60

    async def loop(index: int) -> None:
        await trio.sleep(index * 0.05)  # spread the starts
        while trio.current_time() + 1 < deadline:
            left = deadline - trio.current_time()
            try:
                await one_session(url, min(session_seconds, left), tally)
            except (ConnectionClosed, OSError) as exc:
                tally.unexpected_closes.append(repr(exc))
                await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        for i in range(sessions):
            nursery.start_soon(loop, i)
    return tally


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(port: int, timeout: float = 15) -> None:
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rtgate-soak-"))
    events = work / "events.jsonl"
    samples = work / "samples.jsonl"
    config = work / "config.yaml"
    config.touch(mode=0o600)
    config.write_text(config_text(events))
    port = args.port or _free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(config), "--port", str(port),
         "--samples", str(samples), "--sample-every", str(args.sample_every)],
        stderr=open(work / "gateway.log", "wb"),  # noqa: SIM115 (lives as long as the child)
    )  # fmt: skip
    started = time.monotonic()
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=soak"

        async def main() -> Tally:
            await _wait_ready(port)
            return await drive(url, args.sessions, args.minutes, args.session_seconds)

        tally = trio.run(main)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    half = [r for r in rows if r["t"] >= rows[-1]["t"] / 2] if rows else []
    records = (
        [orjson.loads(line) for line in events.read_bytes().splitlines()] if events.exists() else []
    )
    session_records = [r for r in records if r.get("record") == "session"]
    closes: dict[str, int] = {}
    for record in session_records:
        code = str(record.get("close_code"))
        closes[code] = closes.get(code, 0) + 1
    report = {
        "sessions_parallel": args.sessions,
        "minutes": args.minutes,
        "wall_seconds": round(time.monotonic() - started, 1),
        "sessions_opened": tally.sessions,
        "session_records": len(session_records),
        "every_session_recorded": len(session_records) == tally.sessions,
        "session_close_codes": closes,
        "unexpected_closes": len(tally.unexpected_closes),
        "unexpected_close_samples": tally.unexpected_closes[:5],
        "appends_sent": tally.appends,
        "audio_deltas_received": tally.audio_deltas,
        "responses_done": tally.responses,
        "error_events": tally.errors,
        "rss_mb_start_end": [round(rows[0]["rss"] / 2**20, 1), round(rows[-1]["rss"] / 2**20, 1)]
        if rows else None,
        "rss_kb_per_min_second_half": round(_slope([(r["t"], r["rss"]) for r in half]) * 60 / 1024, 1),
        "fds_per_min_second_half": round(_slope([(r["t"], r["fds"]) for r in half]) * 60, 3),
        "tasks_per_min_second_half": round(_slope([(r["t"], r["tasks"]) for r in half]) * 60, 3),
        "fds_min_max": [min(r["fds"] for r in rows), max(r["fds"] for r in rows)] if rows else None,
        "tasks_min_max": [min(r["tasks"] for r in rows), max(r["tasks"] for r in rows)]
        if rows else None,
        "samples": len(rows),
        "workdir": str(work),
    }  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="parallel sessions")
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the run")
    parser.add_argument("--session-seconds", type=float, default=20.0,
                        help="each session reconnects after this long")  # fmt: skip
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--samples", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve_child, args.serve, args.port, args.samples, args.sample_every)
        return
    report = run(args)
    print(json.dumps(report, indent=2))
    ok = report["unexpected_closes"] == 0 and report["every_session_recorded"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
