"""The mock model's answer to ``response.create``: what it says, and its usage.

Owns what a mock response says: the deterministic reply text, text deltas
word by word or tone audio interleaved word by word with its transcript, the
``max_output_tokens`` cut, and usage estimated from the context. The GA event
sequence itself (``response.created`` ... ``response.done``, ids, indices,
item and part shapes) is :class:`rtgate.translate.ga.response.ResponseWriter`'s,
as for every translating provider (OpenAI's GA server events:
https://platform.openai.com/docs/api-reference/realtime-server-events). Also the pieces
:mod:`rtgate.mockmodel.translator` shares with it: :func:`emit` (every server
event with a fresh ``event_id``), :func:`parts` and the ``response``
parameter checks.

A response is planned by the model (:class:`ResponsePlan`: what to say, to
whom, in which conversation) and streamed here in one call; the model keeps
the finished item through the ``keep`` callback.
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
from rtgate.translate.base import Outbox, get_path, new_id
from rtgate.translate.ga.items import ItemChain
from rtgate.translate.ga.response import ResponseWriter
from rtgate.translate.ga.usage import Usage

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
    chain: ItemChain | None = None
    if in_conversation:
        chain = ItemChain()
        chain.last = plan.previous_item_id
    audio = "audio" in plan.modalities
    writer = ResponseWriter(
        out,
        modality="audio" if audio else "text",
        output_format=plan.audio_output.get("format"),
        voice=plan.audio_output.get("voice"),
        max_output_tokens=max_tokens,
        conversation=chain,
        conversation_id=plan.conversation_id,
        metadata=plan.metadata,
    )
    writer.open_message(out)  # announced even when the reply is empty, as OpenAI does
    if audio:
        fmt = get_path(plan.audio_output, "format", "type")
        _stream_audio(
            writer,
            fmt if isinstance(fmt, str) and fmt in FORMATS else "audio/pcm",
            audio_ms,
            reply,
            out,
        )
    else:
        for word in _words(reply):
            writer.text(out, word)
    response = writer.finish(out, status, status_details)
    item = writer.items[0]
    if in_conversation:
        keep(str(item["id"]), item, audio_ms)
    usage = _usage(plan.instructions, plan.context, reply, audio_ms, audio_lengths)
    writer.done(out, response, usage)


def _stream_audio(
    writer: ResponseWriter, fmt: str, audio_ms: int, transcript: str, out: Outbox
) -> None:
    """Tone chunks with the transcript interleaved word by word, as OpenAI interleaves them."""
    chunks = audio_chunks(fmt, audio_ms)
    words = _words(transcript)
    per_chunk = math.ceil(len(words) / len(chunks)) if chunks else len(words)
    next_word = 0
    for chunk in chunks:
        writer.audio(out, chunk)
        for word in words[next_word : next_word + per_chunk]:
            writer.transcript(out, word)
        next_word += per_chunk
    for word in words[next_word:]:
        writer.transcript(out, word)


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
) -> Usage:
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
    return Usage(
        input_text=text_in,
        input_audio=audio_in,
        output_text=_text_tokens(reply),
        output_audio=audio_ms // _OUTPUT_MS_PER_TOKEN,
    )
