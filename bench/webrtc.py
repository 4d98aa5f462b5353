"""Terminated WebRTC calls: offer-to-answer time, gateway CPU per call-second, event latency.

One rtgate worker (pinned to the proxy core) serves ``N`` concurrent calls to the mock
model; the client peers (aiortc, ``rtgate.testing.webrtc_peer``) run in this process,
pinned to the load core, so ``/proc/PID/stat`` of the gateway is its CPU alone. Each
call carries Opus both ways all the time (a peer's microphone sends silence between
tones, rtgate's track sends silence between replies, as browsers and rtgate do); every
2.5 s a peer speaks a 0.6 s tone, the mock model's VAD ends the turn and it answers with
1 s of audio.

Measured per round of ``N`` calls:

* offer to answer: the ``POST /v1/realtime/calls`` round trip on loopback (SDP parse,
  session admission and dial, aiortc's remote description, answer and ICE gathering);
* gateway CPU seconds per second of two-way call audio (user + system, all threads);
* event latency: every 250 ms each peer sends ``session.update`` on its data channel and
  times the ``session.updated`` that comes back: both thread hops (asyncio to trio and
  back), the translator and both SCTP stacks. "Added" is the round's p99 minus the 1-call
  p50: what load adds to every event and, by the same hops, to every audio batch.

    .venv/bin/python bench/webrtc.py --calls 1,5,10,20,30 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import LOAD_CORE, cpu_count, rtgate
from rtgate.testing.webrtc_peer import ClientPeer

CONFIG = """\
model_list:
  - model_name: mock-realtime
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 1000
rtgate:
  host: 127.0.0.1
  log_level: warning
  limits:
    max_sessions: 1000
  webrtc:
    max_calls: 1000
    idle_timeout: 20
"""
TICK = os.sysconf("SC_CLK_TCK")
PROBE_INTERVAL = 0.25
SPEAK_EVERY = 2.5


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def post_offer(port: int, sdp: str) -> tuple[int, str, str]:
    """(status, body, call id) of one ``POST /v1/realtime/calls`` on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = sdp.encode()
    head = (
        "POST /v1/realtime/calls?model=mock-realtime HTTP/1.1\r\nHost: rtgate\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    data = await reader.read()
    writer.close()
    raw_head, _, answer = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    location = {k.lower(): v for k, v in headers.items()}.get("location", "")
    return int(lines[0].split()[1]), answer.decode(), location.rsplit("/", 1)[-1]


class Probe:
    """Times ``session.update`` -> ``session.updated`` on one call's data channel."""

    def __init__(self) -> None:
        self.sent: float | None = None
        self.samples: list[float] = []
        self.recording = False

    def on_event(self, event: dict[str, object]) -> None:
        if event.get("type") == "session.updated" and self.sent is not None:
            if self.recording:
                self.samples.append(time.perf_counter() - self.sent)
            self.sent = None


async def one_round(port: int, pid: int, calls: int, seconds: float) -> dict[str, Any]:
    probes = [Probe() for _ in range(calls)]
    peers = [ClientPeer(on_event=p.on_event, measure_level=False) for p in probes]
    answer_ms: list[float] = []

    async def place(peer: ClientPeer) -> None:
        offer = await peer.offer()
        started = time.perf_counter()
        status, answer, _ = await post_offer(port, offer)
        answer_ms.append((time.perf_counter() - started) * 1000)
        if status != 201:
            raise RuntimeError(f"offer refused: {status} {answer[:200]}")
        await peer.accept(answer)

    # Calls arrive a few at a time, as a front end would place them.
    for start in range(0, len(peers), 5):
        await asyncio.gather(*(place(p) for p in peers[start : start + 5]))
    deadline = time.monotonic() + 30
    while not all(p.channel_open and "session.created" in p.types() for p in peers):
        if time.monotonic() > deadline:
            raise RuntimeError("calls did not connect within 30 s")
        await asyncio.sleep(0.05)

    stop = asyncio.Event()

    async def converse(i: int, peer: ClientPeer, probe: Probe) -> None:
        await asyncio.sleep(SPEAK_EVERY * i / calls)  # staggered turns
        next_speak = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_speak:
                peer.speak(0.6)
                next_speak = now + SPEAK_EVERY
            if probe.sent is None:
                probe.sent = time.perf_counter()
                peer.send_event({"type": "session.update", "session": {"type": "realtime"}})
            await asyncio.sleep(PROBE_INTERVAL)

    tasks = [
        asyncio.create_task(converse(i, *pair))
        for i, pair in enumerate(zip(peers, probes, strict=True))
    ]
    await asyncio.sleep(3)  # every call has had a turn before measuring
    for probe in probes:
        probe.recording = True
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    frames0 = sum(p.frames_received for p in peers)
    await asyncio.sleep(seconds)
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    frames1 = sum(p.frames_received for p in peers)
    stop.set()
    await asyncio.gather(*tasks)
    responses = sum(p.types().count("response.done") for p in peers)
    await asyncio.gather(*(p.close() for p in peers))
    await asyncio.sleep(1.5)  # the gateway tears the calls down before the next round

    latency = sorted(s * 1000 for probe in probes for s in probe.samples)
    wall = wall1 - wall0
    return {
        "calls": calls,
        "answer_ms_p50": statistics.median(answer_ms),
        "answer_ms_p99": _pct(sorted(answer_ms), 0.99),
        "cpu_per_call_second": (cpu1 - cpu0) / (wall * calls),
        "gateway_cpu_share": (cpu1 - cpu0) / wall,
        "event_ms_p50": statistics.median(latency) if latency else None,
        "event_ms_p99": _pct(latency, 0.99) if latency else None,
        "event_samples": len(latency),
        "frames_per_call_second": (frames1 - frames0) / (wall * calls),
        "responses": responses,
    }


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,5,10,20")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if cpu_count() > 1:
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # the peers stay off the gateway's core
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rtgate-bench-webrtc-") as tmp:
        with rtgate(Path(tmp), 0, CONFIG) as (port, pid):
            for calls in (int(n) for n in args.calls.split(",")):
                result = asyncio.run(one_round(port, pid, calls, args.seconds))
                rounds.append(result)
                print(json.dumps(result), flush=True)
    base = rounds[0]["event_ms_p50"] if rounds and rounds[0]["calls"] == 1 else None
    print("\n| calls | answer p50 / p99 ms | gateway CPU-s per call-s | gateway core used |"
          " event p50 / p99 ms | added p99 ms | peer frames/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rounds:
        added = r["event_ms_p99"] - base if base is not None and r["event_ms_p99"] else None
        print(
            f"| {r['calls']} | {r['answer_ms_p50']:.1f} / {r['answer_ms_p99']:.1f} |"
            f" {r['cpu_per_call_second']:.4f} | {r['gateway_cpu_share'] * 100:.0f} % |"
            f" {r['event_ms_p50']:.1f} / {r['event_ms_p99']:.1f} |"
            f" {'' if added is None else f'{added:.1f}'} | {r['frames_per_call_second']:.0f} |"
        )


if __name__ == "__main__":
    main()
