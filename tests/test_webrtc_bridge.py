"""The audio bridge and the call's client adapter, without a network.

Audio: Opus encode and decode (aiortc's own codecs) keep a tone's level; the batcher
resamples 48 kHz stereo to 24 kHz mono and cuts 100 ms appends; the output track plays
queued PCM in 20 ms frames, then silence, and reports start and stop per response.
Adapter: both directions are bounded, and a slow side never holds the other.
"""

from __future__ import annotations

import asyncio
import base64
import fractions

import av
import orjson
import pytest
import trio
import trio.testing
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from rtgate.net.wsconn import ConnectionClosed
from rtgate.testing.webrtc_peer import rms, tone
from rtgate.webrtc.audio import (
    APPEND_HEAD,
    FRAME_BYTES,
    InputBatcher,
    OutputTrack,
    append_event,
    pcm_frame,
)
from rtgate.webrtc.connection import CallConnection


def stereo_frame(pcm_mono_48k: bytes, pts: int) -> av.AudioFrame:
    """What aiortc's Opus decoder yields: 48 kHz stereo s16 (the mono copied to both sides)."""
    samples = len(pcm_mono_48k) // 2
    stereo = bytearray()
    for i in range(samples):
        pair = pcm_mono_48k[2 * i : 2 * i + 2]
        stereo += pair + pair
    frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
    frame.planes[0].update(bytes(stereo))
    frame.sample_rate = 48_000
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, 48_000)
    return frame


def left_channel(frame: av.AudioFrame) -> bytes:
    """The first channel of an interleaved stereo s16 frame."""
    stereo = bytes(frame.planes[0])[: frame.samples * 4]
    mono = bytearray(frame.samples * 2)
    mono[0::2], mono[1::2] = stereo[0::4], stereo[1::4]
    return bytes(mono)


def appended_pcm(events: list[bytes]) -> bytes:
    return b"".join(base64.b64decode(orjson.loads(e)["audio"]) for e in events)


def test_batcher_resamples_to_24k_mono_and_cuts_100ms_appends() -> None:
    batcher = InputBatcher()
    events: list[bytes] = []
    for n in range(25):  # 500 ms of 20 ms frames
        events += batcher.add(stereo_frame(tone(960, n * 960), n * 960))
    assert len(events) in (4, 5)  # the resampler holds back a few samples
    assert all(e.startswith(APPEND_HEAD) for e in events)
    for event in events:
        assert len(base64.b64decode(orjson.loads(event)["audio"])) == 4800  # 100 ms at 24 kHz
    level = rms(appended_pcm(events)[480:])  # past the resampler's ramp-in
    assert level == pytest.approx(0.5 / 2**0.5, rel=0.05)  # a sine's rms: amplitude/sqrt 2


def test_opus_round_trip_keeps_the_level() -> None:
    """rtgate's track frames through aiortc's encoder, then its decoder and our batcher."""
    encoder, decoder = OpusEncoder(), OpusDecoder()
    batcher = InputBatcher()
    track_pcm = tone(24_000, 0)  # 1 s at the track's 24 kHz (a 220 Hz tone there)

    events: list[bytes] = []
    for i in range(50):
        chunk = track_pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
        payloads, timestamp = encoder.encode(pcm_frame(chunk, i * 480))
        for payload in payloads:
            for frame in decoder.decode(JitterFrame(data=payload, timestamp=timestamp)):
                assert isinstance(frame, av.AudioFrame)
                events += batcher.add(frame)
    pcm = appended_pcm(events)
    assert len(pcm) >= 8 * 4800
    assert rms(pcm[4800:]) == pytest.approx(0.5 / 2**0.5, rel=0.1)
    assert rms(bytes(4800)) == 0.0


def test_output_track_plays_20ms_frames_then_silence_and_reports_each_response() -> None:
    reports: list[tuple[str, str | None]] = []

    async def run() -> list[bytes]:
        track = OutputTrack(
            on_playing=lambda r: reports.append(("started", r)),
            on_stopped=lambda r: reports.append(("stopped", r)),
        )
        track.feed("resp_1", b"\x01\x00" * 1200)  # 50 ms: three frames, the last padded
        assert track.buffered == 2400
        frames = [await track.recv() for _ in range(5)]
        assert track.buffered == 0
        track.feed("resp_2", b"\x02\x00" * 480)
        assert track.clear()  # an interruption drops it unplayed
        assert not track.clear()
        return [left_channel(f) for f in frames]

    frames = asyncio.run(run())
    assert [f == bytes(FRAME_BYTES) for f in frames] == [False, False, False, True, True]
    assert frames[2] == b"\x01\x00" * 240 + bytes(480)
    assert reports == [("started", "resp_1"), ("stopped", "resp_1")]


def test_append_event_is_the_ga_shape() -> None:
    event = orjson.loads(append_event(b"\x00\x01"))
    assert event == {"type": "input_audio_buffer.append", "audio": "AAE="}


class FakePeer:
    def __init__(self) -> None:
        self.buffered_audio = 0
        self.delivered: list[tuple[list[tuple[str | None, bytes]], list[bytes]]] = []

    def deliver(self, audio: list[tuple[str | None, bytes]], events: list[bytes]) -> None:
        self.delivered.append((audio, events))


def connection(peer: FakePeer, **kw: float) -> CallConnection:
    return CallConnection(
        peer,
        lambda fn, *args: fn(*args),
        idle_timeout=kw.get("idle", 5.0),
        max_buffered_audio=int(kw.get("max_audio", 48_000)),
        inbox_frames=int(kw.get("inbox", 4)),
    )


async def test_receive_batches_and_the_inbox_drops_audio_beyond_its_bound() -> None:
    conn = connection(FakePeer())
    audio = append_event(bytes(4800))
    conn.deliver([b'{"type":"response.create"}', audio, audio, audio, audio, audio])
    assert conn.audio_dropped == 2
    frames = await conn.receive()
    assert frames[0] == b'{"type":"response.create"}' and len(frames) == 4
    assert conn.bytes_received == sum(len(f) for f in frames)  # type: ignore[arg-type]
    # A client event that does not fit ends the call rather than being lost silently.
    conn.deliver([audio] * 4 + [b'{"type":"session.update","session":{}}'])
    assert len(await conn.receive()) == 4
    with pytest.raises(ConnectionClosed) as closed:
        await conn.receive()
    assert closed.value.code == 1008 and closed.value.by_peer


async def test_a_quiet_peer_ends_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    conn = connection(FakePeer(), idle=3.0)
    started = trio.current_time()
    conn.deliver([append_event(bytes(10))])
    await conn.receive()
    with pytest.raises(ConnectionClosed) as closed:
        await conn.receive()
    assert "idle" in closed.value.reason
    assert trio.current_time() - started == pytest.approx(3.0)


async def test_end_drains_the_inbox_then_raises() -> None:
    conn = connection(FakePeer())
    conn.deliver([b'{"type":"response.create"}'])
    conn.end(1000, "hung up")
    assert await conn.receive() == [b'{"type":"response.create"}']
    with pytest.raises(ConnectionClosed):
        await conn.receive()
    conn.deliver([b"{}"])  # after the end nothing is queued
    with pytest.raises(ConnectionClosed):
        await conn.receive()


async def test_send_routes_audio_to_the_track_and_waits_only_while_it_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = FakePeer()
    conn = connection(peer, max_audio=9600)
    pcm = b"\x05\x00" * 2400
    delta = orjson.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "resp_1",
            "delta": base64.b64encode(pcm).decode(),
        }
    )
    done = b'{"type":"response.done","response":{}}'
    await conn.send([delta, done])
    assert peer.delivered == [([("resp_1", pcm)], [done])]

    peer.buffered_audio = 9600  # the track is full: the relay is held, not the peer
    sent = trio.Event()

    async def send_more() -> None:
        await conn.send([delta])
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_more)
        await trio.sleep(10)
        assert not sent.is_set()
        conn.deliver([append_event(bytes(10))])  # meanwhile the peer's audio still comes in
        assert len(await conn.receive()) == 1
        peer.buffered_audio = 0  # the track played it
        await sent.wait()
    assert len(peer.delivered) == 2

    # A held send ends when the call does (it never outlives its peer).
    peer.buffered_audio = 10**9
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.send, [delta])
            await trio.sleep(0.1)
            conn.end(1001, "gone")
    assert len(peer.delivered) == 2


def test_a_call_keeps_its_own_audio_formats() -> None:
    from rtgate.webrtc.peer import call_session, client_event

    session = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"},
               "turn_detection": None}, "output": {"voice": "marin", "format": {}}}}  # fmt: skip
    assert call_session(session) == {
        "type": "realtime",
        "audio": {"input": {"turn_detection": None}, "output": {"voice": "marin"}},
    }
    event = orjson.dumps({"type": "session.update", "session": session})
    assert orjson.loads(client_event(event))["session"] == call_session(session)
    other = b'{"type":"response.create","response":{"audio":{"output":{"format":{}}}}}'
    assert client_event(other) is other  # only session.update is looked into
    assert client_event(b'{"type":"session.update", nope') == b'{"type":"session.update", nope'
