"""Audio sample conversions for translators: G.711 <-> PCM16 and PCM16 resampling.

Pure functions on little-endian 16-bit mono PCM. OpenAI clients may speak
G.711 (8 kHz µ-law or A-law) while Gemini and Nova Sonic take only linear PCM,
so translators convert at the edge. The codec and resampler are the standard
library's ``audioop`` (deprecated since 3.11, removed in 3.13: its
DeprecationWarning is silenced here only; ``audioop-lts`` provides the same
module on later Pythons).

Resampling keeps filter state between chunks in :class:`Resampler`, so a
stream converted chunk by chunk has no clicks at chunk edges;
:func:`resample_pcm16` is the one-shot form.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from types import ModuleType
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop as _audioop

_codec: ModuleType = _audioop
_WIDTH = 2  # bytes per PCM16 sample


def _whole_samples(data: bytes) -> bytes:
    """Drop a trailing odd byte: audioop rejects partial samples."""
    return data[: len(data) - (len(data) % _WIDTH)]


def ulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 µ-law bytes to PCM16 LE (same rate, twice the bytes)."""
    return bytes(_codec.ulaw2lin(data, _WIDTH))


def alaw_to_pcm16(data: bytes) -> bytes:
    """G.711 A-law bytes to PCM16 LE."""
    return bytes(_codec.alaw2lin(data, _WIDTH))


def g711_b64_to_pcm16_b64(b64: bytes | str, *, mu_law: bool) -> bytes:
    """Base64 G.711 (µ-law or A-law) as base64 PCM16 at the same rate: what Gemini and
    Nova take from a G.711 client. Raises ``binascii.Error`` on bad base64."""
    raw = binascii.a2b_base64(b64)
    return base64.b64encode(ulaw_to_pcm16(raw) if mu_law else alaw_to_pcm16(raw))


def pcm16_to_ulaw(data: bytes) -> bytes:
    """PCM16 LE to G.711 µ-law (same rate, half the bytes)."""
    return bytes(_codec.lin2ulaw(_whole_samples(data), _WIDTH))


def pcm16_to_alaw(data: bytes) -> bytes:
    """PCM16 LE to G.711 A-law."""
    return bytes(_codec.lin2alaw(_whole_samples(data), _WIDTH))


def resample_pcm16(data: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample one complete PCM16 mono buffer (no state kept between calls)."""
    if from_rate == to_rate:
        return data
    converted, _ = _codec.ratecv(_whole_samples(data), _WIDTH, 1, from_rate, to_rate, None)
    return bytes(converted)


class Resampler:
    """A PCM16 mono resampler for a stream cut in chunks (keeps the filter state)."""

    __slots__ = ("_state", "from_rate", "to_rate")

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._state: Any = None

    def convert(self, data: bytes) -> bytes:
        if self.from_rate == self.to_rate:
            return data
        converted, self._state = _codec.ratecv(
            _whole_samples(data), _WIDTH, 1, self.from_rate, self.to_rate, self._state
        )
        return bytes(converted)

    def reset(self) -> None:
        """Forget the previous chunk (a new utterance starts)."""
        self._state = None
