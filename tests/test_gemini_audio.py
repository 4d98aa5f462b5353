"""G.711 and resampling helpers shared by the Gemini and Nova translators."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtgate.translate import audio


def _samples(data: bytes) -> list[int]:
    return [
        int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data) - 1, 2)
    ]


def test_g711_round_trip_is_close() -> None:
    pcm = b"".join(v.to_bytes(2, "little", signed=True) for v in range(-30000, 30000, 997))
    for encode, decode in (
        (audio.pcm16_to_ulaw, audio.ulaw_to_pcm16),
        (audio.pcm16_to_alaw, audio.alaw_to_pcm16),
    ):
        encoded = encode(pcm)
        assert len(encoded) == len(pcm) // 2
        back = _samples(decode(encoded))
        for original, restored in zip(_samples(pcm), back, strict=True):
            assert abs(original - restored) <= max(64, abs(original) // 16)


def test_resampling_changes_length_by_the_rate_ratio() -> None:
    pcm = (1000).to_bytes(2, "little", signed=True) * 2400
    assert abs(len(audio.resample_pcm16(pcm, 24000, 8000)) - 1600) <= 4
    assert audio.resample_pcm16(pcm, 24000, 24000) is pcm
    chunked = audio.Resampler(24000, 16000)
    pieces = b"".join(chunked.convert(pcm[i : i + 480]) for i in range(0, len(pcm), 480))
    assert abs(len(pieces) - len(audio.resample_pcm16(pcm, 24000, 16000))) <= 4
    assert all(abs(s - 1000) <= 2 for s in _samples(pieces)[10:])  # no clicks at chunk edges


@given(st.binary(max_size=512))
def test_codecs_accept_any_bytes(data: bytes) -> None:
    assert len(audio.ulaw_to_pcm16(data)) == 2 * len(data)
    assert len(audio.alaw_to_pcm16(data)) == 2 * len(data)
    assert len(audio.pcm16_to_ulaw(data)) == len(data) // 2
    assert len(audio.pcm16_to_alaw(data)) == len(data) // 2
    audio.resample_pcm16(data, 8000, 24000)
