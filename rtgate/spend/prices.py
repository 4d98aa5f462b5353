"""What a realtime response costs: the shipped price table, LiteLLM overrides, the cost function.

Pure. Prices are US dollars per token (LiteLLM's unit: its ``model_info`` fields
``input_cost_per_token`` and friends are per token, so an override reads the same
in both). A response's ``usage`` arrives flattened (``input_token_details.audio_tokens``,
see :func:`rtgate.translate.base.flatten_usage`); every translator emits GA usage,
so one function prices every provider.

Cached input tokens are charged at the cached price instead of, never on top of,
the uncached price, and a cached price is never above its uncached one.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

PRICE_TABLE_DATE = "2026-12-04"
"""When the table below was compiled from the providers' pricing pages."""

_M = 1e-6
"""Dollars per million tokens -> dollars per token."""


@attrs.frozen
class Prices:
    """Per-token prices of one model (None: falls back as LiteLLM does, see :func:`cost`)."""

    input_text: float = 0.0
    output_text: float = 0.0
    input_audio: float | None = None
    output_audio: float | None = None
    input_image: float | None = None
    cached_text: float | None = None
    cached_audio: float | None = None
    cached_image: float | None = None
    per_second: float | None = None
    """Price of a second of session time (providers that bill connection time, xAI)."""

    def is_free(self) -> bool:
        return not any(attrs.astuple(self))


def _table(rows: Mapping[str, tuple[float, ...]]) -> dict[str, Prices]:
    """``{model: (text in, cached text in, text out, audio in, cached audio in, audio out)}``, per 1M."""
    out: dict[str, Prices] = {}
    for model, row in rows.items():
        t_in, t_cached, t_out, a_in, a_cached, a_out = row
        out[model] = Prices(
            input_text=t_in * _M,
            cached_text=t_cached * _M,
            output_text=t_out * _M,
            input_audio=a_in * _M,
            cached_audio=a_cached * _M,
            output_audio=a_out * _M,
        )
    return out


# OpenAI, per 1M tokens: https://openai.com/api/pricing/ and
# https://platform.openai.com/docs/pricing (Realtime API, audio and text rows).
# Azure OpenAI bills the same global-deployment figures:
# https://azure.microsoft.com/en-us/pricing/details/cognitive-services/openai-service/
_OPENAI = _table(
    {
        "gpt-realtime": (4.00, 0.40, 16.00, 32.00, 0.40, 64.00),
        "gpt-realtime-2025-08-28": (4.00, 0.40, 16.00, 32.00, 0.40, 64.00),
        "gpt-realtime-mini": (0.60, 0.06, 2.40, 10.00, 0.30, 20.00),
        "gpt-4o-realtime-preview": (5.00, 2.50, 20.00, 40.00, 2.50, 80.00),
        "gpt-4o-mini-realtime-preview": (0.60, 0.30, 2.40, 10.00, 0.30, 20.00),
        # Transcription models (``?intent=transcription``): text in, -, text out, audio in, -, -.
        "gpt-4o-transcribe": (2.50, 2.50, 10.00, 6.00, 6.00, 0.0),
        "gpt-4o-mini-transcribe": (1.25, 1.25, 5.00, 3.00, 3.00, 0.0),
    }
)
_OPENAI["gpt-realtime"] = attrs.evolve(_OPENAI["gpt-realtime"], input_image=5.00 * _M,
                                       cached_image=0.50 * _M)  # fmt: skip
_OPENAI["gpt-realtime-mini"] = attrs.evolve(_OPENAI["gpt-realtime-mini"], input_image=0.80 * _M,
                                            cached_image=0.08 * _M)  # fmt: skip
# whisper-1 is billed per minute of audio ($0.006), reported as duration usage.
_OPENAI["whisper-1"] = Prices(per_second=0.006 / 60)

# Google Gemini API, Live API rows, per 1M tokens: https://ai.google.dev/gemini-api/docs/pricing
# Vertex AI, Live API rows: https://cloud.google.com/vertex-ai/generative-ai/pricing
# (no context caching on the Live API: cached = uncached).
_GOOGLE = _table(
    {
        "gemini-2.5-flash-native-audio-preview-09-2025": (0.50, 0.50, 2.00, 3.00, 3.00, 12.00),
        "gemini-2.5-flash-native-audio-latest": (0.50, 0.50, 2.00, 3.00, 3.00, 12.00),
        "gemini-live-2.5-flash-preview": (0.50, 0.50, 2.00, 3.00, 3.00, 12.00),
        "gemini-live-2.5-flash": (0.50, 0.50, 2.00, 3.00, 3.00, 12.00),
        "gemini-2.0-flash-live-001": (0.35, 0.35, 1.50, 2.10, 2.10, 8.50),
    }
)

# Amazon Bedrock, Nova Sonic rows ("speech" = audio): https://aws.amazon.com/bedrock/pricing/
# (the page quotes dollars per 1K tokens; here per 1M like the rest).
_AWS = _table(
    {
        "amazon.nova-sonic-v1:0": (0.06, 0.06, 0.24, 3.40, 3.40, 13.60),
        "amazon.nova-2-sonic-v1:0": (0.33, 0.33, 2.75, 3.00, 3.00, 12.00),
    }
)

# xAI Grok Voice Agent API bills connection time, $0.05 per minute: https://docs.x.ai/docs/models
_XAI = {
    "grok-voice-latest": Prices(per_second=0.05 / 60),
    "grok-voice": Prices(per_second=0.05 / 60),
}

PRICE_TABLE: Mapping[str, Mapping[str, Prices]] = {
    "openai": _OPENAI,
    "azure": _OPENAI,
    "gemini": _GOOGLE,
    "vertex_ai": _GOOGLE,
    "bedrock": _AWS,
    "xai": _XAI,
    "mock": {},
}
"""Prices by provider, then by the provider's model name (``litellm_params.model`` after the prefix)."""

OVERRIDE_FIELDS: Mapping[str, str] = {
    "input_cost_per_token": "input_text",
    "output_cost_per_token": "output_text",
    "input_cost_per_audio_token": "input_audio",
    "output_cost_per_audio_token": "output_audio",
    "input_cost_per_image_token": "input_image",
    "input_cost_per_image": "input_image",
    "cache_read_input_token_cost": "cached_text",
    "cache_read_input_audio_token_cost": "cached_audio",
    "cache_read_input_image_token_cost": "cached_image",
    "input_cost_per_second": "per_second",
}
"""LiteLLM's ``model_info`` price fields and the :class:`Prices` field each sets.
(LiteLLM's own map names gpt-realtime's image price ``input_cost_per_image``; it is per token.)"""


def lookup(provider: str, model: str, base_model: str | None = None) -> Prices | None:
    """The shipped prices of ``provider/model`` (or of ``base_model``, LiteLLM's key for
    Azure deployments whose names are not model names), or None when unknown."""
    table = PRICE_TABLE.get(provider, {})
    for name in (base_model, model):
        if not name:
            continue
        name = name.split("/", 1)[-1]
        if name in table:
            return table[name]
    return None


def with_overrides(base: Prices | None, model_info: Mapping[str, object]) -> Prices | None:
    """``base`` with LiteLLM's ``model_info`` price fields applied (None if neither gives a price)."""
    changes: dict[str, float] = {}
    for field, target in OVERRIDE_FIELDS.items():
        value = model_info.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            changes[target] = float(value)
    if not changes:
        return base
    return attrs.evolve(base or Prices(), **changes)


def override_problems(model_info: Mapping[str, object]) -> list[str]:
    """What is wrong with the price fields of a ``model_info`` (for the config loader)."""
    problems = []
    for field in OVERRIDE_FIELDS:
        value = model_info.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"model_info.{field} must be a number >= 0")
    return problems


@attrs.frozen
class TokenCounts:
    """One response's usage split the way prices are (every field >= 0)."""

    text_in: int = 0
    audio_in: int = 0
    image_in: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    cached_image: int = 0
    text_out: int = 0
    audio_out: int = 0
    seconds: float = 0.0
    """Billed duration (transcription ``duration`` usage, connection time)."""

    @property
    def input_tokens(self) -> int:
        return self.text_in + self.audio_in + self.image_in

    @property
    def output_tokens(self) -> int:
        return self.text_out + self.audio_out

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other),
                                                        strict=True)))  # fmt: skip


def _n(usage: Mapping[str, int], key: str) -> int:
    value = usage.get(key, 0)
    return value if isinstance(value, int) and value > 0 else 0


def split_usage(usage: Mapping[str, int]) -> TokenCounts:
    """GA ``usage`` (flattened) -> :class:`TokenCounts`; cached counts never exceed their totals.

    Where the details are missing, the remainder of ``input_tokens`` / ``output_tokens``
    is text (what a text-only provider reports).
    """
    audio_in = _n(usage, "input_token_details.audio_tokens")
    image_in = _n(usage, "input_token_details.image_tokens")
    if "input_token_details.text_tokens" in usage:
        text_in = _n(usage, "input_token_details.text_tokens")
    else:
        text_in = max(0, _n(usage, "input_tokens") - audio_in - image_in)
    cached_audio = min(
        audio_in, _n(usage, "input_token_details.cached_tokens_details.audio_tokens")
    )
    cached_image = min(
        image_in, _n(usage, "input_token_details.cached_tokens_details.image_tokens")
    )
    if "input_token_details.cached_tokens_details.text_tokens" in usage:
        cached_text = _n(usage, "input_token_details.cached_tokens_details.text_tokens")
    else:  # only a total: what is not audio or image is text
        cached_total = _n(usage, "input_token_details.cached_tokens")
        cached_text = max(0, cached_total - cached_audio - cached_image)
    cached_text = min(text_in, cached_text)
    audio_out = _n(usage, "output_token_details.audio_tokens")
    if "output_token_details.text_tokens" in usage:
        text_out = _n(usage, "output_token_details.text_tokens")
    else:
        text_out = max(0, _n(usage, "output_tokens") - audio_out)
    seconds = usage.get("seconds", 0)
    return TokenCounts(
        text_in=text_in, audio_in=audio_in, image_in=image_in,
        cached_text=cached_text, cached_audio=cached_audio, cached_image=cached_image,
        text_out=text_out, audio_out=audio_out,
        seconds=float(seconds) if isinstance(seconds, int | float) and seconds > 0 else 0.0,
    )  # fmt: skip


def _cached(cached: float | None, fallback: float | None, uncached: float) -> float:
    """A cached price: as given (else ``fallback``, else uncached), never above uncached."""
    price = cached if cached is not None else fallback if fallback is not None else uncached
    return min(price, uncached)


def cost(counts: TokenCounts, prices: Prices) -> float:
    """Dollars for ``counts`` at ``prices``.

    LiteLLM's fallbacks: no audio price means the text price, no image price the text
    price, no cached audio/image price the cached text price, no cached price the
    uncached one.
    """
    audio_in = prices.input_audio if prices.input_audio is not None else prices.input_text
    audio_out = prices.output_audio if prices.output_audio is not None else prices.output_text
    image_in = prices.input_image if prices.input_image is not None else prices.input_text
    cached_text = _cached(prices.cached_text, None, prices.input_text)
    cached_audio = _cached(prices.cached_audio, prices.cached_text, audio_in)
    cached_image = _cached(prices.cached_image, prices.cached_text, image_in)
    total = (
        (counts.text_in - counts.cached_text) * prices.input_text
        + counts.cached_text * cached_text
        + (counts.audio_in - counts.cached_audio) * audio_in
        + counts.cached_audio * cached_audio
        + (counts.image_in - counts.cached_image) * image_in
        + counts.cached_image * cached_image
        + counts.text_out * prices.output_text
        + counts.audio_out * audio_out
        + counts.seconds * (prices.per_second or 0.0)
    )
    return max(0.0, total)


def usage_cost(usage: Mapping[str, int], prices: Prices | None) -> float:
    """Dollars for one response's flattened GA ``usage`` (0 when the model has no prices)."""
    if prices is None:
        return 0.0
    return cost(split_usage(usage), prices)
