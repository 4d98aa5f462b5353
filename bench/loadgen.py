"""Load generator: realistic realtime audio sessions against a WebSocket endpoint.

Each session streams what a voice client streams: a 20 ms PCM16 24 kHz chunk
(960 bytes, base64 in an ``input_audio_buffer.append`` event) 50 times a
second, and reads the upstream's ``response.output_audio.delta`` events back.
Every 100 ms it also sends a latency probe (an empty append whose
``event_id`` is ``probe_N``; :mod:`bench.fake_upstream` answers with a delta
whose ``item_id`` is ``probe_N``) and times the round trip.

The generator is one epoll loop over non-blocking sockets with pre-masked
append frames, so it costs a few microseconds per message and is not the
bottleneck of what it measures. Sessions are spread evenly over the 20 ms
period (no thundering herd) and the loop records how late it sends, so a
saturated generator shows up in the report instead of as gateway latency.

Besides load it measures, for a process id: CPU seconds (``/proc/PID/stat``)
over the window, RSS (``/proc/PID/status``), RSS per idle session, and
sequential session setups per second.

``python bench/loadgen.py --url ws://127.0.0.1:4000/v1/realtime?model=M --sessions 50``
prints one JSON report; without ``--url`` it starts a fake upstream and a
pinned gateway itself (see :mod:`bench.run_all`). To spread the load over
several cores, run several generators with ``--sync`` (each prints ``ready``
once its sessions are open, then starts sending at the CLOCK_MONOTONIC
nanosecond it reads on stdin) and ``--samples`` (raw round trips in the
report, so their percentiles can be merged).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.wsframes import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    ProtocolError,
    accept_for,
    close_payload,
    encode,
    new_key,
    parse_head,
    send_buffered,
)

CHUNK_MS = 20
SAMPLE_RATE = 24_000
CHUNK_BYTES = SAMPLE_RATE * 2 * CHUNK_MS // 1000  # PCM16 mono: 960 bytes
PROBE_EVERY = 5  # appends per probe: every 100 ms at 50 appends/s
MASK = b"\x37\xfa\x21\x3d"  # fixed mask: frames are pre-masked once (RFC 6455 allows any key)
PROBE_PREFIX = b'{"type":"input_audio_buffer.append","event_id":"probe_'
PROBE_ECHO = b'"probe_'  # the item id; proxies that re-serialise JSON may add spaces around it
# Through a translator (Gemini) only audio survives, so the probe *is* the audio: base64
# text that names the probe ("PRB" + 13 digits, 12 bytes of PCM16) and comes back as a delta.
AUDIO_PROBE_PREFIX = b'{"type":"input_audio_buffer.append","audio":"PRB'
AUDIO_PROBE_ECHO = b'"PRB'
SESSION_UPDATE = (
    b'{"type":"session.update","session":{"type":"realtime","output_modalities":["audio"],'
    b'"audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"turn_detection":null},'
    b'"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"alloy"}}}}'
)
BETA_SESSION_UPDATE = (
    b'{"type":"session.update","session":{"modalities":["audio","text"],'
    b'"input_audio_format":"pcm16","output_audio_format":"pcm16","voice":"alloy",'
    b'"turn_detection":null}}'
)


def audio_chunk() -> bytes:
    """20 ms of a 440 Hz tone, PCM16 little-endian (realistic entropy for base64)."""
    samples = bytearray()
    for i in range(CHUNK_BYTES // 2):
        value = int(8000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE))
        samples += value.to_bytes(2, "little", signed=True)
    return bytes(samples)


APPEND = b'{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(audio_chunk()) + b'"}'
APPEND_FRAME = encode(APPEND, TEXT, MASK)


# -- /proc readings ----------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds the processes have run (all threads).

    From the scheduler's nanosecond run time (``/proc/PID/task/TID/schedstat``),
    not ``utime``/``stime``: those are sampled at clock ticks, which misprices a
    process that wakes for 50 microseconds a few hundred times a second.
    Falls back to ``/proc/PID/stat`` where schedstat is missing.
    """
    total = 0.0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                        total += int(f.read().split()[0]) / 1e9
                except (FileNotFoundError, ProcessLookupError):
                    continue  # the thread ended meanwhile
        except FileNotFoundError:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


# -- one WebSocket client connection -------------------------------------------------


class Target:
    """Where sessions go: host, port, request target, extra upgrade headers."""

    def __init__(
        self,
        url: str,
        *,
        beta: bool = False,
        headers: Sequence[tuple[str, str]] = (),
        audio_probes: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None:
            raise ValueError(f"need a ws:// URL, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.beta = beta
        self.headers = tuple(headers)
        self.audio_probes = audio_probes
        """Probes carried as audio (for translated sessions, e.g. ``gemini/``)."""

    def request(self, key: bytes) -> bytes:
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.beta:
            lines.append("OpenAI-Beta: realtime=v1")
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Client:
    """A connected session socket (blocking during setup, non-blocking under load)."""

    __slots__ = ("out", "probe_seq", "probes", "reader", "received", "sent", "sock", "ticks")

    def __init__(self, sock: socket.socket, reader: FrameReader) -> None:
        self.sock = sock
        self.reader = reader
        self.out = b""
        self.sent = 0
        self.received = 0
        self.ticks = 0
        self.probe_seq = 0
        self.probes: dict[int, int] = {}


def connect(target: Target, timeout: float = 10.0) -> tuple[Client, list[tuple[int, bytes]]]:
    """TCP connect and WebSocket upgrade; returns the client and frames already read."""
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = new_key()
    sock.sendall(target.request(key))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            sock.close()
            raise ConnectionError(f"{target.url}: closed during the upgrade")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    if b" 101 " not in status + b" " or headers.get(b"sec-websocket-accept") != accept_for(key):
        sock.close()
        raise ConnectionError(f"{target.url}: upgrade refused: {status.decode(errors='replace')}")
    reader = FrameReader()
    return Client(sock, reader), reader.feed(rest) if rest else []


def first_event(client: Client, frames: list[tuple[int, bytes]]) -> bytes:
    """Block until the session's first text event (``session.created``)."""
    while True:
        for opcode, payload in frames:
            if opcode == TEXT:
                return payload
            if opcode == CLOSE:
                raise ConnectionError(f"closed before the first event: {payload[2:]!r}")
        data = client.sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the first event")
        frames = client.reader.feed(data)


def close_client(client: Client, wait: float = 2.0) -> None:
    """Send a close frame, wait (bounded) for the peer's close or EOF, close the socket."""
    sock = client.sock
    try:
        sock.setblocking(True)
        sock.settimeout(wait)
        sock.sendall(client.out + encode(close_payload(1000), CLOSE, MASK))
        client.out = b""
        deadline = time.monotonic() + wait
        done = False
        while not done and time.monotonic() < deadline:
            data = sock.recv(262144)
            if not data:
                break
            for opcode, _ in client.reader.feed(data):
                if opcode == CLOSE:
                    done = True
    except (OSError, ProtocolError):
        pass
    finally:
        sock.close()


def open_sessions(target: Target, count: int) -> list[Client]:
    clients: list[Client] = []
    for _ in range(count):
        client, frames = connect(target)
        first_event(client, frames)
        clients.append(client)
    return clients


# -- measurements ----------------------------------------------------------------------


def setup_rate(target: Target, count: int, pids: Sequence[int] = ()) -> dict[str, Any]:
    """``count`` sequential sessions: upgrade, first event, close. Rate and CPU per setup."""
    cpu0 = cpu_seconds(pids) if pids else 0.0
    started = time.perf_counter()
    times: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        client, frames = connect(target)
        first_event(client, frames)
        times.append(time.perf_counter() - t0)
        close_client(client)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pids) - cpu0 if pids else None
    return {
        "setups": count,
        "seconds": round(elapsed, 3),
        "setups_per_s": round(count / elapsed, 1),
        "setup_ms_p50": round(1000 * (percentile(times, 50) or 0), 3),
        "setup_ms_p99": round(1000 * (percentile(times, 99) or 0), 3),
        "cpu_ms_per_setup": round(1000 * cpu / count, 3) if cpu is not None else None,
    }


def idle_memory(
    target: Target, count: int, pids: Sequence[int], settle: float = 1.0
) -> dict[str, Any]:
    """RSS before and after opening ``count`` idle sessions."""
    before = rss_bytes(pids)
    clients = open_sessions(target, count)
    time.sleep(settle)
    after = rss_bytes(pids)
    for client in clients:
        close_client(client, wait=0.5)
    return {
        "idle_sessions": count,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "rss_per_idle_session_kib": round((after - before) / count / 1024, 1),
    }


def run_load(
    target: Target,
    sessions: int,
    seconds: float,
    *,
    warmup: float = 1.0,
    pids: Sequence[int] = (),
    other_pids: Sequence[int] = (),
    rss_every: float = 0.0,
    wait_start: Callable[[], int] | None = None,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Stream audio on ``sessions`` sessions; measure over ``seconds`` after ``warmup``.

    ``pids``: the process(es) under test (CPU, RSS); ``other_pids``: processes
    whose CPU is reported for context (the fake upstream). ``wait_start``,
    called once every session is open, returns the ``time.monotonic_ns()`` at
    which to start sending (so several generator processes start together);
    ``keep_samples`` adds every measured round trip to the report.
    """
    clients = open_sessions(target, sessions)
    update = encode(BETA_SESSION_UPDATE if target.beta else SESSION_UPDATE, TEXT, MASK)
    ep = select.epoll()
    by_fd: dict[int, Client] = {}
    for client in clients:
        client.sock.setblocking(False)
        by_fd[client.sock.fileno()] = client
        ep.register(client.sock.fileno(), select.EPOLLIN)
        _send(ep, client, update)

    period = CHUNK_MS * 1_000_000
    now = time.perf_counter_ns()
    # Session i first sends at base + i*period/n: sends are spread evenly over each 20 ms.
    base = now + 2_000_000
    if wait_start is not None:
        start = wait_start()
        base = start + time.perf_counter_ns() - time.monotonic_ns()
    due = [base + i * period // sessions for i in range(sessions)]
    measure_from = base + int(warmup * 1e9)
    measure_to = measure_from + int(seconds * 1e9)
    latencies: list[int] = []
    lateness: list[int] = []
    sent = received = 0
    cpu0 = other0 = self0 = 0.0
    rss_series: list[tuple[float, int]] = []
    next_rss = measure_from
    measuring = False
    k = 0
    errors = 0
    perf = time.perf_counter_ns
    audio_probes = target.audio_probes

    while True:
        now = perf()
        if not measuring and now >= measure_from:
            measuring = True
            cpu0 = cpu_seconds(pids) if pids else 0.0
            other0 = cpu_seconds(other_pids) if other_pids else 0.0
            self0 = time.process_time()
            sent = sum(c.sent for c in clients)
            received = sum(c.received for c in clients)
        if measuring and now >= measure_to:
            break
        if measuring and rss_every and now >= next_rss and pids:
            rss_series.append((round((now - measure_from) / 1e9, 2), rss_bytes(pids)))
            next_rss += int(rss_every * 1e9)
        # Send every append due within the next millisecond (epoll sleeps in whole
        # milliseconds; spinning would steal the fake upstream's core). A late
        # loop catches up, and the lateness it records says so.
        while now + 1_000_000 >= due[k]:
            client = clients[k]
            if measuring and now > due[k]:
                lateness.append(now - due[k])
            client.ticks += 1
            if client.ticks % PROBE_EVERY == 0:
                client.probe_seq += 1
                seq = client.probe_seq
                client.probes[seq] = perf()
                if audio_probes:
                    probe = AUDIO_PROBE_PREFIX + b"%013d" % seq + b'"}'
                else:
                    probe = PROBE_PREFIX + str(seq).encode() + b'","audio":""}'
                _send(ep, client, APPEND_FRAME + encode(probe, TEXT, MASK))
                client.sent += 2
            else:
                _send(ep, client, APPEND_FRAME)
                client.sent += 1
            due[k] += period
            k = k + 1 if k + 1 < sessions else 0
        timeout = max(0, (due[k] - perf()) // 1_000_000) / 1000
        for fd, mask in ep.poll(timeout):
            client = by_fd[fd]
            if mask & select.EPOLLOUT:
                _send(ep, client, b"")
            if not mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError("the gateway closed a session under load")
            arrived = perf()
            for opcode, payload in client.reader.feed(data):
                if opcode == TEXT:
                    client.received += 1
                    if audio_probes:
                        at = payload.find(AUDIO_PROBE_ECHO)
                        if at >= 0:
                            at += len(AUDIO_PROBE_ECHO)
                    else:
                        at = payload.find(PROBE_ECHO, 0, 160)
                        if at >= 0:
                            at += len(PROBE_ECHO)
                    if at >= 0:
                        seq = int(payload[at : payload.index(b'"', at)])
                        sent_at = client.probes.pop(seq, None)
                        if sent_at is not None and measuring:
                            latencies.append(arrived - sent_at)
                    elif payload.startswith(b'{"type":"error"'):
                        errors += 1
                elif opcode == PING:
                    _send(ep, client, encode(payload, PONG, MASK))
                elif opcode == CLOSE:
                    raise ConnectionError(f"session closed under load: {payload!r}")

    wall = (now - measure_from) / 1e9
    cpu = cpu_seconds(pids) - cpu0 if pids else None
    other = cpu_seconds(other_pids) - other0 if other_pids else None
    self_cpu = time.process_time() - self0
    rss_end = rss_bytes(pids) if pids else None
    sent = sum(c.sent for c in clients) - sent
    received = sum(c.received for c in clients) - received
    ep.close()
    for client in clients:
        close_client(client, wait=1.0)
    relayed = sent + received
    lost = sum(len(c.probes) for c in clients)
    ms = [v / 1e6 for v in latencies]
    late_ms = [v / 1e6 for v in lateness]
    late_ms += [0.0] * max(0, sessions * int(seconds * 1000 / CHUNK_MS) - len(late_ms))
    report: dict[str, object] = {
        "url": target.url,
        "beta": target.beta,
        "sessions": sessions,
        "seconds": round(wall, 2),
        "messages_sent": sent,
        "messages_received": received,
        "relayed_messages_in_window": round(relayed),
        "messages_per_s": round(relayed / wall) if wall else 0,
        "probes": len(ms),
        "probes_unanswered": lost,
        "error_events": errors,
        "latency_ms_p50": _r(percentile(ms, 50)),
        "latency_ms_p99": _r(percentile(ms, 99)),
        "latency_ms_max": _r(max(ms) if ms else None),
        "send_lateness_ms_p99": _r(percentile(late_ms, 99)),
        "loadgen_cpu_fraction": round(self_cpu / wall, 3) if wall else None,
    }
    if cpu is not None:
        report["cpu_seconds"] = round(cpu, 3)
        report["cpu_fraction"] = round(cpu / wall, 3) if wall else None
        report["cpu_s_per_1000_messages"] = round(1000 * cpu / relayed, 4) if relayed else None
    if other is not None:
        report["upstream_cpu_fraction"] = round(other / wall, 3) if wall else None
    if rss_end is not None:
        report["rss_end_mb"] = round(rss_end / 2**20, 1)
    if rss_series:
        report["rss_mb_series"] = [(t, round(b / 2**20, 2)) for t, b in rss_series]
    if keep_samples:
        report["latency_samples_ms"] = [round(v, 4) for v in ms]
    return report


def _send(ep: select.epoll, client: Client, data: bytes) -> None:
    client.out = send_buffered(ep, client.sock, client.out, data)


def _start_from_stdin() -> int:
    """``--sync``: say ``ready`` on stdout, then read the start time (monotonic ns) from stdin."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line.strip():
        raise SystemExit("--sync: no start time on stdin")
    return int(line)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rtgate load generator (JSON report on stdout)")
    parser.add_argument("--url", help="ws:// realtime URL; omitted: start fake upstream + gateway")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--beta", action="store_true", help="connect as a beta-protocol client")
    parser.add_argument(
        "--gemini", action="store_true", help="without --url: relay through the gemini/ deployment"
    )
    parser.add_argument("--pid", type=int, action="append", default=[], help="process to measure")
    parser.add_argument("--setups", type=int, default=0, help="measure N sequential setups instead")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="print 'ready' once the sessions are open; start at the monotonic ns read on stdin",
    )
    parser.add_argument(
        "--samples", action="store_true", help="include every round trip (ms) in the report"
    )
    args = parser.parse_args(argv)
    if args.url is None:
        from bench.stage_proxies import standalone

        report = standalone(args.sessions, args.seconds, beta=args.beta, gemini=args.gemini)
    elif args.setups:
        report = setup_rate(Target(args.url, beta=args.beta), args.setups, args.pid)
    else:
        report = run_load(
            Target(args.url, beta=args.beta),
            args.sessions,
            args.seconds,
            warmup=args.warmup,
            pids=args.pid,
            wait_start=_start_from_stdin if args.sync else None,
            keep_samples=args.samples,
        )
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
