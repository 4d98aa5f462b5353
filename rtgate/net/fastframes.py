"""WebSocket frames on the hot path: decode plain data frames, encode text frames.

Owns the translation between socket bytes and messages for one connection,
around a ``websockets`` sans-IO protocol. Almost every frame of a realtime
session is a small, complete, unfragmented text frame; running each through
the library's generator-based parser cost about 6 us. :class:`MessageReader`
decodes those frames itself (header, C ``apply_mask``, UTF-8 check) and hands
*everything else* (control frames, fragments, reserved bits, bad opcodes or
masking, oversize frames, any frame after the close handshake started) to the
library unchanged, so RFC 6455 behaviour and close codes stay the library's.

The invariant that makes this safe: the reader decodes a frame itself only
while the library's parser is idle (waiting for the first byte of a frame,
nothing buffered, no fragmented message open). Once it hands bytes to the
library, it keeps feeding the library until the parser is idle again.

:class:`MessageReader` also keeps count of the bytes it holds for messages not yet
complete (a partial frame, the fragments so far, the library's buffer) and reports
each change to the gateway's :class:`rtgate.net.budget.BufferBudget`; complete
frames, the hot path, never change it.

:func:`encode_text` serialises an unfragmented text frame; client frames are
masked with key bytes drawn from a pooled ``os.urandom`` buffer (one syscall
per 1024 frames instead of one per frame).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from struct import pack
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Protocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships with every wheel
    from websockets.utils import apply_mask

from rtgate.net.budget import BufferBudget
from rtgate.wire import Binary
from rtgate.wire import Frame as Message

_TEXT = 0x1
_BINARY = 0x2


class MessageReader:
    """Socket bytes in, complete messages out (in order), for one connection."""

    __slots__ = (
        "_fragment_opcode",
        "_fragments",
        "_library",
        "_masked",
        "_need",
        "_pending",
        "budget",
        "discarding",
        "held",
        "on_evicted",
        "protocol",
    )

    def __init__(
        self, protocol: Protocol, *, fast: bool = True, budget: BufferBudget | None = None
    ) -> None:
        self.protocol = protocol
        self.budget = budget
        self.held = 0
        """Bytes held for unfinished messages (as last reported to ``budget``)."""
        self.discarding = False
        """The unfinished message was dropped; input is ignored from now on."""
        self.on_evicted: Callable[[], None] | None = None
        """Called when the budget evicts this reader's message."""
        self._masked = protocol.side is SERVER  # a server reads masked frames (RFC 6455 5.1)
        self._pending = bytearray()
        self._need = 0
        # The library owns the stream while this is true (see module docstring).
        self._library = not fast or bool(protocol.extensions) or not library_idle(protocol)
        # One buffer, not a list of fragments: a message of many small fragments would
        # otherwise scatter across the heap, which cannot shrink once freed in the middle.
        self._fragments = bytearray()
        self._fragment_opcode: Opcode | None = None

    # -- input ---------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Message]:
        """Every message completed by ``data``; protocol replies land in ``protocol.writes``."""
        if self._library:
            return self._to_library(data)
        if self._pending:
            # A frame split across reads: collect until it is whole (no quadratic copying).
            self._pending += data
            if len(self._pending) < self._need:
                self.account()
                return []
            buf = bytes(self._pending)
            self._pending = bytearray()
        else:
            buf = data
        out: list[Message] = []
        end = len(buf)
        i = 0
        protocol = self.protocol
        limit = protocol.max_message_size
        if protocol.max_fragment_size is not None:
            limit = min(limit or protocol.max_fragment_size, protocol.max_fragment_size)
        masked = self._masked
        while i < end:
            if end - i < 2:
                self._hold(buf, i, 0)
                break
            b0 = buf[i]
            b1 = buf[i + 1]
            opcode = b0 & 0x0F
            if (
                (b0 & 0xF0) != 0x80  # not FIN, or a reserved bit set
                or (opcode != _TEXT and opcode != _BINARY)
                or ((b1 & 0x80) == 0) == masked
            ):
                # Decided on two bytes, as the library decides (its errors come as early).
                out += self._to_library(buf[i:])
                break
            length = b1 & 0x7F
            start = i + 2
            if length == 126:
                start += 2
                if start > end:
                    self._hold(buf, i, 0)
                    break
                length = (buf[i + 2] << 8) | buf[i + 3]
            elif length == 127:
                start += 8
                if start > end:
                    self._hold(buf, i, 0)
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
            if limit is not None and length > limit:
                out += self._to_library(buf[i:])  # the library fails it (1009)
                break
            if masked:
                stop = start + 4 + length
                if stop > end:
                    self._hold(buf, i, stop - i)
                    break
                payload = apply_mask(memoryview(buf)[start + 4 : stop], buf[start : start + 4])
            else:
                stop = start + length
                if stop > end:
                    self._hold(buf, i, stop - i)
                    break
                payload = buf[start:stop]
            if opcode == _TEXT:
                if not payload.isascii():
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        # The library path reports it exactly as before (1007).
                        out += self._to_library(buf[i:])
                        break
                out.append(payload)
            else:
                out.append(Binary(payload))
            i = stop
        if self._pending or self.held:
            self.account()
        return out

    def _hold(self, buf: bytes, at: int, need: int) -> None:
        self._pending = bytearray(buf[at:])
        self._need = need

    def feed_eof(self) -> list[Message]:
        """The peer closed TCP: buffered bytes and the EOF go to the library."""
        out: list[Message] = []
        if self._pending and not self.discarding:
            out = self._to_library(self._pending)
            self._pending = bytearray()
        self._library = True
        self.protocol.receive_eof()
        out += self.assemble(self.protocol.events_received())  # type: ignore[arg-type]
        self.account()
        return out

    def release(self) -> None:
        """Hand any buffered bytes to the library, which owns the stream from now on."""
        if self._pending and not self.discarding:
            self.protocol.receive_data(bytes(self._pending))
            self._pending = bytearray()
        self._library = True
        self.account()

    def _to_library(self, data: bytes | bytearray) -> list[Message]:
        if self.discarding:
            return []
        protocol = self.protocol
        protocol.receive_data(bytes(data))
        out = self.assemble(protocol.events_received())  # type: ignore[arg-type]
        self._library = not library_idle(protocol)
        if not self._library:
            fresh_parser(protocol)
        self.account()
        return out

    # -- what is held for unfinished messages -------------------------------------------

    def account(self) -> None:
        """Report the bytes now held for unfinished messages, if that changed."""
        held = len(self._pending) + len(self._fragments)
        if self._library:
            held += len(self.protocol.reader.buffer)
        before = self.held
        if held != before:
            self.held = held
            if self.budget is not None:
                self.budget.change(self, before, held)

    def discard(self) -> None:
        """Drop the unfinished message and ignore all further input (the connection is
        being closed): its memory is freed now, not when the session's objects are."""
        self.discarding = True
        self._library = True
        self._pending = bytearray()
        self._need = 0
        self._fragments = bytearray()
        protocol = self.protocol
        protocol.reader.buffer = bytearray()
        if not protocol.reader.eof:
            fresh_parser(protocol)  # the old one holds the last frame it parsed
        elif protocol.parser_exc is not None:
            # The parser ended (EOF, protocol error); its exception's traceback holds
            # the parser's frame and with it the last frame parsed.
            protocol.parser_exc.__traceback__ = None
        self.account()

    def evict(self) -> None:
        """The gateway's budget is exceeded and this reader holds its biggest message."""
        self.discard()
        if self.on_evicted is not None:
            self.on_evicted()

    # -- the library path: reassembly and UTF-8 (what the sans-IO layer leaves to us) ----

    def assemble(self, events: list[Frame]) -> list[Message]:
        """Messages of parsed frames; a bad UTF-8 text message fails the connection (1007)."""
        out: list[Message] = []
        for frame in events:
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    data = frame.data
                    if opcode is Opcode.TEXT:
                        text = self._checked_text(bytes(data))
                        if text is None:
                            return out
                        out.append(text)
                    else:
                        out.append(Binary(bytes(data)))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = bytearray(frame.data)
            elif opcode is Opcode.CONT:
                self._fragments += frame.data
                if frame.fin:
                    data = bytes(self._fragments)
                    self._fragments = bytearray()
                    if self._fragment_opcode is Opcode.TEXT:
                        text = self._checked_text(data)
                        if text is None:
                            return out
                        out.append(text)
                    else:
                        out.append(Binary(data))
        return out

    def _checked_text(self, data: bytes) -> bytes | None:
        # JSON from SDKs is ASCII almost always; only non-ASCII needs the decode.
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.protocol.fail(1007, "invalid UTF-8 in text message")
                return None
        return data


def fresh_parser(protocol: Protocol) -> None:
    """Give the library a new frame parser, waiting for the first byte of a frame.

    The library's parser generator keeps the last frame it parsed in its locals until
    the next frame is complete: up to a whole fragment (16 MiB) for as long as the
    connection lives, since the fast path may never hand the library another byte.
    When the library is idle (:func:`library_idle`) a new parser is equivalent; when
    input is being discarded the old parser's state does not matter any more.
    """
    protocol.parser = Protocol.parse(protocol)
    next(protocol.parser)


def library_idle(protocol: Protocol) -> bool:
    """True when the library's parser waits for the first byte of a new frame.

    Read from the parser generator's ``yield from`` chain: the innermost
    generator must be the reader's ``at_eof`` called from ``parse`` (after a
    close, ``discard`` runs instead; mid-frame, ``read_exact``).
    """
    if (
        protocol.state is not OPEN
        or protocol.parser_exc is not None
        or protocol.current_size is not None
        or protocol.reader.buffer
    ):
        return False
    gen: Any = protocol.parser
    caller = ""
    name = ""
    while gen is not None:
        caller, name = name, gen.gi_code.co_name
        gen = gen.gi_yieldfrom
    return name == "at_eof" and caller == "parse"


# -- output ------------------------------------------------------------------------------

_POOL_SIZE = 4096


class MaskPool:
    """Masking keys cut from one ``os.urandom`` buffer, refilled when used up."""

    __slots__ = ("_at", "_buf")

    def __init__(self) -> None:
        self._buf = os.urandom(_POOL_SIZE)
        self._at = 0

    def take(self) -> bytes:
        at = self._at
        if at >= _POOL_SIZE:
            self._buf = os.urandom(_POOL_SIZE)
            at = 0
        self._at = at + 4
        return self._buf[at : at + 4]


MASKS = MaskPool()


def encode_text(data: bytes, *, mask: bool) -> bytes:
    """One unfragmented text frame (FIN, no extensions), masked when ``mask``."""
    n = len(data)
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes((0x81, n | bit))
    elif n < 65536:
        head = pack("!BBH", 0x81, 126 | bit, n)
    else:
        head = pack("!BBQ", 0x81, 127 | bit, n)
    if mask:
        key = MASKS.take()
        return head + key + apply_mask(data, key)
    return head + data
