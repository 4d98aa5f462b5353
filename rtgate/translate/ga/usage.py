"""GA ``usage`` of one response: token counts by modality, as ``response.done`` reports them.

Each provider counts tokens its own way (Gemini's ``usageMetadata``, Nova's
``usageEvent`` deltas, the mock's estimate); each fills one :class:`Usage`
and gets the same GA shape (``RealtimeResponseUsage`` with every detail
field) and the same flattened record for :meth:`rtgate.translate.base.Outbox.add_usage`.
"""

from __future__ import annotations

from typing import Any

import attrs

from rtgate.translate.base import flatten_usage


@attrs.frozen
class Usage:
    """Tokens of one response, by modality.

    ``input``, ``output`` and ``total`` are the provider's own totals when it reports
    them (they may count tokens no modality detail names); else the details' sums.
    """

    input_text: int = 0
    input_audio: int = 0
    input_image: int = 0
    cached: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    cached_image: int = 0
    output_text: int = 0
    output_audio: int = 0
    input: int | None = None
    output: int | None = None
    total: int | None = None

    @property
    def input_tokens(self) -> int:
        if self.input is not None:
            return self.input
        return self.input_text + self.input_audio + self.input_image

    @property
    def output_tokens(self) -> int:
        return self.output if self.output is not None else self.output_text + self.output_audio

    def as_ga(self) -> dict[str, Any]:
        """The GA ``usage`` object."""
        return {
            "total_tokens": self.total or self.input_tokens + self.output_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_token_details": {
                "text_tokens": self.input_text,
                "audio_tokens": self.input_audio,
                "image_tokens": self.input_image,
                "cached_tokens": self.cached,
                "cached_tokens_details": {
                    "text_tokens": self.cached_text,
                    "audio_tokens": self.cached_audio,
                    "image_tokens": self.cached_image,
                },
            },
            "output_token_details": {
                "text_tokens": self.output_text,
                "audio_tokens": self.output_audio,
            },
        }

    def record(self) -> dict[str, int]:
        """Flattened for :meth:`Outbox.add_usage` (``input_token_details.audio_tokens``...)."""
        return flatten_usage(self.as_ga())
