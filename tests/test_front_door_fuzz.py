"""Fuzz the front door: any request head gets exactly one HTTP answer or a clean close.

Hypothesis writes heads by hand (header counts, line lengths, bodies on
upgrades, odd line endings, methods, paths) and sends each on a fresh raw
socket to one ``rtgate serve`` child process; its log must hold no ERROR and
no traceback afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_ops_support import MASTER, free_port, mock_config

DEADLINE = 5.0
"""Seconds one example may take, from connect to the answer's end."""


@pytest.fixture(scope="module")
def gateway_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """One gateway child for every example; yields (port, its log)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    config_path = tmp / "config.yaml"
    config_path.touch(mode=0o600)
    config_path.write_text(mock_config(port))
    log_path = tmp / "rtgate.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env.pop("RTGATE_SUPERVISOR_PID", None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "rtgate", "serve", "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "rtgate did not start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield port, log_path
    finally:
        process.kill()
        process.wait(timeout=10)


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=12)  # fmt: skip
METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE", "CONNECT", "PRI"]) | TOKEN | st.just("G ET")  # fmt: skip
PATHS = (
    st.sampled_from(
        ["/v1/realtime?model=m", "/realtime?model=m", "/openai/realtime?deployment=m",
         "/v1/realtime", "/health/liveliness", "/health/readiness", "/metrics", "/admin/pool",
         "/", "*", "/nope", "http://127.0.0.1/v1/realtime?model=m", "/v1/realtime/?model=m"]
    )
    | st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
    | st.binary(min_size=1, max_size=20).map(lambda b: b.decode("latin-1"))
)  # fmt: skip
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""])
ENDINGS = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r", "\r\r\n", "\n\r"])
LONG_LINES = st.sampled_from([0, 100, 8000, 8182, 8190, 8191, 9000, 20000])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    upgrade = draw(st.booleans())
    headers: list[tuple[str, str]] = [("Host", "127.0.0.1")]
    if upgrade:
        headers += [
            ("Upgrade", draw(st.sampled_from(["websocket", "WebSocket", "h2c"]))),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", draw(st.sampled_from(["dGhlIHNhbXBsZSBub25jZQ==", "short"]))),
            ("Sec-WebSocket-Version", draw(st.sampled_from(["13", "8"]))),
        ]
    if draw(st.booleans()):
        key = draw(st.sampled_from([MASTER, "wrong-key", ""]))
        headers.append(
            draw(st.sampled_from([("Authorization", f"Bearer {key}"), ("api-key", key)]))
        )
        if draw(st.booleans()):  # a second credential
            headers.append(("api-key", key))
    headers += [
        (f"X-Pad-{i}", "v" * draw(st.integers(0, 8)))
        for i in range(draw(st.sampled_from([0, 1, 5, 120, 123, 124, 127, 128, 129, 200])))
    ]
    long_line = draw(LONG_LINES)
    if long_line:
        headers.append(("X-Long", "a" * long_line))
    headers += draw(st.lists(st.tuples(TOKEN, st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)), max_size=3))  # fmt: skip
    body = draw(st.sampled_from([b"", b"", b"hello", b"\x81\x85" + b"x" * 9]))
    framing = draw(st.sampled_from(["none", "length", "length", "chunked", "both", "double"]))
    if framing == "length" or framing == "both":
        headers.append(("Content-Length", str(len(body))))
    if framing == "double":
        headers += [("Content-Length", str(len(body))), ("Content-Length", "1")]
    if framing in ("chunked", "both"):
        headers.append(("Transfer-Encoding", "chunked"))
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
    ending = draw(ENDINGS)
    lines = [f"{draw(METHODS)} {draw(PATHS)} {draw(VERSIONS)}".rstrip(" ")]
    lines += [f"{name}: {value}" for name, value in headers]
    if draw(st.booleans()):
        lines = [line + (ending if draw(st.integers(0, 9)) else "\n") for line in lines]
        text = "".join(lines) + ending
    else:
        text = ending.join(lines) + ending + ending
    return text.encode("latin-1") + body


def answer_of(port: int, head: bytes) -> tuple[str, bytes]:
    """Send ``head``; ("closed", b"") for a clean close, else ("answer", bytes) up to its end.

    After one complete response, any further byte is an error (a second answer).
    """
    deadline = time.monotonic() + DEADLINE
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        client = h11.Connection(h11.CLIENT)
        method = head.split(b" ", 1)[0] if head.startswith(b"HEAD ") else b"GET"
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        received = bytearray()
        complete = False
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete answer in {DEADLINE}s: {bytes(received[:200])!r}"
            sock.settimeout(0.1 if complete else remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                assert complete, f"no complete answer in {DEADLINE}s: {bytes(received[:200])!r}"
                return "answer", bytes(received)  # kept alive, nothing more: one answer
            except ConnectionResetError:
                raise AssertionError(f"reset after {bytes(received[:200])!r}") from None
            if not data:
                if not received:
                    return "closed", b""
                assert complete, f"EOF inside an answer: {bytes(received[:300])!r}"
                return "answer", bytes(received)
            assert not complete, (
                f"bytes after the answer: {bytes(received[:300])!r} + {data[:100]!r}"
            )
            received += data
            if received.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in received:
                return "answer", bytes(received)  # a session opened (the master key): one answer
            client.receive_data(data)
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.InformationalResponse):
                    raise AssertionError(f"informational answer: {event!r}")
                if isinstance(event, h11.EndOfMessage):
                    complete = True
                    break


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(head=heads())
def test_every_head_gets_one_answer_or_a_clean_close(
    gateway_port: tuple[int, Path], head: bytes
) -> None:
    port, log_path = gateway_port
    kind, raw = answer_of(port, head)
    if kind == "answer":
        assert raw.startswith(b"HTTP/1.1 "), raw[:100]
    log = log_path.read_text(errors="replace")
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
