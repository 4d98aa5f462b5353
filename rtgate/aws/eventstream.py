"""AWS event-stream framing (``application/vnd.amazon.eventstream``).

Owns the encoder (botocore only decodes) and a thin incremental decoder on top
of ``botocore.eventstream.EventStreamBuffer``. A message is::

    prelude   total_length u32 | headers_length u32 | crc32(first 8 bytes) u32
    headers   name_len u8 | name | type u8 | value   (repeated)
    payload   bytes
    crc32     of everything before it

Header value types (https://smithy.io/2.0/aws/amazon-eventstream.html): 0 true,
1 false, 2 int8, 3 int16, 4 int32, 5 int64, 6 bytes, 7 string, 8 timestamp (int64 ms), 9 uuid.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import Final

import attrs
from botocore import eventstream as _boto_es

MAX_HEADERS_LENGTH: Final = 128 * 1024
MAX_PAYLOAD_LENGTH: Final = 16 * 1024 * 1024
_PRELUDE: Final = struct.Struct(">II")
_U32: Final = struct.Struct(">I")


@attrs.frozen(slots=True)
class Timestamp:
    """A type-8 header value: milliseconds since the UNIX epoch."""

    millis: int


@attrs.frozen(slots=True)
class Int8:
    value: int


@attrs.frozen(slots=True)
class Int16:
    value: int


@attrs.frozen(slots=True)
class Int32:
    value: int


@attrs.frozen(slots=True)
class Int64:
    value: int


@attrs.frozen(slots=True)
class Uuid:
    """A type-9 header value: 16 raw bytes."""

    value: bytes


HeaderValue = bool | str | bytes | Timestamp | Int8 | Int16 | Int32 | Int64 | Uuid
"""``bool`` -> 0/1, ``str`` -> 7, ``bytes`` -> 6, the wrappers -> their type; a bare int is
ambiguous and refused."""


class EventStreamError(ValueError):
    """A message could not be encoded or decoded (bad CRC, lengths, header types)."""


def encode_header(name: str, value: HeaderValue) -> bytes:
    """One encoded header (name length, name, type, value)."""
    raw_name = name.encode()
    if not 0 < len(raw_name) < 256:
        raise EventStreamError(f"header name must be 1..255 bytes: {name!r}")
    head = bytes((len(raw_name),)) + raw_name
    # bool first: bool is a subclass of int but not of the wrappers.
    if value is True:
        return head + b"\x00"
    if value is False:
        return head + b"\x01"
    if isinstance(value, str):
        data = value.encode()
        _check_short(name, data)
        return head + b"\x07" + struct.pack(">H", len(data)) + data
    if isinstance(value, bytes):
        _check_short(name, value)
        return head + b"\x06" + struct.pack(">H", len(value)) + value
    if isinstance(value, Timestamp):
        return head + b"\x08" + struct.pack(">q", value.millis)
    if isinstance(value, Int8):
        return head + b"\x02" + struct.pack(">b", value.value)
    if isinstance(value, Int16):
        return head + b"\x03" + struct.pack(">h", value.value)
    if isinstance(value, Int32):
        return head + b"\x04" + struct.pack(">i", value.value)
    if isinstance(value, Int64):
        return head + b"\x05" + struct.pack(">q", value.value)
    if isinstance(value, Uuid):
        if len(value.value) != 16:
            raise EventStreamError("a uuid header value is 16 bytes")
        return head + b"\x09" + value.value
    raise EventStreamError(f"unsupported header value for {name!r}: {type(value).__name__}")


def _check_short(name: str, data: bytes) -> None:
    if len(data) > 0xFFFF:
        raise EventStreamError(f"header {name!r} value longer than 65535 bytes")


def encode_headers(headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]]) -> bytes:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return b"".join(encode_header(name, value) for name, value in items)


def encode_message(
    headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]], payload: bytes
) -> bytes:
    """A complete message with both CRCs."""
    return encode_raw(encode_headers(headers), payload)


def encode_raw(header_bytes: bytes, payload: bytes) -> bytes:
    """A complete message from already encoded headers."""
    if len(header_bytes) > MAX_HEADERS_LENGTH:
        raise EventStreamError(f"headers are {len(header_bytes)} bytes (max {MAX_HEADERS_LENGTH})")
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise EventStreamError(f"payload is {len(payload)} bytes (max {MAX_PAYLOAD_LENGTH})")
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(header_bytes))
    prelude += _U32.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(header_bytes, zlib.crc32(prelude)))
    return b"".join((prelude, header_bytes, payload, _U32.pack(crc)))


@attrs.frozen(slots=True)
class Message:
    """A decoded message. Timestamps decode to ``int`` milliseconds, as botocore gives them."""

    headers: Mapping[str, object]
    payload: bytes


class Decoder:
    """Incremental decoder: feed bytes, take complete messages (CRCs checked by botocore)."""

    def __init__(self) -> None:
        self._buffer = _boto_es.EventStreamBuffer()

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return every message it completed. Raises :class:`EventStreamError`."""
        self._buffer.add_data(data)
        try:
            return [Message(m.headers, m.payload) for m in self._buffer]
        except _boto_es.ParserError as exc:
            raise EventStreamError(str(exc)) from exc
        except (KeyError, struct.error, UnicodeDecodeError) as exc:
            # An unknown header type or a truncated header inside a CRC-valid message.
            raise EventStreamError(f"malformed event-stream headers: {exc!r}") from exc
