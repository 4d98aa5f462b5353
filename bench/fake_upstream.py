"""A fast fake OpenAI Realtime upstream for benchmarks (one epoll loop, no framework).

It must cost much less per message than the gateway under test, so it is a
plain non-blocking socket loop around :mod:`bench.wsframes`: each read is
parsed whole and every reply to it leaves in one ``send`` (batching).

Behaviour (GA shape, enough for a realistic audio session):

* upgrade on any path, answer 101, then ``session.created``;
* ``input_audio_buffer.append`` -> ``response.output_audio.delta`` carrying the
  same base64 audio (the echo a load generator measures);
* an append whose ``event_id`` is ``probe_N`` (a latency probe, empty audio)
  -> a delta whose ``item_id`` is ``probe_N`` (so proxies that drop unknown
  event types still carry probes);
* ``session.update`` -> ``session.updated``; other events are ignored;
* pings answered, close echoed.

On a Gemini Live path (``...BidiGenerateContent``) it speaks Gemini instead,
in binary frames as Gemini does: nothing until ``setup``, then
``setupComplete``; ``realtimeInput.audio`` -> ``serverContent.modelTurn`` with
the same base64 ``inlineData`` (probes are audio too, so they come back the
same way); other messages (``activityStart``...) are ignored.

``--handshake-delay S`` answers each upgrade S seconds late (a far provider's
TCP + TLS + upgrade), without blocking the loop (``bench/warmstart.py``).

``--tls-cert PEM`` serves ``wss://`` as every real provider does (key and
certificate chain in one file), by OpenSSL on the same non-blocking sockets.

``python -m bench.fake_upstream --port 0`` prints the bound port on stdout.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import itertools
import select
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.wsframes import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    ProtocolError,
    accept_for,
    encode,
    parse_head,
    send_buffered,
)

APPEND_PREFIX = b'{"type":"input_audio_buffer.append"'
PROBE_ID = b'"event_id":"probe_'
PROBE_HEAD = (
    b'{"type":"response.output_audio.delta","event_id":"event_bench","response_id":"resp_bench",'
    b'"item_id":"'
)
PROBE_TAIL = b'","output_index":0,"content_index":0,"delta":""}'
AUDIO_KEY = b'"audio":"'
DELTA_HEAD = (
    b'{"type":"response.output_audio.delta","event_id":"event_bench","response_id":"resp_bench",'
    b'"item_id":"item_bench","output_index":0,"content_index":0,"delta":"'
)
DELTA_TAIL = b'"}'
SESSION_CREATED = (
    b'{"type":"session.created","event_id":"event_bench0","session":{"type":"realtime",'
    b'"object":"realtime.session","id":"sess_bench","model":"gpt-realtime",'
    b'"output_modalities":["audio"],"audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},'
    b'"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"alloy"}}}}'
)
SESSION_UPDATED = SESSION_CREATED.replace(b"session.created", b"session.updated", 1)
READ_SIZE = 256 * 1024
GEMINI_PATH = b"BidiGenerateContent"
GEMINI_SETUP = b'{"setup"'
GEMINI_AUDIO = b'"realtimeInput":{"audio"'
GEMINI_DATA = b'"data":"'
SETUP_COMPLETE = b'{"setupComplete":{}}'
MODEL_TURN_HEAD = (
    b'{"serverContent":{"modelTurn":{"role":"model","parts":[{"inlineData":'
    b'{"mimeType":"audio/pcm;rate=24000","data":"'
)
MODEL_TURN_TAIL = b'"}}]}}}'


class _Conn:
    __slots__ = ("gemini", "handshaking", "head", "out", "reader", "sock", "upgraded")

    def __init__(self, sock: socket.socket, *, tls: bool = False) -> None:
        self.sock = sock
        self.handshaking = tls
        self.gemini = False
        self.head = b""
        self.upgraded = False
        self.reader = FrameReader()
        self.out = b""


class FakeUpstream:
    """Serve until :meth:`stop`; ``port`` is set once bound."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        handshake_delay: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handshake_delay = handshake_delay
        self.tls = tls
        self._delayed: list[tuple[float, int, _Conn, bytes]] = []
        """Upgrade answers due later: (due, tie-break, connection, bytes)."""
        self._ticket = itertools.count()
        self.listener = socket.create_server((host, port), backlog=1024)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.sessions = 0
        self.frames_in = 0
        self.frames_out = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def serve(self) -> None:
        ep = select.epoll()
        conns: dict[int, _Conn] = {}
        lfd = self.listener.fileno()
        wfd = self._wake_r.fileno()
        ep.register(lfd, select.EPOLLIN)
        ep.register(wfd, select.EPOLLIN)
        try:
            while not self._stop.is_set():
                timeout = 1.0
                if self._delayed:
                    timeout = min(max(self._delayed[0][0] - time.monotonic(), 0.0), 1.0)
                for fd, mask in ep.poll(timeout):
                    if fd == lfd:
                        self._accept(ep, conns)
                    elif fd == wfd:
                        continue
                    else:
                        conn = conns.get(fd)
                        if conn is None:
                            continue
                        if conn.handshaking:
                            if not self._handshake(ep, conn):
                                self._drop(ep, conns, conn)
                            if conn.handshaking or conns.get(fd) is not conn:
                                continue
                        if mask & select.EPOLLOUT:
                            self._write(ep, conn, b"")
                        readable = mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR)
                        if readable and not self._read(ep, conn):
                            self._drop(ep, conns, conn)
                while self._delayed and self._delayed[0][0] <= time.monotonic():
                    _, _, conn, reply = heapq.heappop(self._delayed)
                    if conns.get(conn.sock.fileno()) is conn:
                        self._write(ep, conn, reply)
        finally:
            for conn in list(conns.values()):
                conn.sock.close()
            ep.close()
            self.listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self, ep: select.epoll, conns: dict[int, _Conn]) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = _Conn(sock, tls=self.tls is not None)
            conns[sock.fileno()] = conn
            ep.register(sock.fileno(), select.EPOLLIN)

    def _handshake(self, ep: select.epoll, conn: _Conn) -> bool:
        """Advance a TLS handshake; False if it failed."""
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            ep.modify(conn.sock.fileno(), select.EPOLLIN)
            return True
        except ssl.SSLWantWriteError:
            ep.modify(conn.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
            return True
        except OSError:
            return False
        conn.handshaking = False
        ep.modify(conn.sock.fileno(), select.EPOLLIN)
        return True

    def _drop(self, ep: select.epoll, conns: dict[int, _Conn], conn: _Conn) -> None:
        fd = conn.sock.fileno()
        conns.pop(fd, None)
        try:
            ep.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def _read(self, ep: select.epoll, conn: _Conn) -> bool:
        try:
            data = conn.sock.recv(READ_SIZE)
            if isinstance(conn.sock, ssl.SSLSocket):
                # The rest of a record OpenSSL already decrypted: epoll cannot see it.
                while data and conn.sock.pending():
                    data += conn.sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            return False
        if not data:
            return False
        if not conn.upgraded:
            conn.head += data
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                return len(conn.head) < 65536
            head, rest = conn.head[: end + 4], conn.head[end + 4 :]
            request_line, headers = parse_head(head)
            conn.gemini = GEMINI_PATH in request_line
            key = headers.get(b"sec-websocket-key")
            if key is None:
                self._write(ep, conn, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return False
            conn.upgraded = True
            self.sessions += 1
            reply = (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_for(key) + b"\r\n\r\n"
            )
            if not conn.gemini:  # Gemini says nothing before the setup
                reply += encode(SESSION_CREATED)
                self.frames_out += 1
            if self.handshake_delay > 0:
                due = time.monotonic() + self.handshake_delay
                heapq.heappush(self._delayed, (due, next(self._ticket), conn, reply))
            else:
                self._write(ep, conn, reply)
            if not rest:
                return True
            data = rest
        try:
            frames = conn.reader.feed(data)
        except ProtocolError:
            return False
        replies: list[bytes] = []
        keep = True
        for opcode, payload in frames:
            if conn.gemini and opcode in (TEXT, BINARY):
                self.frames_in += 1
                if payload.find(GEMINI_AUDIO, 0, 40) >= 0:
                    start = payload.find(GEMINI_DATA) + len(GEMINI_DATA)
                    end = payload.find(b'"', start)
                    reply = MODEL_TURN_HEAD + payload[start:end] + MODEL_TURN_TAIL
                    replies.append(encode(reply, BINARY))
                elif payload.startswith(GEMINI_SETUP):
                    replies.append(encode(SETUP_COMPLETE, BINARY))
            elif opcode == TEXT:
                self.frames_in += 1
                if payload.startswith(APPEND_PREFIX):
                    probe = payload.find(PROBE_ID, 0, 80)
                    if probe >= 0:  # a latency probe: answer with its id as the item id
                        end = payload.find(b'"', probe + len(PROBE_ID))
                        probe_id = payload[probe + len(PROBE_ID) - 6 : end]
                        replies.append(encode(PROBE_HEAD + probe_id + PROBE_TAIL))
                        continue
                    start = payload.find(AUDIO_KEY) + len(AUDIO_KEY)
                    end = payload.find(b'"', start)
                    replies.append(encode(DELTA_HEAD + payload[start:end] + DELTA_TAIL))
                elif payload.find(b'"session.update"', 0, 40) >= 0:
                    replies.append(encode(SESSION_UPDATED))
            elif opcode == PING:
                replies.append(encode(payload, PONG))
            elif opcode == CLOSE:
                replies.append(encode(payload[:2], CLOSE))
                keep = False
        if replies:
            self.frames_out += len(replies)
            self._write(ep, conn, b"".join(replies))
        if not keep:
            try:
                conn.sock.sendall(conn.out)
            except OSError:
                pass
            return False
        return True

    def _write(self, ep: select.epoll, conn: _Conn, data: bytes) -> None:
        try:
            conn.out = send_buffered(ep, conn.sock, conn.out, data)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                conn.out = b""
                return
            raise


def start_in_thread(host: str = "127.0.0.1") -> tuple[FakeUpstream, threading.Thread]:
    """For tests: a fake upstream serving from a daemon thread."""
    server = FakeUpstream(host)
    thread = threading.Thread(target=server.serve, name="bench-fake-upstream", daemon=True)
    thread.start()
    return server, thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--handshake-delay", type=float, default=0.0, help="seconds before each 101 answer"
    )
    parser.add_argument("--tls-cert", help="serve wss://: PEM file with key and certificate chain")
    args = parser.parse_args()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert)
    server = FakeUpstream(args.host, args.port, args.handshake_delay, tls)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    print(server.port, flush=True)
    server.serve()


if __name__ == "__main__":
    main()
