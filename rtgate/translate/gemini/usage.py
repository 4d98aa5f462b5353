"""Gemini's ``usageMetadata`` as GA usage (AI Studio and Vertex AI field names).

Pure. Tool-use prompt tokens count as input and thinking tokens as (text)
output: both are billed that way. Proto-JSON may render an int64 as a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtgate.translate.ga.usage import Usage


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _by_modality(details: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    if isinstance(details, list):
        for entry in details:
            if isinstance(entry, Mapping):
                modality = str(entry.get("modality", "")).upper()
                counts[modality] = counts.get(modality, 0) + _int(entry.get("tokenCount"))
    return counts


def map_usage(meta: Mapping[str, Any]) -> Usage:
    """GA usage from ``usageMetadata`` (AI Studio ``response*``, Vertex ``candidates*``)."""
    tool_prompt = _int(meta.get("toolUsePromptTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    input_tokens = _int(meta.get("promptTokenCount")) + tool_prompt
    response_count = meta.get("responseTokenCount", meta.get("candidatesTokenCount"))
    output_tokens = _int(response_count) + thoughts
    prompt = _by_modality(meta.get("promptTokensDetails"))
    for modality, count in _by_modality(meta.get("toolUsePromptTokensDetails")).items():
        prompt[modality] = prompt.get(modality, 0) + count
    cached = _by_modality(meta.get("cacheTokensDetails"))
    response = _by_modality(meta.get("responseTokensDetails", meta.get("candidatesTokensDetails")))
    return Usage(
        input_text=prompt.get("TEXT", 0) + prompt.get("DOCUMENT", 0),
        input_audio=prompt.get("AUDIO", 0),
        input_image=prompt.get("IMAGE", 0) + prompt.get("VIDEO", 0),
        cached=_int(meta.get("cachedContentTokenCount")),
        cached_text=cached.get("TEXT", 0),
        cached_audio=cached.get("AUDIO", 0),
        cached_image=cached.get("IMAGE", 0) + cached.get("VIDEO", 0),
        output_text=response.get("TEXT", 0) + thoughts,
        output_audio=response.get("AUDIO", 0),
        input=input_tokens,
        output=output_tokens,
        total=_int(meta.get("totalTokenCount")) or input_tokens + output_tokens,
    )
