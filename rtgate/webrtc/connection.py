"""A terminated call as the relay's client: :class:`CallConnection` (trio side of the bridge).

The relay reads a call like a WebSocket: :meth:`CallConnection.receive` returns the next
batch of client events (data-channel messages and the 100 ms ``input_audio_buffer.append``
events the audio bridge cut), and :meth:`CallConnection.send` takes the server events.
Audio deltas become PCM for the call's track; every other event goes to the data channel.

Both directions are bounded. The asyncio side hands frames over with
``TrioToken.run_sync_soon`` into an inbox of at most ``INBOX_FRAMES`` frames: when the
relay falls that far behind (its provider is slow), further audio is dropped and counted,
and a client event that does not fit ends the call, so the asyncio side never waits on
trio. The other way, :meth:`send` waits while the track holds more than the configured
seconds of audio, which holds the relay (and so the provider) back, never the peer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson
import trio

from rtgate.net.wsconn import ConnectionClosed
from rtgate.webrtc.audio import APPEND_HEAD, decode_delta
from rtgate.wire import Frame

INBOX_FRAMES = 256
"""Client frames waiting for the relay: about 25 s of audio appends."""
AUDIO_DELTA = b'"response.output_audio.delta"'
TYPE_SEARCH = 96
"""Bytes of an event searched for its type (GA writers put ``type`` first or second)."""
BACKPRESSURE_POLL = 0.02
"""How often a held :meth:`CallConnection.send` looks at the track again (only while full)."""


class Peer(Protocol):
    """What the connection needs of the call's asyncio side (:class:`rtgate.webrtc.peer.CallPeer`)."""

    @property
    def buffered_audio(self) -> int:
        """Bytes of provider PCM not yet played (read from trio; an int read is atomic)."""
        ...

    def deliver(self, audio: list[tuple[str | None, bytes]], events: list[bytes]) -> None:
        """On the asyncio thread: queue audio for the track and events for the data channel."""
        ...


class CallConnection:
    """The relay's client for one terminated call (implements ``ClientConnection``)."""

    def __init__(
        self,
        peer: Peer,
        to_peer: Callable[..., None],
        *,
        idle_timeout: float,
        max_buffered_audio: int,
        inbox_frames: int = INBOX_FRAMES,
    ) -> None:
        self._peer = peer
        self._to_peer = to_peer
        """Runs a callable on the asyncio thread (``AsyncioThread.soon``)."""
        self._idle_timeout = idle_timeout
        self._max_buffered = max_buffered_audio
        self._capacity = inbox_frames
        self._inbox: deque[Frame] = deque()
        self._wake: trio.Event | None = None
        self._ended: ConnectionClosed | None = None
        self.last_received = trio.current_time()
        self.unfinished_since: float | None = None
        self.bytes_received = 0
        self.audio_dropped = 0
        """Input appends dropped because the relay was ``INBOX_FRAMES`` behind."""
        self.closed = trio.Event()

    # -- the asyncio side's entry points (run on the trio thread via run_sync_soon) -----

    def deliver(self, frames: list[bytes]) -> None:
        """Frames from the peer: queued for :meth:`receive`, within the inbox's bound."""
        if self._ended is not None:
            return
        inbox = self._inbox
        for frame in frames:
            if len(inbox) < self._capacity:
                inbox.append(frame)
            elif frame.startswith(APPEND_HEAD):
                self.audio_dropped += 1
            else:
                self.end(1008, "the call sent events faster than the session takes them")
                break
        self._wake_receiver()

    def end(self, code: int, reason: str) -> None:
        """The peer is gone (closed, failed, hung up): :meth:`receive` raises after the inbox."""
        if self._ended is None:
            self._ended = ConnectionClosed(code, reason, by_peer=True)
        self._wake_receiver()

    def _wake_receiver(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- ClientConnection --------------------------------------------------------------

    async def receive(self) -> list[Frame]:
        inbox = self._inbox
        while not inbox:
            if self._ended is not None:
                raise self._ended
            self._wake = trio.Event()
            with trio.move_on_at(self.last_received + self._idle_timeout):
                await self._wake.wait()
            self._wake = None
            if (
                not inbox
                and self._ended is None
                and (trio.current_time() >= self.last_received + self._idle_timeout)
            ):
                self.end(1001, "call idle: no audio or events from the peer")
        frames = list(inbox)
        inbox.clear()
        self.last_received = trio.current_time()
        self.bytes_received += sum(len(f) for f in frames if type(f) is bytes)
        return frames

    async def send(self, messages: Sequence[Frame]) -> None:
        audio: list[tuple[str | None, bytes]] = []
        events: list[bytes] = []
        size = 0
        for frame in messages:
            if type(frame) is not bytes:
                continue  # a data channel carries the GA events' JSON only
            if frame.find(AUDIO_DELTA, 0, TYPE_SEARCH) >= 0:
                # The track needs the PCM itself, so audio is decoded here, unlike the relay.
                event = orjson.loads(frame)
                pcm = decode_delta(event.get("delta") or "")
                response = event.get("response_id")
                audio.append((response if isinstance(response, str) else None, pcm))
                size += len(pcm)
            else:
                events.append(frame)
        if size:
            while self._ended is None and self._peer.buffered_audio + size > self._max_buffered:
                await trio.sleep(BACKPRESSURE_POLL)
        if self._ended is None and (audio or events):
            self._to_peer(self._peer.deliver, audio, events)

    async def ping(self, payload: bytes = b"") -> None:
        """ICE consent checks and RTP are the call's liveness; nothing to send."""

    async def close(self, code: int = 1000, reason: str = "", *, grace: float = 1.0) -> None:
        """The relay is done with the call; the call's task closes the peer connection."""
        self.end(code, reason)
        self.closed.set()

    def watch_unfinished(
        self, started: Callable[[float], None], evicted: Callable[[], None]
    ) -> None:
        """A data-channel message arrives whole (SCTP reassembles it): nothing is unfinished."""

    def drop_unfinished(self) -> None:
        """Nothing is ever unfinished here."""
