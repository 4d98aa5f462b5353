"""Hypothesis over every parser of bytes from outside: event-stream frames (Bedrock), the
WebSocket reader (every WebSocket upstream and client), event sniffing, the beta bridge.

Each either yields what it parsed or raises its one documented error; nothing
else escapes, and a valid stream parses the same however it is cut.
"""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.protocol import OPEN, Side
from websockets.protocol import Protocol as WsProtocol

from rtgate.aws.eventstream import Decoder, EventStreamError, Int32, encode_message, encode_raw
from rtgate.net.wsconn import ConnectionClosed, WsConnection
from rtgate.protocol.beta import BetaBridge
from rtgate.protocol.events import parse_event, sniff_type
from rtgate.wire import Binary

FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

header_values = st.one_of(
    st.text(max_size=20), st.booleans(), st.binary(max_size=20),
    st.integers(-(2**31), 2**31 - 1).map(Int32),
)  # fmt: skip
messages = st.tuples(
    st.dictionaries(st.text(min_size=1, max_size=10), header_values, max_size=4),
    st.binary(max_size=200),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@FAST
@given(st.lists(messages, min_size=1, max_size=5), st.lists(st.integers(0, 10**6), max_size=8))
def test_eventstream_valid_frames_decode_the_same_however_cut(
    items: list[tuple[dict[str, object], bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode_message(h, p) for h, p in items)  # type: ignore[arg-type]
    decoder = Decoder()
    got = []
    for piece in _split(wire, cuts):
        got += decoder.feed(piece)
    assert [m.payload for m in got] == [p for _, p in items]
    assert [set(m.headers) for m in got] == [set(h) for h, _ in items]


@FAST
@given(messages, st.integers(0, 10**6), st.integers(1, 255))
def test_eventstream_any_corrupted_byte_is_an_eventstream_error(
    item: tuple[dict[str, object], bytes], position: int, flip: int
) -> None:
    wire = bytearray(encode_message(*item))  # type: ignore[arg-type]
    wire[position % len(wire)] ^= flip
    decoder = Decoder()
    try:
        decoded = decoder.feed(bytes(wire))
    except EventStreamError:
        return
    # A length field made larger only leaves the decoder waiting for more bytes.
    assert decoded == []


@FAST
@given(st.binary(max_size=300), st.binary(max_size=200))
def test_eventstream_garbage_and_bad_headers_raise_only_eventstream_error(
    garbage: bytes, header_bytes: bytes
) -> None:
    for data in (garbage, encode_raw(header_bytes, b"{}") if len(header_bytes) < 128 else b""):
        try:
            Decoder().feed(data)
        except EventStreamError:
            pass


@FAST
@given(st.binary(max_size=400))
def test_event_sniffing_and_the_beta_bridge_take_any_bytes(data: bytes) -> None:
    kind = sniff_type(data)
    assert kind is None or isinstance(kind, str)
    event = parse_event(data)
    assert event is None or isinstance(event, dict)
    bridge = BetaBridge()
    for converted in (bridge.client_to_ga(data), bridge.server_to_beta(data)):
        assert converted is None or isinstance(converted, bytes)


json_events = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "session",
                    "item",
                    "response",
                    "audio",
                    "modalities",
                    "input_audio_format",
                    "content",
                    "delta",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@FAST
@given(
    st.lists(json_events, max_size=6),
    st.sampled_from(
        [
            "session.update",
            "session.created",
            "response.create",
            "response.output_audio.delta",
            "conversation.item.create",
            "response.done",
            "session.updated",
        ]
    ),
)
def test_beta_bridge_takes_any_json_in_either_direction(bodies: list[object], kind: str) -> None:
    bridge = BetaBridge()
    for body in bodies:
        event = {**body, "type": kind} if isinstance(body, dict) else body
        frame = orjson.dumps(event)
        for converted in (bridge.client_to_ga(frame), bridge.server_to_beta(frame)):
            assert converted is None or isinstance(converted, bytes)


async def _read_all(data: bytes, max_size: int) -> tuple[list[object], int | None]:
    server_stream, peer = trio.testing.memory_stream_pair()
    conn = WsConnection(server_stream, WsProtocol(Side.CLIENT, state=OPEN, max_size=max_size))
    await peer.send_all(data)
    await peer.send_eof()
    messages: list[object] = []
    with trio.fail_after(5):
        while True:
            try:
                messages += await conn.receive()
            except ConnectionClosed as exc:
                return messages, exc.code


def _frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    else:
        head += bytes([126]) + n.to_bytes(2, "big")
    return head + payload


ws_frames = st.builds(
    _frame,
    st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB]),
    st.one_of(st.binary(max_size=300), st.just(b'{"type":"x"}'), st.just(b"\xff\xfe")),
    st.booleans(),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(ws_frames | st.binary(max_size=20), max_size=8))
def test_websocket_reader_turns_any_upstream_bytes_into_messages_or_a_close(
    chunks: list[bytes],
) -> None:
    """Unmasked server frames, any opcode, fragments, junk: messages, then one close code."""

    async def main() -> tuple[list[object], int | None]:
        return await _read_all(b"".join(chunks), max_size=256)

    messages, code = trio.run(main)
    assert code in (1000, 1001, 1002, 1005, 1006, 1007, 1009, 1011) or (
        code is not None and 3000 <= code <= 4999
    ), code
    for message in messages:
        assert isinstance(message, bytes | Binary)
        if isinstance(message, bytes):
            message.decode("utf-8")  # text messages are valid UTF-8 or the read failed (1007)


@pytest.mark.parametrize(
    ("payload", "code"),
    [(b"\xc3\x28", 1007), (b"A" * 300, 1009), (b"ok", 1006)],
)
async def test_websocket_reader_codes_for_bad_text_oversize_and_eof(
    payload: bytes, code: int
) -> None:
    _, got = await _read_all(_frame(0x1, payload, True), max_size=256)
    assert got == code
