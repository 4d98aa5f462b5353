"""Per-step costs of the relay's hot path (the numbers in docs/hot-path.md).

Times the pure steps a relayed audio frame takes (frame decode, encode and
mask, passthrough translator, counters, the error-event scrub check) with
``timeit``, and the syscalls of one hop on a loopback TCP pair. Run:
``.venv/bin/python bench/microbench.py``. Never part of the test suite.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import time
import timeit
from collections.abc import Callable

import orjson
from websockets.protocol import OPEN, Protocol, Side

from rtgate.net.fastframes import MessageReader, encode_text
from rtgate.session.counters import RelayCounters
from rtgate.session.relay import batch_bytes, scrub_error_events
from rtgate.translate.base import Outbox, Translator
from rtgate.wire import Frame

ROUNDS = 200_000
SYSCALL_ROUNDS = 50_000


def audio_append() -> bytes:
    """A 20 ms PCM16 append at 24 kHz, as SDKs send it."""
    audio = base64.b64encode(os.urandom(960)).decode()
    return orjson.dumps({"type": "input_audio_buffer.append", "audio": audio})


def time_us(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    return timeit.timeit(fn, number=rounds) / rounds * 1e6


def pure_steps(message: bytes) -> dict[str, float]:
    masked = encode_text(message, mask=True)
    reader = MessageReader(Protocol(Side.SERVER, state=OPEN, max_size=1 << 24))
    out = Outbox()
    translator = Translator()
    counters = RelayCounters()
    batch: list[Frame] = [message]

    def passthrough() -> None:
        translator.on_client(message, out, 0.0)
        out.to_upstream.clear()

    return {
        "decode one masked frame (MessageReader.feed)": time_us(lambda: reader.feed(masked)),
        "encode and mask for the upstream": time_us(lambda: encode_text(message, mask=True)),
        "encode unmasked for the client": time_us(lambda: encode_text(message, mask=False)),
        "passthrough translator": time_us(passthrough),
        "error-event scrub check, one batch": time_us(
            lambda: scrub_error_events(batch, ("sk-not-a-key",))
        ),
        "counters and batch size": time_us(
            lambda: counters.add("client_in", 1, batch_bytes(batch))
        ),
    }


def syscalls(message: bytes) -> dict[str, float]:
    """CPU microseconds of one hop's syscalls on loopback TCP (one process)."""
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    with listener, sender, receiver:
        for sock in (sender, receiver):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        out_fd, in_fd = sender.fileno(), receiver.fileno()
        epoll = select.epoll()
        oneshot = select.EPOLLIN | select.EPOLLONESHOT
        epoll.register(in_fd, oneshot)
        start = time.process_time()
        for _ in range(SYSCALL_ROUNDS):
            os.write(out_fd, message)
            os.read(in_fd, 65536)
        write_read = (time.process_time() - start) / SYSCALL_ROUNDS * 1e6
        start = time.process_time()
        for _ in range(SYSCALL_ROUNDS):
            epoll.modify(in_fd, oneshot)
        rearm = (time.process_time() - start) / SYSCALL_ROUNDS * 1e6
        epoll.close()
    return {"write + read, 1.3 KB on loopback": write_read, "epoll_ctl re-arm": rearm}


def main() -> None:
    message = audio_append()
    print(f"message: {len(message)} bytes")
    for label, cost in {**pure_steps(message), **syscalls(message)}.items():
        print(f"{label:48s} {cost:6.2f} us")


if __name__ == "__main__":
    main()
