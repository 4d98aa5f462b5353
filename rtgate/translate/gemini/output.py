"""Gemini Live's messages turned into the GA events the client sees.

Pure. Each function takes the session's :class:`~rtgate.translate.gemini.state.GeminiState`.
:func:`on_message` reads one ``BidiGenerateContentServerMessage``: usage,
``setupComplete``, ``serverContent`` (model audio or text, transcripts,
generation and turn ends, interruptions), tool calls and their cancellation,
resumption handles and ``goAway``. The GA response itself is written by
:class:`~rtgate.translate.ga.response.ResponseWriter`; Gemini's audio is put in
the client's format by :class:`~rtgate.translate.gemini.audio.ClientAudio`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from rtgate.translate.base import Outbox, new_id
from rtgate.translate.ga.events import emit
from rtgate.translate.gemini.state import RECONNECT_MARGIN, GeminiState


def parse_duration(value: object) -> float:
    """A proto-JSON Duration (``"9.5s"``) or a ``{seconds, nanos}`` object, in seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return max(0.0, float(value[:-1]))
        except ValueError:
            return 0.0
    if isinstance(value, Mapping):
        seconds = value.get("seconds", 0)
        nanos = value.get("nanos", 0)
        try:
            return max(0.0, float(seconds) + float(nanos) / 1e9)
        except (TypeError, ValueError):
            return 0.0
    return 0.0


def on_message(t: GeminiState, message: Mapping[str, Any], out: Outbox, now: float) -> None:
    """One parsed message from Gemini."""
    usage = message.get("usageMetadata")
    if isinstance(usage, dict):
        t.usage = usage  # per turn; the latest report wins
    if "setupComplete" in message:
        t.setup_complete(out)
    content = message.get("serverContent")
    if isinstance(content, Mapping):
        server_content(t, content, out)
    tool_call = message.get("toolCall")
    if isinstance(tool_call, Mapping):
        _tool_call(t, tool_call, out)
    cancellation = message.get("toolCallCancellation")
    if isinstance(cancellation, Mapping):
        ids = cancellation.get("ids")
        if isinstance(ids, list):
            t.conversation.cancelled_calls.update(i for i in ids if isinstance(i, str))
    resumption = message.get("sessionResumptionUpdate")
    if isinstance(resumption, Mapping):
        handle = resumption.get("newHandle")
        if resumption.get("resumable") is not False and isinstance(handle, str) and handle:
            t.handle = handle
    go_away = message.get("goAway")
    if isinstance(go_away, Mapping):
        left = parse_duration(go_away.get("timeLeft"))
        t.want_reconnect(out, "goAway", now, deadline=now + max(0.0, left - RECONNECT_MARGIN))


def server_content(t: GeminiState, content: Mapping[str, Any], out: Outbox) -> None:
    transcription = content.get("inputTranscription")
    if isinstance(transcription, Mapping) and isinstance(transcription.get("text"), str):
        text = transcription["text"]
        if text and t.plan.transcribe_input:
            t.conversation.input_transcript(out, text)
    turn = content.get("modelTurn")
    if isinstance(turn, Mapping) and not t.suppress:
        parts = turn.get("parts")
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, Mapping):
                _model_part(t, part, out)
    spoken = content.get("outputTranscription")
    text = spoken.get("text") if isinstance(spoken, Mapping) else None
    if isinstance(text, str) and text and not t.suppress:
        t.ensure_response(out).transcript(out, text)
    response = t.open_response()
    if content.get("generationComplete") and response is not None:
        response.audio_done(out)
    if content.get("interrupted"):
        _interrupted(t, out)
    if content.get("turnComplete"):
        _turn_complete(t, out)


def _model_part(t: GeminiState, part: Mapping[str, Any], out: Outbox) -> None:
    blob = part.get("inlineData")
    if isinstance(blob, Mapping) and isinstance(blob.get("data"), str):
        mime = str(blob.get("mimeType", ""))
        if mime.startswith("audio/") and not t.plan.text_output:
            chunk = t.audio_out.convert(blob["data"], mime, t.plan.output_format)
            t.ensure_response(out).audio(out, chunk)
    elif isinstance(part.get("text"), str) and not part.get("thought") and t.plan.text_output:
        t.ensure_response(out).text(out, part["text"])


def _interrupted(t: GeminiState, out: Outbox) -> None:
    if t.open_response() is not None and not t.suppress:
        t.close_response(out, "cancelled", {"type": "cancelled", "reason": "turn_detected"})
        t.conversation.finish_user_item(out)
        item = t.conversation.user_turn()
        emit(out, "input_audio_buffer.speech_started", audio_start_ms=0, item_id=item)
    t.suppress = True  # the rest of this turn was cut off; Gemini ends it with turnComplete


def _turn_complete(t: GeminiState, out: Outbox) -> None:
    t.suppress = False
    t.close_response(out, "completed")
    t.conversation.finish_user_item(out)
    if t.reconnect_wanted is not None and not t.reconnect_requested:
        t.reconnect_now(out, t.reconnect_wanted)


def _tool_call(t: GeminiState, tool_call: Mapping[str, Any], out: Outbox) -> None:
    calls = tool_call.get("functionCalls")
    valid = [c for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []
    if not valid:
        return
    response = t.ensure_response(out)
    for call in valid:
        call_id = call.get("id")
        name = str(call.get("name") or "")
        if not isinstance(call_id, str) or not call_id:
            call_id = new_id("call")
        t.conversation.remember_call(call_id, name)
        args = call.get("args")
        arguments = orjson.dumps(args if isinstance(args, dict) else {}).decode()
        response.function_call(out, call_id, name, arguments)
    # OpenAI ends a response at its function calls; the client answers with outputs.
    t.close_response(out, "completed")
    t.conversation.finish_user_item(out)
    t.suppress = False
