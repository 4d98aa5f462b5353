"""Gemini's output audio in the client's format, chunk by chunk.

Pure. Gemini answers 16-bit PCM at 24 kHz (or the rate its MIME type names);
a client asking for another PCM rate or for G.711 gets it resampled and
re-encoded here, with the resampler's state kept across the chunks of one
answer. The common case (PCM at 24 kHz both sides) passes the base64 through.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from rtgate.translate import audio
from rtgate.translate.gemini.setup import OUTPUT_RATE, PCM24, AudioFormat

_RATE: Final = re.compile(r"rate=(\d+)")
_G711_RATE: Final = 8000


class ClientAudio:
    """Gemini's output audio in the client's output format, chunk by chunk."""

    __slots__ = ("_resampler",)

    def __init__(self) -> None:
        self._resampler: audio.Resampler | None = None

    def convert(self, data: str, mime: str, fmt: AudioFormat) -> str:
        """One base64 chunk of ``mime`` audio as base64 in ``fmt`` ("" if it is not base64)."""
        match = _RATE.search(mime)
        rate = int(match.group(1)) if match else OUTPUT_RATE
        if fmt == PCM24 and rate == OUTPUT_RATE:
            return data  # the common case: passes through untouched
        target = fmt.rate if fmt.encoding == "pcm" else _G711_RATE
        resampler = self._resampler
        if resampler is None or resampler.from_rate != rate or resampler.to_rate != target:
            resampler = self._resampler = audio.Resampler(rate, target)
        try:
            pcm = resampler.convert(base64.b64decode(data))
        except (binascii.Error, ValueError):
            return ""
        if fmt.encoding == "pcmu":
            pcm = audio.pcm16_to_ulaw(pcm)
        elif fmt.encoding == "pcma":
            pcm = audio.pcm16_to_alaw(pcm)
        return base64.b64encode(pcm).decode()

    def reset(self) -> None:
        """A response ended: the next chunk starts a new utterance."""
        if self._resampler is not None:
            self._resampler.reset()
