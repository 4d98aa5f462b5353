"""WsConnection over in-memory streams: batching, fragments, control frames, UTF-8, close;
the frame fast path proven equivalent to the library (Hypothesis)."""

from __future__ import annotations

import itertools
import struct

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Side
from websockets.protocol import Protocol as WsProtocol
from websockets.streams import StreamReader

from rtgate.net.fastframes import MessageReader, encode_text, library_idle
from rtgate.net.wsconn import ConnectionClosed, WsConnection
from rtgate.wire import Binary


def _pair(max_size: int = 1 << 20) -> tuple[WsConnection, trio.abc.Stream, WsProtocol]:
    """A server-side WsConnection and the raw client end with a client protocol to frame bytes."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    server = WsConnection(server_stream, WsProtocol(Side.SERVER, state=OPEN, max_size=max_size))
    client = WsProtocol(Side.CLIENT, state=OPEN, max_size=max_size)
    return server, client_stream, client


async def _push(stream: trio.abc.Stream, proto: WsProtocol) -> None:
    await stream.send_all(b"".join(proto.data_to_send()))


async def test_one_read_returns_every_message() -> None:
    server, stream, client = _pair()
    for i in range(50):
        client.send_text(b'{"type":"input_audio_buffer.append","audio":"%d"}' % i)
    await _push(stream, client)
    with trio.fail_after(2):
        messages = await server.receive()
    assert len(messages) == 50
    assert messages[7] == b'{"type":"input_audio_buffer.append","audio":"7"}'


async def test_fragments_with_ping_between_are_reassembled_and_pong_sent() -> None:
    server, stream, client = _pair()
    client.send_text(b'{"type":', fin=False)
    client.send_ping(b"hi")
    client.send_continuation(b'"x"}', fin=True)
    client.send_binary(b"\x00\x01")
    await _push(stream, client)
    with trio.fail_after(2):
        messages = await server.receive()
    assert messages == [b'{"type":"x"}', Binary(b"\x00\x01")]
    reply = await stream.receive_some(1024)
    client.receive_data(reply)
    pongs = [
        f for f in client.events_received() if isinstance(f, Frame) and f.opcode is Opcode.PONG
    ]
    assert pongs and pongs[0].data == b"hi"


async def test_invalid_utf8_fails_with_1007() -> None:
    server, stream, client = _pair()
    client.send_text(b'{"type":"\xff"}')
    await _push(stream, client)
    with trio.fail_after(2), pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1007 and not info.value.by_peer


async def test_oversized_message_fails_with_1009() -> None:
    server, stream, client = _pair(max_size=1000)
    client.send_text(b"x" * 5000)
    await _push(stream, client)
    with trio.fail_after(2), pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1009


async def test_peer_close_reports_code_and_reason() -> None:
    server, stream, client = _pair()
    client.send_close(4001, "bye now")
    await _push(stream, client)
    with trio.fail_after(2), pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert (info.value.code, info.value.reason, info.value.by_peer) == (4001, "bye now", True)


async def test_abrupt_eof_is_1006() -> None:
    server, stream, _client = _pair()
    await stream.aclose()
    with trio.fail_after(2), pytest.raises(ConnectionClosed) as info:
        await server.receive()
    assert info.value.code == 1006


class _CountingStream(trio.abc.Stream):
    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_send_batches_into_one_write() -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    counting = _CountingStream(server_stream)
    server = WsConnection(counting, WsProtocol(Side.SERVER, state=OPEN))
    await server.send([b'{"a":1}'] * 20 + [Binary(b"\x01")])
    assert counting.writes == 1
    client = WsProtocol(Side.CLIENT, state=OPEN)
    client.receive_data(await client_stream.receive_some(65536))
    assert len(client.events_received()) == 21


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    dialled = await trio.open_tcp_stream("127.0.0.1", port)
    accepted = await listener.accept()
    await listener.aclose()
    return accepted, dialled


async def test_tcp_single_message_sends_keep_order_with_queued_replies() -> None:
    """Over a real socket a one-message send skips the library's write queue; a reply the
    library queued first (a pong) must still reach the wire first, then the messages."""
    with trio.fail_after(5):
        accepted, dialled = await _tcp_pair()
        server = WsConnection(accepted, WsProtocol(Side.SERVER, state=OPEN))
        assert server._raw is not None  # the os.read/os.write path under test
        peer = WsProtocol(Side.CLIENT, state=OPEN)
        await server.send([b'{"n":1}'])
        peer.send_ping(b"hi")
        peer.send_text(b'{"n":2}')
        await dialled.send_all(b"".join(peer.data_to_send()))
        assert await server.receive() == [b'{"n":2}']
        server.protocol.send_ping(b"queued")  # sits in the library's queue
        await server.send([b'{"n":3}'])
        await server.send([b'{"n":4}'])
        received: list[Frame] = []
        while len(received) < 5:
            peer.receive_data(await dialled.receive_some(65536))
            received += peer.events_received()  # type: ignore[arg-type]
        assert [(f.opcode, f.data) for f in received] == [
            (Opcode.TEXT, b'{"n":1}'),
            (Opcode.PONG, b"hi"),
            (Opcode.PING, b"queued"),
            (Opcode.TEXT, b'{"n":3}'),
            (Opcode.TEXT, b'{"n":4}'),
        ]
        await accepted.aclose()
        await dialled.aclose()


async def test_write_timeout_when_peer_never_reads() -> None:
    server_stream, _client_stream = trio.testing.lockstep_stream_pair()
    server = WsConnection(server_stream, WsProtocol(Side.SERVER, state=OPEN), write_timeout=0.2)
    with trio.fail_after(2), pytest.raises(ConnectionClosed) as info:
        await server.send([b"x" * 1000])
    assert info.value.code == 1011


# -- the frame fast path (rtgate.net.fastframes) against the library -----------------------


_MAX = 200  # a small size limit so oversize frames are common


def _raw_frame(b0: int, payload: bytes, *, masked: bool, mask: bytes, lie: int | None) -> bytes:
    """Frame bytes as any peer could send them (``lie`` overrides the declared length)."""
    n = len(payload) if lie is None else lie
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, n)
    if masked:
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + body
    return head + payload


_payloads = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda t: t.encode()),
    st.sampled_from(
        [b"\xff\xfe", b"caf\xc3", b'{"type":"x"}', b"\x03\xe8bye", b"\x03\xe7", b"x" * 300]
    ),
    st.integers(0, 400).map(lambda n: b"a" * n),
)
_first_bytes = st.one_of(
    st.sampled_from([0x81, 0x82, 0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x89, 0x8A, 0x88, 0x09]),
    st.integers(0, 255),
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bool, bytes, list[int], bool]:
    server = draw(st.booleans())
    frames = []
    for _ in range(draw(st.integers(0, 8))):
        masked = server if draw(st.integers(0, 9)) else not server
        lie = draw(st.none() | st.sampled_from([126, 70000, 5]))
        if draw(st.booleans()):
            lie = None
        frames.append(
            _raw_frame(
                draw(_first_bytes),
                draw(_payloads),
                masked=masked,
                mask=draw(st.binary(min_size=4, max_size=4)),
                lie=lie if draw(st.integers(0, 9)) == 0 else None,
            )
        )
    data = b"".join(frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return server, data, cuts, draw(st.booleans())


def _reader(server: bool, *, fast: bool) -> MessageReader:
    side = Side.SERVER if server else Side.CLIENT
    return MessageReader(WsProtocol(side, state=OPEN, max_size=_MAX), fast=fast)


def _unmasked_writes(proto: WsProtocol) -> list[tuple[int, bytes, bool]]:
    """What the protocol queued to send, as (opcode, payload, fin): client masks are random."""
    data = b"".join(proto.data_to_send())
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    while reader.buffer:
        frame = _parse_frame(reader, mask=proto.side is Side.CLIENT)
        out.append((int(frame.opcode), bytes(frame.data), frame.fin))
    return out


def _parse_frame(reader: StreamReader, *, mask: bool) -> Frame:
    """The next whole frame in ``reader``, parsed by the library."""
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        while True:
            next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame


def _state(proto: WsProtocol) -> tuple[object, ...]:
    return (
        proto.state,
        proto.close_rcvd,
        proto.close_sent,
        type(proto.parser_exc),
        proto.eof_sent,
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_streams())
def test_fast_path_matches_the_library_for_any_frames_and_chunking(
    case: tuple[bool, bytes, list[int], bool],
) -> None:
    server, data, cuts, eof = case
    reference = _reader(server, fast=False)
    fast = _reader(server, fast=True)
    bounds = [0, *cuts, len(data)]
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        chunk = data[a:b]
        assert fast.feed(chunk) == reference.feed(chunk)
        assert _unmasked_writes(fast.protocol) == _unmasked_writes(reference.protocol)
        assert _state(fast.protocol) == _state(reference.protocol)
    if eof:
        assert fast.feed_eof() == reference.feed_eof()
        assert _unmasked_writes(fast.protocol) == _unmasked_writes(reference.protocol)
        assert _state(fast.protocol) == _state(reference.protocol)


@given(st.binary(max_size=70000), st.booleans())
@settings(max_examples=60, deadline=None)
def test_encoded_text_frames_parse_back_with_the_library(payload: bytes, mask: bool) -> None:
    reader = StreamReader()
    reader.feed_data(encode_text(payload, mask=mask))
    frame = _parse_frame(reader, mask=mask)
    assert frame.opcode is Opcode.TEXT and frame.fin and bytes(frame.data) == payload
    assert not reader.buffer


def test_fast_path_resumes_after_a_control_frame() -> None:
    reader = _reader(True, fast=True)
    ping = _raw_frame(0x89, b"hi", masked=True, mask=b"abcd", lie=None)
    text = _raw_frame(0x81, b"hello", masked=True, mask=b"wxyz", lie=None)
    assert reader.feed(ping + text[:3]) == []
    assert library_idle(reader.protocol) is False  # the library holds half a frame
    assert reader.feed(text[3:]) == [b"hello"]
    assert library_idle(reader.protocol)
    assert reader.feed(text + text) == [b"hello", b"hello"]
    assert not reader._library  # back on the fast path


@pytest.mark.parametrize("code", [1005, 1006, 1015])
async def test_close_with_a_code_no_frame_may_carry_closes_the_socket(code: int) -> None:
    # 1005/1006/1015 only describe a close (RFC 6455 7.4.1); sending one is a protocol error.
    # A client that stopped answering pings ends with 1006: its socket is closed, nothing raised.
    server, stream, _client = _pair()
    with trio.fail_after(2):
        await server.close(code, "client stopped responding")
        assert await stream.receive_some(1024) == b""
