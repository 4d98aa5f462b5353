"""The mock model's answer to ``response.create``: the full GA event sequence and its usage.

Owns what a mock response says and in which order, as OpenAI's GA Realtime
API does (https://platform.openai.com/docs/api-reference/realtime-server-events):
``response.created``,
the output item and content part, text deltas or tone audio deltas
interleaved word by word with their transcript, ``response.done`` with GA
usage. Also the pieces :mod:`rtgate.mockmodel.translator` shares with it:
:func:`emit` (every server event with a fresh ``event_id``), :func:`parts`,
the ``response`` parameter checks and the deterministic reply text.

A response is planned by the model (:class:`ResponsePlan`: what to say, to
whom, in which conversation) and streamed here in one call; the model keeps
the finished item through the ``keep`` callback, between
``response.output_item.done`` and ``conversation.item.done`` as OpenAI
orders them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import attrs

from rtgate.mockmodel.audio import CHUNK_MS, FORMATS, audio_chunks
from rtgate.mockmodel.session import (
    Json,
    check_format,
    check_keys,
    check_max_tokens,
    check_modalities,
    check_voice,
    invalid,
)
from rtgate.translate.base import Outbox, flatten_usage, get_path, new_id

_INPUT_MS_PER_TOKEN: Final = 100  # roughly what OpenAI bills for user audio
_OUTPUT_MS_PER_TOKEN: Final = 50  # and for assistant audio
_ECHO_LIMIT: Final = 200

_RESPONSE_KEYS: Final = frozenset(
    {
        "audio",
        "conversation",
        "input",
        "instructions",
        "max_output_tokens",
        "metadata",
        "output_modalities",
        "parallel_tool_calls",
        "prompt",
        "reasoning",
        "tool_choice",
        "tools",
    }
)


def emit(out: Outbox, event: Json) -> None:
    """Queue a server event with a fresh ``event_id`` right after its ``type``."""
    out.client_json({"type": event["type"], "event_id": new_id("event"), **event})


def parts(item: Json) -> list[Json]:
    """The content parts of a conversation item (none for calls and outputs)."""
    content = item.get("content")
    if not isinstance(content, list):
        return []
    return [part for part in content if isinstance(part, dict)]


def check_response(
    params: Json, session: Json, check_input: Callable[[object, str], Json]
) -> tuple[list[str], Json, list[Json] | None]:
    """Validate ``response.create`` parameters against ``session``.

    Returns the output modalities, the audio output settings (the session's
    with the response's on top) and the checked ``input`` items, if given.
    """
    check_keys(params, _RESPONSE_KEYS, "response")
    modalities = session.get("output_modalities")
    if "output_modalities" in params:
        modalities = check_modalities(params["output_modalities"], "response.output_modalities")
    if "instructions" in params and not isinstance(params["instructions"], str):
        raise invalid("response.instructions", params["instructions"])
    if "max_output_tokens" in params:
        check_max_tokens(params["max_output_tokens"], "response.max_output_tokens")
    conversation = params.get("conversation", "auto")
    if not isinstance(conversation, str):
        raise invalid("response.conversation", conversation, ("auto", "none"))
    metadata = params.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("response.metadata", metadata)
    current = get_path(session, "audio", "output")
    output: Json = dict(current) if isinstance(current, dict) else {}
    requested = get_path(params, "audio", "output")
    if requested is not None:
        if not isinstance(requested, dict):
            raise invalid("response.audio.output", requested)
        if "format" in requested:
            check_format(requested["format"], "response.audio.output.format")
        if "voice" in requested:
            check_voice(requested["voice"], "response.audio.output.voice")
        output.update(requested)
    inputs: list[Json] | None = None
    if "input" in params:
        given = params["input"]
        if not isinstance(given, list):
            raise invalid("response.input", given)
        inputs = [check_input(item, f"response.input[{i}]") for i, item in enumerate(given)]
    chosen = modalities if isinstance(modalities, list) else ["audio"]
    return [str(m) for m in chosen], output, inputs


def reply_text(context: list[Json], audio_lengths: dict[str, int], greeting: str) -> str:
    """Echo the latest user message: its text, else how much audio it held."""
    for item in reversed(context):
        if item.get("role") != "user":
            continue
        for part in reversed(parts(item)):
            text = part.get("text") if part.get("type") == "input_text" else part.get("transcript")
            if isinstance(text, str) and text.strip():
                said = " ".join(text.split())
                if len(said) > _ECHO_LIMIT:
                    said = said[:_ECHO_LIMIT].rsplit(" ", 1)[0] + "..."
                return f"You said: {said}"
        audio_ms = audio_lengths.get(str(item.get("id")), 0)
        if audio_ms:
            return f"I heard {audio_ms / 1000:.1f} seconds of audio."
        break
    return greeting


@attrs.frozen
class ResponsePlan:
    """Everything one response will say, decided before its first event."""

    modalities: list[str]
    audio_output: Json
    """The voice and format the response speaks in."""
    instructions: object
    max_tokens: object
    metadata: object
    conversation_id: str | None
    """None for an out-of-band response (``conversation: "none"``)."""
    previous_item_id: str | None
    context: list[Json]
    """The items the response answers (billed as input)."""
    text: str
    audio_ms: int


def stream_response(
    plan: ResponsePlan,
    out: Outbox,
    audio_lengths: dict[str, int],
    keep: Callable[[str, Json, int], None],
) -> None:
    """Emit the whole GA response sequence for ``plan`` and put its usage in ``out``.

    ``keep(item_id, item, audio_ms)`` adds the finished assistant item to the
    conversation (not called for an out-of-band response); ``audio_lengths``
    maps item ids to their audio length, for input usage.
    """
    in_conversation = plan.conversation_id is not None
    reply, audio_ms, max_tokens = plan.text, plan.audio_ms, plan.max_tokens
    status, status_details = "completed", None
    if (
        isinstance(max_tokens, int)
        and _text_tokens(reply) + audio_ms // _OUTPUT_MS_PER_TOKEN > max_tokens
    ):
        reply, audio_ms = _truncate(reply, audio_ms, max_tokens)
        status = "incomplete"
        status_details = {"type": "incomplete", "reason": "max_output_tokens"}

    response_id, item_id = new_id("resp"), new_id("item")
    response: Json = {
        "object": "realtime.response",
        "id": response_id,
        "status": "in_progress",
        "status_details": None,
        "output": [],
        "conversation_id": plan.conversation_id,
        "output_modalities": plan.modalities,
        "max_output_tokens": max_tokens,
        "audio": {
            "output": {k: v for k, v in plan.audio_output.items() if k in ("format", "voice")}
        },
        "usage": None,
        "metadata": plan.metadata,
    }
    emit(out, {"type": "response.created", "response": response})
    item: Json = {
        "id": item_id,
        "type": "message",
        "object": "realtime.item",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    emit(
        out,
        {
            "type": "response.output_item.added",
            "response_id": response_id,
            "output_index": 0,
            "item": item,
        },
    )
    previous = plan.previous_item_id
    if in_conversation:
        emit(out, {"type": "conversation.item.added", "previous_item_id": previous, "item": item})
    ids: Json = {
        "response_id": response_id,
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
    }
    if "audio" in plan.modalities:
        fmt = get_path(plan.audio_output, "format", "type")
        chosen = fmt if isinstance(fmt, str) and fmt in FORMATS else "audio/pcm"
        part = _stream_audio(ids, chosen, audio_ms, reply, out)
    else:
        part = _stream_text(ids, reply, out)
    item = {
        **item,
        "status": "incomplete" if status == "incomplete" else "completed",
        "content": [part],
    }
    emit(
        out,
        {
            "type": "response.output_item.done",
            "response_id": response_id,
            "output_index": 0,
            "item": item,
        },
    )
    if in_conversation:
        keep(item_id, item, audio_ms)
        emit(out, {"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    usage = _usage(plan.instructions, plan.context, reply, audio_ms, audio_lengths)
    response.update(status=status, status_details=status_details, output=[item], usage=usage)
    emit(out, {"type": "response.done", "response": response})
    out.add_usage(flatten_usage(usage))


def _stream_audio(ids: Json, fmt: str, audio_ms: int, transcript: str, out: Outbox) -> Json:
    emit(
        out,
        {
            "type": "response.content_part.added",
            **ids,
            "part": {"type": "audio", "transcript": ""},
        },
    )
    chunks = audio_chunks(fmt, audio_ms)
    words = _words(transcript)
    # Interleave the transcript with the audio as OpenAI does, word by word.
    per_chunk = math.ceil(len(words) / len(chunks)) if chunks else len(words)
    next_word = 0
    for chunk in chunks:
        out.client_json(
            {
                "type": "response.output_audio.delta",
                "event_id": new_id("event"),
                **ids,
                "delta": chunk,
            }
        )
        for word in words[next_word : next_word + per_chunk]:
            emit(out, {"type": "response.output_audio_transcript.delta", **ids, "delta": word})
        next_word += per_chunk
    for word in words[next_word:]:
        emit(out, {"type": "response.output_audio_transcript.delta", **ids, "delta": word})
    emit(out, {"type": "response.output_audio.done", **ids})
    emit(out, {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript})
    emit(
        out,
        {
            "type": "response.content_part.done",
            **ids,
            "part": {"type": "audio", "transcript": transcript},
        },
    )
    return {"type": "output_audio", "transcript": transcript}


def _stream_text(ids: Json, text: str, out: Outbox) -> Json:
    emit(out, {"type": "response.content_part.added", **ids, "part": {"type": "text", "text": ""}})
    for word in _words(text):
        emit(out, {"type": "response.output_text.delta", **ids, "delta": word})
    emit(out, {"type": "response.output_text.done", **ids, "text": text})
    emit(out, {"type": "response.content_part.done", **ids, "part": {"type": "text", "text": text}})
    return {"type": "output_text", "text": text}


def _words(text: str) -> list[str]:
    """``text`` cut into deltas that join back to exactly ``text``."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]] if text else []


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _truncate(reply: str, audio_ms: int, max_tokens: int) -> tuple[str, int]:
    """Cut a reply to ``max_tokens`` output tokens, keeping text and audio in proportion."""
    total = _text_tokens(reply) + audio_ms // _OUTPUT_MS_PER_TOKEN
    share = max_tokens / total
    kept_audio = int(audio_ms * share) // CHUNK_MS * CHUNK_MS
    budget_chars = max(0, (max_tokens - kept_audio // _OUTPUT_MS_PER_TOKEN) * 4)
    return reply[:budget_chars], kept_audio


def _usage(
    instructions: object,
    context: list[Json],
    reply: str,
    audio_ms: int,
    audio_lengths: dict[str, int],
) -> Json:
    """GA usage: the whole context is input (cached 0), the reply is output."""
    text_in = _text_tokens(instructions) if isinstance(instructions, str) else 0
    audio_in = 0
    for item in context:
        for part in parts(item):
            for key in ("text", "transcript"):
                value = part.get(key)
                if isinstance(value, str):
                    text_in += _text_tokens(value)
        arguments = item.get("arguments") or item.get("output")
        if isinstance(arguments, str):
            text_in += _text_tokens(arguments)
        audio_in += audio_lengths.get(str(item.get("id")), 0) // _INPUT_MS_PER_TOKEN
    text_out, audio_out = _text_tokens(reply), audio_ms // _OUTPUT_MS_PER_TOKEN
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }
