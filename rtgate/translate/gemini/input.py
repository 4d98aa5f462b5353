"""Client events other than ``session.update``, translated into Gemini Live input.

Pure. Each handler takes the :class:`~rtgate.translate.gemini.state.GeminiState`
of the session it acts on and appends to an :class:`Outbox`. Owns:
``input_audio_buffer.append`` (the hot path: the base64 audio is cut out of
the frame without parsing the JSON and re-wrapped as ``realtimeInput``; only
G.711 is decoded, to PCM16), commit and clear, ``conversation.item.create``
(messages, images, function calls and their outputs as ``clientContent`` or
``toolResponse``), ``response.create`` / ``response.cancel``, and the
acknowledgements of events Gemini has no equivalent for (the Live API's
``BidiGenerateContentClientMessage`` has no truncate, delete, retrieve or
cancel: https://ai.google.dev/api/live).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from rtgate.protocol.events import appended_audio, is_base64
from rtgate.translate import audio
from rtgate.translate.base import Outbox, error_event, invalid_audio_error
from rtgate.translate.ga.events import emit
from rtgate.translate.ga.items import truncated_ack
from rtgate.translate.gemini.setup import AudioFormat
from rtgate.translate.gemini.state import GeminiState

Handler = Callable[[GeminiState, dict[str, Any], Outbox, float], None]

ACTIVITY_START: Final = b'{"realtimeInput":{"activityStart":{}}}'
ACTIVITY_END: Final = b'{"realtimeInput":{"activityEnd":{}}}'
_AUDIO_STREAM_END: Final = b'{"realtimeInput":{"audioStreamEnd":true}}'
_TURN_COMPLETE: Final = b'{"clientContent":{"turnComplete":true}}'
_G711_RATE: Final = 8000
_RESPONSE_FIELDS_GEMINI_LACKS: Final = (
    "instructions",
    "tools",
    "tool_choice",
    "output_modalities",
    "audio",
    "max_output_tokens",
    "input",
    "prompt",
    "temperature",
)


def event_id(event: Mapping[str, Any]) -> str | None:
    """The client's ``event_id``, to quote back in an error."""
    value = event.get("event_id")
    return value if isinstance(value, str) else None


# -- audio ------------------------------------------------------------------------------


def append_audio(t: GeminiState, frame: bytes, out: Outbox) -> None:
    """``input_audio_buffer.append`` as ``realtimeInput.audio`` (no JSON parse for PCM)."""
    data = appended_audio(frame)
    if data is None or not is_base64(data):
        out.client_json(invalid_audio_error())
        return
    if not data:
        return
    fmt = t.plan.input_format
    if fmt.encoding == "pcm":
        rate = fmt.rate
    else:  # checked base64 above, so this decode cannot fail
        data, rate = _g711_as_pcm16(data, fmt), _G711_RATE
    message = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=%d","data":"%s"}}}' % (
        rate,
        data,
    )
    if t.plan.manual_activity and not t.activity_open:
        t.activity_open = True
        t.send_upstream(out, ACTIVITY_START)
    conversation = t.conversation
    if conversation.user_item is not None and conversation.user_announced:
        conversation.finish_user_item(out)
    conversation.user_turn()
    conversation.audio_since_commit = True
    t.input_since_response = True
    t.send_upstream(out, message, is_audio=True)


def _g711_as_pcm16(b64: bytes | str, fmt: AudioFormat) -> bytes:
    """Base64 G.711 as base64 PCM16 at 8 kHz: Gemini takes linear PCM only."""
    return audio.g711_b64_to_pcm16_b64(b64, mu_law=fmt.encoding == "pcmu")


def _audio_blob(t: GeminiState, b64: str) -> dict[str, str]:
    fmt = t.plan.input_format
    if fmt.encoding == "pcm":
        return {"mimeType": f"audio/pcm;rate={fmt.rate}", "data": b64}
    pcm = _g711_as_pcm16(b64, fmt).decode()
    return {"mimeType": f"audio/pcm;rate={_G711_RATE}", "data": pcm}


def commit(t: GeminiState, event: dict[str, Any], out: Outbox, now: float) -> None:
    if not t.conversation.audio_since_commit:
        out.client_json(
            error_event(
                "Error committing input audio buffer: buffer is empty.",
                code="input_audio_buffer_commit_empty",
                event_id=event_id(event),
            )
        )
        return
    if t.plan.manual_activity:
        if t.activity_open:
            t.activity_open = False
            t.send_upstream(out, ACTIVITY_END)
    elif not t.vertex:
        # AI Studio: ends the audio stream so its detector closes the turn (Vertex lacks it).
        t.send_upstream(out, _AUDIO_STREAM_END)
    t.conversation.audio_since_commit = False
    t.conversation.announce_user_item(out)


def clear(t: GeminiState, event: dict[str, Any], out: Outbox, now: float) -> None:
    # Audio already streamed cannot be taken back; audio still held is dropped.
    t.drop_held_audio()
    t.conversation.audio_since_commit = False
    t.conversation.drop_unannounced()
    emit(out, "input_audio_buffer.cleared")


# -- conversation items -----------------------------------------------------------------


def item_create(t: GeminiState, event: dict[str, Any], out: Outbox, now: float) -> None:
    item = event.get("item")
    if not isinstance(item, Mapping):
        out.client_json(error_event("conversation.item.create needs an 'item'", param="item"))
        return
    kind = item.get("type", "message")
    if kind == "function_call_output":
        _function_output(t, item, event, out)
        return
    if kind == "function_call":
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            out.client_json(error_event("function_call items need call_id and name", param="item"))
            return
        t.conversation.call_names[call_id] = name
        part: dict[str, Any] = {
            "functionCall": {
                "id": call_id,
                "name": name,
                "args": _as_object(item.get("arguments"), "value"),
            }
        }
        _content(t, out, "model", [part])
        t.conversation.item_added(out, item)
        return
    if kind != "message":
        out.client_json(
            error_event(
                f"item type '{str(kind)[:40]}' is not supported by Gemini Live",
                param="item.type",
            )
        )
        return
    role = item.get("role")
    if role not in ("user", "assistant"):
        out.client_json(
            error_event(
                f"Gemini Live cannot add a '{str(role)[:20]}' message mid-session; use session.instructions",
                param="item.role",
                event_id=event_id(event),
            )
        )
        return
    parts = _parts(t, item.get("content"), out)
    if parts is None:
        return
    _content(t, out, "user" if role == "user" else "model", parts)
    if role == "user":
        t.pending_content = True
        t.input_since_response = True
    t.conversation.item_added(out, item)


def _parts(t: GeminiState, content: object, out: Outbox) -> list[dict[str, Any]] | None:
    if not isinstance(content, list) or not content:
        out.client_json(
            error_event("a message item needs a non-empty 'content' list", param="item.content")
        )
        return None
    parts: list[dict[str, Any]] = []
    for index, piece in enumerate(content):
        if not isinstance(piece, Mapping):
            piece = {}
        kind = piece.get("type")
        if kind in ("input_text", "text", "output_text") and isinstance(piece.get("text"), str):
            parts.append({"text": piece["text"]})
        elif kind == "input_audio" and isinstance(piece.get("audio"), str):
            try:
                parts.append({"inlineData": _audio_blob(t, piece["audio"])})
            except (binascii.Error, ValueError):
                out.client_json(
                    error_event("input_audio is not valid base64", param=f"item.content[{index}]")
                )
                return None
        elif kind == "input_image" and isinstance(piece.get("image_url"), str):
            blob = _data_url(piece["image_url"])
            if blob is None:
                out.client_json(
                    error_event(
                        "input_image needs a base64 data: URL", param=f"item.content[{index}]"
                    )
                )
                return None
            parts.append({"inlineData": blob})
        else:
            out.client_json(
                error_event(
                    f"content part {index} ('{str(kind)[:30]}') is not supported",
                    param=f"item.content[{index}]",
                )
            )
            return None
    return parts


def _content(t: GeminiState, out: Outbox, role: str, parts: list[dict[str, Any]]) -> None:
    message = {"clientContent": {"turns": [{"role": role, "parts": parts}], "turnComplete": False}}
    t.send_upstream(out, orjson.dumps(message))


def _function_output(
    t: GeminiState, item: Mapping[str, Any], event: dict[str, Any], out: Outbox
) -> None:
    conversation = t.conversation
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or call_id not in conversation.call_names:
        out.client_json(
            error_event(
                f"no function call with call_id '{str(call_id)[:64]}' is waiting for output",
                param="item.call_id",
                event_id=event_id(event),
            )
        )
        return
    name = conversation.call_names[call_id]
    if call_id in conversation.cancelled_calls:
        conversation.cancelled_calls.discard(call_id)  # Gemini cancelled it; it wants no answer
    else:
        response = {
            "id": call_id,
            "name": name,
            # Gemini wants an object; OpenAI outputs are strings (JSON or not).
            "response": _as_object(item.get("output"), "output"),
        }
        t.send_upstream(out, orjson.dumps({"toolResponse": {"functionResponses": [response]}}))
        t.input_since_response = True
    conversation.item_added(out, item)


def _as_object(value: object, key: str) -> dict[str, Any]:
    """``value`` (or the JSON a string holds) as an object, wrapped under ``key`` if it is not one."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {key: value}
    return value if isinstance(value, dict) else {key: value}


def _data_url(url: str) -> dict[str, str] | None:
    if not url.startswith("data:") or ";base64," not in url:
        return None
    header, _, data = url[len("data:") :].partition(";base64,")
    return {"mimeType": header or "application/octet-stream", "data": data}


# -- responses --------------------------------------------------------------------------


def response_create(t: GeminiState, event: dict[str, Any], out: Outbox, now: float) -> None:
    params = event.get("response")
    if isinstance(params, Mapping):
        if params.get("conversation") == "none":
            out.client_json(
                error_event(
                    "out-of-band responses (conversation: none) are not available on Gemini Live",
                    param="response.conversation",
                    event_id=event_id(event),
                )
            )
            return
        lacking = [k for k in _RESPONSE_FIELDS_GEMINI_LACKS if params.get(k) is not None]
        if lacking:
            out.client_json(
                error_event(
                    "Gemini Live cannot change per response: "
                    + ", ".join(lacking)
                    + " (the session's settings apply)",
                    code="unsupported_response_config",
                    param="response",
                    event_id=event_id(event),
                )
            )
    if t.open_response() is not None:
        out.client_json(
            error_event(
                "Conversation already has an active response in progress",
                code="conversation_already_has_active_response",
                event_id=event_id(event),
            )
        )
        return
    if t.plan.manual_activity and t.activity_open:
        t.activity_open = False
        t.conversation.audio_since_commit = False
        t.send_upstream(out, ACTIVITY_END)
        t.conversation.announce_user_item(out)
    elif t.pending_content or not t.input_since_response:
        # Text items wait for turnComplete; with nothing new it asks for an answer anyway
        # (a greeting). Audio turns and tool outputs make Gemini answer by itself.
        t.send_upstream(out, _TURN_COMPLETE)
    t.pending_content = False
    t.input_since_response = False


def response_cancel(t: GeminiState, event: dict[str, Any], out: Outbox, now: float) -> None:
    if t.open_response() is None:
        out.client_json(
            error_event(
                "Cancellation failed: no active response found",
                code="response_cancel_not_active",
                event_id=event_id(event),
            )
        )
        return
    t.close_response(
        out, "cancelled", {"type": "cancelled", "reason": "client_cancelled"}, with_usage=False
    )
    # Gemini has no cancel: drop the rest of this turn; with client-driven turns a new
    # activity interrupts the generation upstream too.
    t.suppress = True
    if t.plan.manual_activity and not t.activity_open:
        t.activity_open = True
        t.send_upstream(out, ACTIVITY_START)


# -- events Gemini has no equivalent for ------------------------------------------------


def truncate(t: GeminiState, event: dict[str, Any], out: Outbox, now: float) -> None:
    # Gemini keeps no transcript to cut; the client gets OpenAI's acknowledgement.
    acknowledged = truncated_ack(event)
    if acknowledged is None:
        out.client_json(
            error_event(
                "conversation.item.truncate needs a string item_id and integer "
                "content_index and audio_end_ms",
                param="item_id",
                event_id=event_id(event),
            )
        )
        return
    out.client_json(acknowledged)


def unsupported(t: GeminiState, event: dict[str, Any], out: Outbox, now: float) -> None:
    out.client_json(
        error_event(
            f"{event.get('type')} is not available on Gemini Live",
            code="unsupported_event",
            event_id=event_id(event),
        )
    )


HANDLERS: Final[dict[str, Handler]] = {
    "input_audio_buffer.commit": commit,
    "input_audio_buffer.clear": clear,
    "conversation.item.create": item_create,
    "conversation.item.truncate": truncate,
    "conversation.item.delete": unsupported,
    "conversation.item.retrieve": unsupported,
    "output_audio_buffer.clear": unsupported,
    "response.create": response_create,
    "response.cancel": response_cancel,
}
"""Client event type -> handler (``session.update`` is the translator's own)."""
