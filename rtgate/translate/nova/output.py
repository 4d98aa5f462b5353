"""Nova Sonic output events read into the GA stream: the ``on_upstream`` handlers.

Owns the meaning of each Nova output event
(https://docs.aws.amazon.com/nova/latest/userguide/output-events.html): content blocks
tracked by ``contentId`` (:class:`Content`); a USER TEXT block is the user's
turn (``speech_started`` / ``committed`` / transcription events); only FINAL
ASSISTANT text becomes the transcript (SPECULATIVE is a preview of the same
words); ``audioOutput`` passes through (re-encoded for G.711 clients); the
interrupt marker and INTERRUPTED stops are barge-in; ``toolUse`` becomes a
function call; ``usageEvent`` deltas (or differenced totals) are summed for
the response's ``usage``. Handlers take the session's
:class:`~rtgate.translate.nova.state.NovaState`; the GA response events are
written by :mod:`~rtgate.translate.nova.response` and :mod:`rtgate.translate.ga`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Final

import orjson

from rtgate.translate.audio import pcm16_to_alaw, pcm16_to_ulaw
from rtgate.translate.base import Outbox, new_id
from rtgate.translate.ga import items as ga_items
from rtgate.translate.ga.events import emit
from rtgate.translate.nova.response import (
    barge_in,
    ensure_response,
    finish_response,
    function_call,
)
from rtgate.translate.nova.state import Content, NovaState


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _is_interrupt_marker(text: str) -> bool:
    """Nova's barge-in marker is the text content ``{ "interrupted" : true }`` (NOVA-SAMPLE)."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return False
    try:
        body = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("interrupted") is True


def _content_id(body: dict[str, Any]) -> str:
    return str(body.get("contentId", ""))


def _on_content_start(t: NovaState, body: dict[str, Any], out: Outbox) -> None:
    stage = "FINAL"
    fields = body.get("additionalModelFields")
    if isinstance(fields, str) and "SPECULATIVE" in fields:
        stage = "SPECULATIVE"
    content = Content(str(body.get("type", "")), str(body.get("role", "")), stage)
    t.contents[_content_id(body)] = content
    if content.role == "USER" and content.kind == "TEXT":
        # A new user turn: whatever the assistant was doing is over.
        if t.response is not None:
            finish_response(t, out, "completed")
        t.suppress = False
        content.user_item = _begin_user_item(t, out)


def _begin_user_item(t: NovaState, out: Outbox) -> str:
    """The user's turn as GA sees it; skips what a client ``commit`` already announced."""
    announced = t.pending_user_item
    item_id = announced or new_id("item")
    t.pending_user_item = None
    if announced is None:
        emit(
            out,
            "input_audio_buffer.speech_started",
            audio_start_ms=int(t.turn_start_ms),
            item_id=item_id,
        )
    emit(out, "input_audio_buffer.speech_stopped", audio_end_ms=int(t.input_ms), item_id=item_id)
    if announced is None:
        emit(out, "input_audio_buffer.committed", previous_item_id=t.chain.last, item_id=item_id)
    t.turn_start_ms = t.input_ms
    t.chain.added(out, ga_items.user_audio_item(item_id, "in_progress", None))
    return item_id


def _on_text(t: NovaState, body: dict[str, Any], out: Outbox) -> None:
    content = t.contents.get(_content_id(body))
    text = body.get("content")
    if content is None or not isinstance(text, str):
        return
    if content.user_item is not None:
        content.text.append(text)
        ga_items.transcription_delta(out, content.user_item, text)
        return
    if _is_interrupt_marker(text):
        barge_in(t, out)
        return
    if content.role != "ASSISTANT" or t.suppress:
        return
    # One transcript stream: FINAL (what was spoken). In text mode with no audio
    # wanted, SPECULATIVE would arrive earlier but FINAL still carries every sentence.
    if content.stage != "FINAL":
        return
    response = ensure_response(t, out)
    if response.modality == "text":
        response.text(out, text)
    else:
        response.transcript(out, text)


def _on_audio(t: NovaState, body: dict[str, Any], out: Outbox) -> None:
    audio = body.get("content")
    if t.suppress or not isinstance(audio, str) or t.config.output_modalities == ["text"]:
        return
    fmt = t.config.output_format["type"]
    if fmt != "audio/pcm":
        pcm = base64.b64decode(audio)
        encoded = pcm16_to_ulaw(pcm) if fmt == "audio/pcmu" else pcm16_to_alaw(pcm)
        audio = base64.b64encode(encoded).decode()
    ensure_response(t, out).audio(out, audio)


def _on_tool_use(t: NovaState, body: dict[str, Any], out: Outbox) -> None:
    content = t.contents.get(_content_id(body))
    if content is None:
        content = t.contents[_content_id(body)] = Content("TOOL", "TOOL", "FINAL")
    content.tool = {
        "name": str(body.get("toolName", "")),
        "call_id": str(body.get("toolUseId", "")),
        "arguments": body.get("content") if isinstance(body.get("content"), str) else "{}",
    }


def _on_content_end(t: NovaState, body: dict[str, Any], out: Outbox) -> None:
    content = t.contents.pop(_content_id(body), None)
    stop = body.get("stopReason")
    if content is None:
        return
    if content.user_item is not None:
        transcript = "".join(content.text)
        # Nova bills the user's speech as input tokens, not transcription time: zero seconds.
        ga_items.transcription_completed(out, content.user_item, transcript, 0)
        t.chain.done(out, ga_items.user_audio_item(content.user_item, "completed", transcript))
        return
    if stop == "INTERRUPTED":
        barge_in(t, out)
    elif content.tool is not None:
        if not t.suppress:
            function_call(t, content.tool, out)
            finish_response(t, out, "completed", defer=True)
    elif content.kind == "TEXT" and content.stage == "FINAL" and stop == "END_TURN":
        finish_response(t, out, "completed", defer=True)


def _on_usage(t: NovaState, body: dict[str, Any], out: Outbox) -> None:
    details = body.get("details")
    delta = details.get("delta") if isinstance(details, dict) else None
    if isinstance(delta, dict):
        for side, prefix in (("input", "in"), ("output", "out")):
            part = delta.get(side)
            if isinstance(part, dict):
                _add_usage(t, f"{prefix}_audio", _int(part.get("speechTokens")))
                _add_usage(t, f"{prefix}_text", _int(part.get("textTokens")))
        return
    # No per-event delta: the cumulative totals, differenced.
    for key, total in (
        ("in_text", body.get("totalInputTokens")),
        ("out_text", body.get("totalOutputTokens")),
    ):
        value = _int(total)
        _add_usage(t, key, max(0, value - t.totals.get(key, 0)))
        t.totals[key] = value


def _add_usage(t: NovaState, key: str, value: int) -> None:
    if value:
        t.usage[key] = t.usage.get(key, 0) + value


def _on_completion_end(t: NovaState, body: dict[str, Any], out: Outbox) -> None:
    if t.response is not None:
        finish_response(t, out, "completed")
    t.suppress = False


Handler = Callable[[NovaState, dict[str, Any], Outbox], None]
HANDLERS: Final[dict[str, Handler]] = {
    "contentStart": _on_content_start,
    "textOutput": _on_text,
    "audioOutput": _on_audio,
    "toolUse": _on_tool_use,
    "contentEnd": _on_content_end,
    "usageEvent": _on_usage,
    "completionEnd": _on_completion_end,
}
"""Nova output event name -> handler; other events (``completionStart``...) are ignored."""
