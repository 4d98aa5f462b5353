"""One terminated call's aiortc side: the peer connection, its ``oai-events`` data channel and
both audio directions. Everything here runs on the calls' asyncio thread.

As OpenAI's WebRTC does (https://platform.openai.com/docs/guides/realtime-webrtc), the
peer opens a data channel named ``oai-events`` for the GA events both ways and sends its
microphone as an Opus track; the model's audio comes back on rtgate's track, never as
``response.output_audio.delta`` events. rtgate adds ``output_audio_buffer.started`` /
``stopped`` when its track begins and ends playing a response, and ``cleared`` after the
client's ``output_audio_buffer.clear`` or when the user starts speaking over the model.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

import av
import orjson
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtgate.config.model import WebRtcSettings
from rtgate.webrtc.audio import InputBatcher, OutputTrack

log = logging.getLogger("rtgate.webrtc")

EVENTS_CHANNEL = "oai-events"
PENDING_EVENTS = 512
"""Server events held until the peer's data channel opens (the oldest go beyond it)."""
CLEAR_EVENT = b'"output_audio_buffer.clear"'
SPEECH_STARTED = b'"input_audio_buffer.speech_started"'
SESSION_UPDATE = b'"session.update"'
TYPE_SEARCH = 96
CLOSE_FLUSH_SECONDS = 0.5
"""How long a closing call waits for the data channel to send its last events."""


def ice_configuration(settings: WebRtcSettings) -> RTCConfiguration:
    """aiortc's configuration for the configured STUN/TURN servers (host candidates always)."""
    servers = [
        RTCIceServer(
            urls=list(s.urls),
            username=s.username,
            credential=s.credential.value if s.credential else None,
        )
        for s in settings.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def call_session(session: dict[str, Any]) -> dict[str, Any]:
    """A client's session configuration as a call applies it: the audio formats go.

    A call's audio is Opus on the tracks, bridged to PCM16 24 kHz whatever the client
    asks (OpenAI ignores ``audio.*.format`` on WebRTC too); a format copied from a
    WebSocket client (``audio/pcmu``) must not make the translator misread the bridge.
    """
    audio = session.get("audio")
    if not isinstance(audio, dict):
        return session
    cleaned = {
        side: {k: v for k, v in value.items() if k != "format"}
        if isinstance(value, dict)
        else value
        for side, value in audio.items()
    }
    return {**session, "audio": cleaned}


def client_event(data: bytes) -> bytes:
    """A data-channel event as the translator gets it (a ``session.update`` loses its formats)."""
    if data.find(SESSION_UPDATE, 0, TYPE_SEARCH) < 0 or data.find(b'"format"') < 0:
        return data
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data  # the translator answers a malformed event with its own error
    session = event.get("session") if isinstance(event, dict) else None
    if not isinstance(session, dict):
        return data
    return orjson.dumps({**event, "session": call_session(session)})


def _event(kind: str, response_id: str | None) -> bytes:
    event: dict[str, object] = {"type": kind, "event_id": "event_" + secrets.token_hex(10)}
    if response_id is not None:
        event["response_id"] = response_id
    return orjson.dumps(event)


class CallPeer:
    """The asyncio side of one call; ``to_trio`` and ``ended`` cross back to the trio thread."""

    def __init__(
        self,
        settings: WebRtcSettings,
        to_trio: Callable[[list[bytes]], None],
        ended: Callable[[int, str], None],
    ) -> None:
        self._settings = settings
        self._to_trio = to_trio
        self._ended = ended
        self._pc: RTCPeerConnection | None = None
        self._track: OutputTrack | None = None
        self._channel: RTCDataChannel | None = None
        self._pending: deque[bytes] = deque(maxlen=PENDING_EVENTS)
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames_in = 0
        """Decoded 20 ms frames of the peer's audio."""

    @property
    def buffered_audio(self) -> int:
        track = self._track
        return track.buffered if track is not None else 0

    @property
    def track(self) -> OutputTrack | None:
        return self._track

    async def answer(self, offer_sdp: str) -> str:
        """Set the peer's offer and return rtgate's answer, its ICE candidates gathered."""
        pc = self._pc = RTCPeerConnection(ice_configuration(self._settings))
        self._track = OutputTrack(on_playing=self._playing, on_stopped=self._stopped)
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(self._track)
        await pc.setLocalDescription(await pc.createAnswer())
        description = pc.localDescription
        return description.sdp

    # -- peer events ---------------------------------------------------------------------

    def _on_state(self) -> None:
        pc = self._pc
        if pc is not None and pc.connectionState in ("failed", "closed"):
            self._ended(1001, f"call ended: peer connection {pc.connectionState}")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            task = asyncio.get_running_loop().create_task(self._read_audio(track))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        batcher = InputBatcher()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue  # an audio track yields decoded frames only
            self.frames_in += 1
            events = batcher.add(frame)
            if events:
                self._to_trio(events)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL or self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._ended(1000, "the peer closed its data channel"))
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _flush(self) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        pending = self._pending
        while pending:
            channel.send(pending.popleft().decode())

    def _on_message(self, message: str | bytes) -> None:
        data = message.encode() if isinstance(message, str) else message
        if data.find(CLEAR_EVENT, 0, TYPE_SEARCH) >= 0:
            self._clear_output()
            return  # a WebRTC-only client event: the translator never sees it
        self._to_trio([client_event(data)])

    # -- from the session (trio), via call_soon_threadsafe -------------------------------

    def deliver(self, audio: list[tuple[str | None, bytes]], events: list[bytes]) -> None:
        track = self._track
        if track is None:
            return
        for response_id, pcm in audio:
            track.feed(response_id, pcm)
        for event in events:
            if event.find(SPEECH_STARTED, 0, TYPE_SEARCH) >= 0:
                self._send(event)
                self._clear_output()  # the user talks over the model: stop its audio
            else:
                self._send(event)

    def _send(self, event: bytes) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(event.decode())
        else:
            self._pending.append(event)

    def _clear_output(self) -> None:
        track = self._track
        if track is not None and track.clear():
            self._send(_event("output_audio_buffer.cleared", None))

    def _playing(self, response_id: str | None) -> None:
        self._send(_event("output_audio_buffer.started", response_id))

    def _stopped(self, response_id: str | None) -> None:
        self._send(_event("output_audio_buffer.stopped", response_id))

    # -- the end -------------------------------------------------------------------------

    async def close(self) -> None:
        """Send what the data channel holds (briefly), then close the peer connection."""
        channel, pc = self._channel, self._pc
        if channel is not None and channel.readyState == "open":
            loop = asyncio.get_running_loop()
            until = loop.time() + CLOSE_FLUSH_SECONDS
            while channel.bufferedAmount > 0 and loop.time() < until:
                await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        if self._track is not None:
            self._track.stop()
        if pc is not None:
            await pc.close()
