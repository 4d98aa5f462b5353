"""The mock model's audio: a precomputed sine tone and a cheap loudness probe.

Owns everything :mod:`rtgate.mockmodel.translator` knows about sound: the formats it
accepts (24 kHz PCM16, 8 kHz µ-law and A-law, coded by
:mod:`rtgate.translate.audio`), the tone it answers with (cut in
``CHUNK_MS`` chunks, base64-encoded once at import so a reply costs no
encoding), byte rates for buffer lengths, and :func:`peak_level`, the
per-chunk loudness its energy VAD reads.
"""

from __future__ import annotations

import base64
import math
import struct
from functools import lru_cache
from typing import Final

from rtgate.translate.audio import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16

CHUNK_MS: Final = 40
_TONE_HZ: Final = 400  # 40 ms hold exactly 16 periods, so chunks repeat seamlessly
_AMPLITUDE: Final = 0.2
PCM_RATE: Final = 24000
_G711_RATE: Final = 8000

FORMATS: Final = ("audio/pcm", "audio/pcmu", "audio/pcma")


def _tone(rate: int, samples: int) -> list[int]:
    peak = _AMPLITUDE * 32767
    return [round(peak * math.sin(2 * math.pi * _TONE_HZ * n / rate)) for n in range(samples)]


def _pcm16(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def _chunk_bytes(fmt: str) -> bytes:
    if fmt == "audio/pcm":
        return _pcm16(_tone(PCM_RATE, PCM_RATE * CHUNK_MS // 1000))
    pcm = _pcm16(_tone(_G711_RATE, _G711_RATE * CHUNK_MS // 1000))
    return pcm16_to_ulaw(pcm) if fmt == "audio/pcmu" else pcm16_to_alaw(pcm)


def _levels(pcm: bytes) -> bytes:
    """The loudness table of a G.711 code: each byte's decoded sample, as ``_PCM_HIGH_BYTE``."""
    return bytes(min(255, abs(s) >> 8) for s in struct.unpack(f"<{len(pcm) // 2}h", pcm))


_TONE_CHUNKS: Final = {fmt: _chunk_bytes(fmt) for fmt in FORMATS}
_FULL_CHUNKS_B64: Final = {fmt: base64.b64encode(raw).decode() for fmt, raw in _TONE_CHUNKS.items()}


def bytes_per_ms(fmt: str) -> int:
    """Bytes one millisecond of audio takes in ``fmt``."""
    return PCM_RATE * 2 // 1000 if fmt == "audio/pcm" else _G711_RATE // 1000


@lru_cache(maxsize=64)
def _partial_chunk_b64(fmt: str, ms: int) -> str:
    return base64.b64encode(_TONE_CHUNKS[fmt][: ms * bytes_per_ms(fmt)]).decode()


def audio_chunks(fmt: str, total_ms: int) -> list[str]:
    """Base64 tone chunks of ``CHUNK_MS`` adding up to ``total_ms`` in format ``fmt``."""
    full, rest = divmod(total_ms, CHUNK_MS)
    chunks = [_FULL_CHUNKS_B64[fmt]] * full
    if rest:
        chunks.append(_partial_chunk_b64(fmt, rest))
    return chunks


# Loudness of a chunk, in units of 256 (the high byte of a PCM16 sample), read
# through ``bytes.translate`` so VAD costs no Python loop per sample.
_PCM_HIGH_BYTE: Final = bytes(b if b < 128 else 255 - b for b in range(256))
_ULAW_LEVEL: Final = _levels(ulaw_to_pcm16(bytes(range(256))))
_ALAW_LEVEL: Final = _levels(alaw_to_pcm16(bytes(range(256))))


def peak_level(fmt: str, audio: bytes) -> int:
    """Peak amplitude of ``audio`` in 1/128ths of full scale (0..128)."""
    if not audio:
        return 0
    if fmt == "audio/pcm":
        return max(audio[1::2].translate(_PCM_HIGH_BYTE), default=0)
    return max(audio.translate(_ULAW_LEVEL if fmt == "audio/pcmu" else _ALAW_LEVEL))
