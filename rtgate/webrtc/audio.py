"""The audio bridge of a terminated call: the peer's decoded Opus in, the provider's PCM out.

The translators speak GA events, whose audio is base64 PCM16 mono at 24 kHz. The call's
remote track delivers 20 ms frames (aiortc decodes Opus to 48 kHz stereo); the
:class:`InputBatcher` resamples them with av's ``AudioResampler`` and cuts 100 ms
``input_audio_buffer.append`` events, so the relay is fed ten times a second, not per
packet. Back the other way, :class:`OutputTrack` is rtgate's outgoing audio track: a
bounded buffer of provider PCM played at real time, 20 ms per frame, silence when idle
(aiortc's Opus encoder resamples it to 48 kHz itself).
"""

from __future__ import annotations

import asyncio
import base64
import fractions
from collections import deque
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 24_000
"""The GA events' PCM16 rate (the translators convert it for their provider)."""
BYTES_PER_MS = RATE * 2 // 1000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
APPEND_MS = 100
"""Input audio per ``input_audio_buffer.append``: five 20 ms packets."""
TIME_BASE = fractions.Fraction(1, RATE)
SILENCE = bytes(FRAME_BYTES)

APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'


def append_event(pcm: bytes) -> bytes:
    """An ``input_audio_buffer.append`` GA event for raw PCM16 24 kHz mono."""
    return APPEND_HEAD + base64.b64encode(pcm) + b'"}'


class InputBatcher:
    """Decoded frames of the peer's track in, ``input_audio_buffer.append`` events out."""

    def __init__(self, append_ms: int = APPEND_MS) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._pending = bytearray()
        self._batch_bytes = append_ms * BYTES_PER_MS

    def add(self, frame: av.AudioFrame) -> list[bytes]:
        """Take one frame; return the append events now complete (usually none or one)."""
        pending = self._pending
        for out in self._resampler.resample(frame):
            # The plane is padded for alignment: only samples * 2 bytes are audio.
            pending += bytes(out.planes[0])[: out.samples * 2]
        events: list[bytes] = []
        size = self._batch_bytes
        while len(pending) >= size:
            events.append(append_event(bytes(pending[:size])))
            del pending[:size]
        return events


def pcm_frame(pcm: bytes, pts: int) -> av.AudioFrame:
    """One 20 ms ``AudioFrame`` at sample ``pts`` from PCM16 mono 24 kHz, as stereo.

    Stereo because FFmpeg's mono-to-stereo upmix (in aiortc's encoder) lowers the level
    by 3 dB; copying the channel here keeps the model's loudness. Slice assignment
    interleaves in C.
    """
    stereo = bytearray(len(pcm) * 2)
    stereo[0::4] = pcm[0::2]
    stereo[1::4] = pcm[1::2]
    stereo[2::4] = pcm[0::2]
    stereo[3::4] = pcm[1::2]
    frame = av.AudioFrame(format="s16", layout="stereo", samples=FRAME_SAMPLES)
    frame.planes[0].update(bytes(stereo))
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class OutputTrack(MediaStreamTrack):
    """rtgate's audio track on a call: provider PCM from a bounded buffer, paced at real time.

    Lives on the calls' asyncio thread. The trio side reads :attr:`buffered` (an int, read
    atomically) to hold the relay back when the buffer is full; only this thread changes it.
    ``on_playing(response_id)`` and ``on_stopped(response_id)`` report when the track starts
    playing a response's audio and when its buffer runs dry (``output_audio_buffer.started``
    / ``stopped`` on the data channel).
    """

    kind = "audio"

    def __init__(
        self,
        *,
        on_playing: Callable[[str | None], None] | None = None,
        on_stopped: Callable[[str | None], None] | None = None,
    ) -> None:
        super().__init__()
        self._chunks: deque[tuple[str | None, bytes]] = deque()
        self._head = b""
        self._head_response: str | None = None
        self.buffered = 0
        """Bytes of PCM waiting to be played."""
        self.played_frames = 0
        self.audio_frames = 0
        """Frames that carried provider audio (not silence)."""
        self._playing = False
        self._playing_response: str | None = None
        self._pts = 0
        self._start: float | None = None
        self._on_playing = on_playing
        self._on_stopped = on_stopped

    def feed(self, response_id: str | None, pcm: bytes) -> None:
        """Queue provider PCM16 24 kHz mono for playback."""
        if pcm:
            self._chunks.append((response_id, pcm))
            self.buffered += len(pcm)

    def clear(self) -> bool:
        """Drop what is waiting (the user interrupted); True if audio was playing or queued."""
        had = self.buffered > 0 or self._playing
        self._chunks.clear()
        self._head = b""
        self.buffered = 0
        self._stop_playing()
        return had

    def _stop_playing(self) -> None:
        if self._playing:
            self._playing = False
            if self._on_stopped is not None:
                self._on_stopped(self._playing_response)

    def _take(self) -> tuple[str | None, bytes] | None:
        """The next 20 ms of audio, or None when nothing is buffered."""
        if self.buffered <= 0:
            return None
        out = bytearray()
        response = self._head_response
        while len(out) < FRAME_BYTES:
            if not self._head:
                if not self._chunks:
                    break
                self._head_response, self._head = self._chunks.popleft()
                response = self._head_response
            need = FRAME_BYTES - len(out)
            out += self._head[:need]
            self._head = self._head[need:]
        self.buffered -= len(out)
        if len(out) < FRAME_BYTES:
            out += bytes(FRAME_BYTES - len(out))
        return response, bytes(out)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.5:
                # The loop fell far behind (a stall): restart the clock rather than burst.
                self._start = loop.time() - self._pts / RATE
        taken = self._take()
        self.played_frames += 1
        if taken is None:
            self._stop_playing()
            return pcm_frame(SILENCE, self._pts)
        response, pcm = taken
        self.audio_frames += 1
        if not self._playing:
            self._playing, self._playing_response = True, response
            if self._on_playing is not None:
                self._on_playing(response)
        return pcm_frame(pcm, self._pts)


def decode_delta(delta: str) -> bytes:
    """A ``response.output_audio.delta``'s base64 PCM16 (empty if it is not base64)."""
    try:
        return base64.b64decode(delta, validate=False)
    except ValueError:
        return b""
