"""A WebRTC client peer for tests and benchmarks: what a browser does, in aiortc.

It offers an Opus track (a tone, then silence, so the mock model's VAD ends the turn) and
an ``oai-events`` data channel, posts the offer to ``/v1/realtime/calls`` and records what
comes back: the GA events on the channel and the level of the audio on rtgate's track.
Its aiortc objects live on an :class:`AsyncioThread` the caller owns (for a benchmark, in
a process of its own, so the gateway's CPU is measured alone).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from array import array
from collections.abc import Callable

import av
import orjson
import trio
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtgate.webrtc.loop import AsyncioThread

RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms


def tone(samples: int, start: int, frequency: float = 440.0, amplitude: float = 0.5) -> bytes:
    """PCM16 mono of a sine wave, from sample ``start`` of it."""
    scale = 32767 * amplitude
    step = 2 * math.pi * frequency / RATE
    return array("h", (int(scale * math.sin(step * (start + i))) for i in range(samples))).tobytes()


TONE_LOOP_SAMPLES = RATE // 10
"""100 ms: a whole number of 440 Hz periods and of 20 ms frames, so the loop is seamless."""
_TONE: list[bytes] = []


def _tone_loop() -> bytes:
    """Two loops of the tone (a frame may start near the end of the first), computed once."""
    if not _TONE:
        _TONE.append(tone(2 * TONE_LOOP_SAMPLES, 0))
    return _TONE[0]


def rms(pcm: bytes) -> float:
    """Root mean square of PCM16 samples, 0..1."""
    samples = array("h", pcm[: len(pcm) // 2 * 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768


class ToneTrack(MediaStreamTrack):
    """A microphone: ``speak()`` plays a tone for the given seconds; silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None
        self._tone_until = -1
        self.sent_frames = 0

    def speak(self, seconds: float) -> None:
        self._tone_until = self._pts + int(seconds * RATE)

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
        if self._pts < self._tone_until:
            start = self._pts % TONE_LOOP_SAMPLES * 2
            pcm = _tone_loop()[start : start + FRAME_SAMPLES * 2]
        else:
            pcm = bytes(FRAME_SAMPLES * 2)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent_frames += 1
        return frame


class ClientPeer:
    """One call's client side. Methods marked *loop* run on the asyncio thread."""

    def __init__(
        self,
        thread: AsyncioThread | None = None,
        on_event: Callable[[dict[str, object]], None] | None = None,
        *,
        measure_level: bool = True,
    ) -> None:
        self.thread = thread
        self.measure_level = measure_level
        """Off (a benchmark's many peers): frames are counted, not measured."""
        self.events: list[dict[str, object]] = []
        self.loud_frames = 0
        """Frames received on rtgate's track whose level was above 0.01 (the model's audio)."""
        self.frames_received = 0
        self.first_loud_at: float | None = None
        self.spoke_at: float | None = None
        self.channel_open = False
        self.connection_state = "new"
        self._on_event = on_event
        self._pc: RTCPeerConnection | None = None
        self._mic: ToneTrack | None = None
        self._channel: RTCDataChannel | None = None
        self._reader: asyncio.Task[None] | None = None

    async def offer(self) -> str:
        """*loop*: the offer, with host candidates gathered."""
        pc = self._pc = RTCPeerConnection()
        self._mic = ToneTrack()
        pc.addTrack(self._mic)
        channel = pc.createDataChannel("oai-events")
        self._channel = channel

        @channel.on("open")
        def opened() -> None:
            self.channel_open = True

        @channel.on("message")
        def message(data: str | bytes) -> None:
            event = orjson.loads(data)
            self.events.append(event)
            if self._on_event is not None:
                self._on_event(event)

        @pc.on("track")
        def track(track: MediaStreamTrack) -> None:
            self._reader = asyncio.get_running_loop().create_task(self._listen(track))

        @pc.on("connectionstatechange")
        def state() -> None:
            self.connection_state = pc.connectionState

        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        """*loop*: take rtgate's answer (ICE and DTLS then connect)."""
        assert self._pc is not None
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames_received += 1
            if not self.measure_level:
                continue
            assert isinstance(frame, av.AudioFrame)
            for out in resampler.resample(frame):
                if rms(bytes(out.planes[0])[: out.samples * 2]) > 0.01:
                    self.loud_frames += 1
                    if self.first_loud_at is None:
                        self.first_loud_at = time.monotonic()

    def speak(self, seconds: float) -> None:
        """*loop* (or any thread: one attribute write): play a tone on the microphone."""
        assert self._mic is not None
        self.first_loud_at = None
        self.spoke_at = time.monotonic()
        self._mic.speak(seconds)

    def send_event(self, event: dict[str, object]) -> None:
        """*loop*: a client event on the data channel."""
        assert self._channel is not None
        self._channel.send(orjson.dumps(event).decode())

    async def close(self) -> None:
        """*loop*: a polite close (DTLS close_notify, SCTP and ICE shut down)."""
        if self._reader is not None:
            self._reader.cancel()
        if self._pc is not None:
            await self._pc.close()

    async def vanish(self) -> None:
        """*loop*: stop sending anything, as a closed laptop lid does: no DTLS close, no RTCP."""
        pc = self._pc
        assert pc is not None
        dtls = [t.sender.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            dtls.append(pc.sctp.transport)
        for transport in {id(d): d for d in dtls if d is not None}.values():
            # aioice keeps no public handle on its sockets: close the UDP transports under it.
            connection = transport.transport.iceGatherer._connection
            for protocol in list(connection._protocols):
                protocol.transport.close()

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]


async def wait_for(predicate: Callable[[], bool], *, poll: float = 0.05) -> None:
    """Poll a condition from trio (the peer's state changes on the asyncio thread)."""
    while not predicate():
        await trio.sleep(poll)
