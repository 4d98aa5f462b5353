"""Event-stream framing: rtgate's encoder checked by botocore's independent decoder."""

from __future__ import annotations

import struct
import zlib

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from rtgate.aws.eventstream import (
    Decoder,
    EventStreamError,
    HeaderValue,
    Int8,
    Int16,
    Int32,
    Int64,
    Timestamp,
    Uuid,
    encode_message,
)
from rtgate.aws.h2stream import encode_chunk


def boto_decode(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(m.headers, m.payload) for m in buffer]


def test_every_header_type_decodes_as_botocore_reads_it() -> None:
    headers: dict[str, HeaderValue] = {
        "t": True,
        "f": False,
        "i8": Int8(-5),
        "i16": Int16(-300),
        "i32": Int32(70000),
        "i64": Int64(-(2**40)),
        "bytes": b"\x00\xff",
        "str": "héllo",
        ":date": Timestamp(1_700_000_000_000),
        "uuid": Uuid(bytes(range(16))),
    }
    [(decoded, payload)] = boto_decode(encode_message(headers, b"payload"))
    assert payload == b"payload"
    assert decoded == {
        "t": True,
        "f": False,
        "i8": -5,
        "i16": -300,
        "i32": 70000,
        "i64": -(2**40),
        "bytes": b"\x00\xff",
        "str": "héllo",
        ":date": 1_700_000_000_000,
        "uuid": bytes(range(16)),
    }


def test_layout_matches_the_documented_prelude() -> None:
    frame = encode_message({":message-type": "event"}, b"{}")
    total, headers_len, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame)
    assert headers_len == 1 + len(":message-type") + 1 + 2 + len("event")
    assert prelude_crc == zlib.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == zlib.crc32(frame[:-4])


header_values = st.one_of(
    st.booleans(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.integers(-(2**31), 2**31 - 1).map(Int32),
    st.integers(0, 2**62).map(Timestamp),
)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda n: len(n.encode()) < 256),
        header_values,
        max_size=6,
    ),
    st.binary(max_size=2000),
)
def test_round_trip_through_botocore(headers: dict[str, HeaderValue], payload: bytes) -> None:
    [(decoded, decoded_payload)] = boto_decode(encode_message(headers, payload))
    assert decoded_payload == payload
    assert set(decoded) == set(headers)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.integers(1, 50))
def test_incremental_decoder_reassembles_split_frames(payloads: list[bytes], step: int) -> None:
    stream = b"".join(encode_message({":event-type": "chunk"}, p) for p in payloads)
    decoder = Decoder()
    seen = []
    for start in range(0, len(stream), step):
        seen += [m.payload for m in decoder.feed(stream[start : start + step])]
    assert seen == payloads


def test_corrupted_payload_is_refused() -> None:
    frame = bytearray(encode_message({"a": "b"}, b"hello"))
    frame[-6] ^= 0x01
    with pytest.raises(EventStreamError):
        Decoder().feed(bytes(frame))
    with pytest.raises(ChecksumMismatch):
        boto_decode(bytes(frame))


def test_bare_ints_and_oversized_values_are_refused() -> None:
    with pytest.raises(EventStreamError):
        encode_message({"n": 3}, b"")  # type: ignore[dict-item]
    with pytest.raises(EventStreamError):
        encode_message({"s": "x" * 70000}, b"")


def test_nova_chunk_carries_base64_json_bytes() -> None:
    [(headers, payload)] = boto_decode(encode_chunk(b'{"event":{"sessionEnd":{}}}'))
    assert headers == {
        ":message-type": "event",
        ":event-type": "chunk",
        ":content-type": "application/json",
    }
    assert payload == b'{"bytes":"eyJldmVudCI6eyJzZXNzaW9uRW5kIjp7fX19"}'
