"""WsConnection over in-memory streams: batching, fragments, control frames, UTF-8, close."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Side
from websockets.protocol import Protocol as WsProtocol

from rtgate.net.wsconn import ConnectionClosed, WsConnection
from rtgate.translate.base import Binary


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


async def test_write_timeout_when_peer_never_reads() -> None:
    server_stream, _client_stream = trio.testing.lockstep_stream_pair()
    server = WsConnection(server_stream, WsProtocol(Side.SERVER, state=OPEN), write_timeout=0.2)
    with trio.fail_after(2), pytest.raises(ConnectionClosed) as info:
        await server.send([b"x" * 1000])
    assert info.value.code == 1011
