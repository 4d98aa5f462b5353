"""The ``mock/`` model: an in-process realtime model that speaks GA like OpenAI.

There is no upstream. :class:`MockModel` answers every client event itself on
``to_client`` with the events, ids, ordering and errors OpenAI's GA Realtime
API produces (https://platform.openai.com/docs/api-reference/realtime), so clients,
load tests and the relay can be exercised without a key or a network:

* ``session.created`` on start; ``session.update`` validated and merged
  (``error`` for shapes OpenAI refuses, such as both output modalities);
* conversation items: create / retrieve / delete / truncate, chained by
  ``previous_item_id``;
* the input audio buffer: append (base64 checked), commit (refused when under
  100 ms, as OpenAI does), clear, and a small energy VAD when
  ``turn_detection`` is set, which commits and answers like server VAD;
* ``response.create``: the full GA event sequence with text deltas, or
  synthetic 24 kHz PCM16 (or G.711) audio deltas of a sine tone plus the
  transcript, then ``response.done`` with GA usage (also put in
  ``Outbox.usage`` flattened by :func:`rtgate.translate.base.flatten_usage`).

This module owns the conversation state and the client-event handlers; the
session's defaults and validation live in :mod:`rtgate.mockmodel.session`,
the tone, G.711 and loudness probe in :mod:`rtgate.mockmodel.audio`, and
what a response says in :mod:`rtgate.mockmodel.response` (its GA events are
written by :mod:`rtgate.translate.ga`, as for every translating provider).

Responses complete within the call that asked for them, so ``response.cancel``
always finds nothing to cancel (``response_cancel_not_active``). The reply is
deterministic: "You said: ..." echoing the last user text, else a greeting.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Final

import orjson

from rtgate.mockmodel.audio import FORMATS, audio_chunks, bytes_per_ms, peak_level
from rtgate.mockmodel.response import (
    ResponsePlan,
    check_response,
    emit,
    parts,
    reply_text,
    stream_response,
)
from rtgate.mockmodel.session import (
    Json,
    Rejected,
    check_session,
    default_session,
    invalid,
    merge,
    missing,
)
from rtgate.translate.base import Outbox, Translator, error_event, get_path, new_id
from rtgate.wire import Binary, Frame

__all__ = ["MockModel", "audio_chunks", "peak_level"]

_MIN_COMMIT_MS: Final = 100  # OpenAI refuses to commit less than 100 ms of audio

_PART_TYPES: Final = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio"),
}
_CLIENT_EVENTS: Final = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)


class MockModel(Translator):
    """One mock conversation (see module docstring).

    ``reply_audio_ms`` is the length of every audio reply; ``greeting`` is the
    reply when no user text is known.
    """

    def __init__(
        self,
        *,
        model: str = "mock-realtime",
        reply_audio_ms: int = 1000,
        greeting: str = "Hello! This is the rtgate mock model. How can I help you today?",
    ) -> None:
        self.model = model
        self.reply_audio_ms = max(0, reply_audio_ms)
        self.greeting = greeting
        self.session = default_session(model)
        self._conversation_id = new_id("conv")
        self._items: dict[str, Json] = {}
        self._order: list[str] = []
        self._audio_ms: dict[str, int] = {}  # audio length of each item with audio
        self._assistant_audio = False  # OpenAI refuses voice changes after assistant audio
        self._buffer_bytes = 0
        self._buffer_ms_total = 0  # input audio since the session began, for VAD timestamps
        self._speech_item: str | None = None
        self._silence_ms = 0
        self._handlers: dict[str, Callable[[Json, Outbox], None]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "output_audio_buffer.clear": self._output_clear,
            "conversation.item.create": self._item_create,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.delete": self._item_delete,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    # -- translator hooks

    def start(self, out: Outbox, now: float) -> None:
        emit(out, {"type": "session.created", "session": self.session})

    def on_client(self, frame: Frame, out: Outbox, now: float) -> None:
        if isinstance(frame, Binary):
            out.client_json(error_event("Binary messages are not supported.", code="invalid_json"))
            return
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError:
            message = "Invalid JSON: the message could not be parsed as a JSON object."
            out.client_json(error_event(message, code="invalid_json"))
            return
        if not isinstance(event, dict):
            message = "Invalid event: expected a JSON object."
            out.client_json(error_event(message, code="invalid_json"))
            return
        client_event_id = event.get("event_id")
        event_id = client_event_id if isinstance(client_event_id, str) else None
        try:
            kind = event.get("type")
            if kind is None:
                raise missing("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise invalid("type", kind, _CLIENT_EVENTS)
            handler(event, out)
        except Rejected as rejected:
            out.client_json(
                error_event(
                    rejected.message, code=rejected.code, param=rejected.param, event_id=event_id
                )
            )

    def on_upstream(self, frame: Frame, out: Outbox, now: float) -> None:
        """Nothing comes from the (null) upstream; anything that does is ignored."""

    # -- session

    def _session_update(self, event: Json, out: Outbox) -> None:
        update = check_session(event.get("session"))
        voice = get_path(update, "audio", "output", "voice")
        if voice is not None and self._assistant_audio and voice != self._voice():
            raise Rejected(
                "Cannot update a conversation's voice if assistant audio is present.",
                "cannot_update_voice",
                "session.audio.output.voice",
            )
        self.session = merge(self.session, update)
        emit(out, {"type": "session.updated", "session": self.session})

    def _voice(self) -> object:
        return get_path(self.session, "audio", "output", "voice")

    def _input_format(self) -> str:
        kind = get_path(self.session, "audio", "input", "format", "type")
        return kind if isinstance(kind, str) and kind in FORMATS else "audio/pcm"

    # -- input audio buffer

    def _append(self, event: Json, out: Outbox) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise missing("audio") if audio is None else invalid("audio", audio)
        try:
            raw = binascii.a2b_base64(audio, strict_mode=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            raise Rejected(
                "Invalid 'audio'. Expected base64-encoded audio bytes.", "invalid_value", "audio"
            )
        self._buffer_bytes += len(raw)
        turn_detection = get_path(self.session, "audio", "input", "turn_detection")
        if isinstance(turn_detection, dict) and raw:
            self._detect_speech(raw, turn_detection, out)

    def _detect_speech(self, raw: bytes, config: Json, out: Outbox) -> None:
        """Energy VAD on the audio timeline: a pure stand-in for OpenAI's server VAD."""
        fmt = self._input_format()
        chunk_ms = len(raw) // bytes_per_ms(fmt)
        start_ms = self._buffer_ms_total
        self._buffer_ms_total += chunk_ms
        threshold = config.get("threshold", 0.5)
        level = max(1, round(16 * threshold)) if isinstance(threshold, int | float) else 8
        if peak_level(fmt, raw) >= level:
            self._silence_ms = 0
            if self._speech_item is None:
                self._speech_item = new_id("item")
                emit(
                    out,
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": start_ms,
                        "item_id": self._speech_item,
                    },
                )
            return
        if self._speech_item is None:
            return
        self._silence_ms += chunk_ms
        silence = config.get("silence_duration_ms", 200)
        if isinstance(silence, int) and self._silence_ms < silence:
            return
        item_id, self._speech_item, self._silence_ms = self._speech_item, None, 0
        emit(
            out,
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": self._buffer_ms_total,
                "item_id": item_id,
            },
        )
        self._commit_buffer(item_id, out)
        if config.get("create_response", True) is not False:
            self._respond({}, out)

    def _buffer_ms(self) -> int:
        return self._buffer_bytes // bytes_per_ms(self._input_format())

    def _commit(self, event: Json, out: Outbox) -> None:
        buffered = self._buffer_ms()
        if buffered < _MIN_COMMIT_MS:
            raise Rejected(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{_MIN_COMMIT_MS}ms of audio, but buffer only has {buffered:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
            )
        item_id = self._speech_item or new_id("item")
        self._speech_item, self._silence_ms = None, 0
        self._commit_buffer(item_id, out)

    def _commit_buffer(self, item_id: str, out: Outbox) -> None:
        audio_ms = self._buffer_ms()
        self._buffer_bytes = 0
        previous = self._order[-1] if self._order else None
        emit(
            out,
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            },
        )
        item: Json = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(item, previous, out, audio_ms=audio_ms)
        transcription = get_path(self.session, "audio", "input", "transcription")
        if isinstance(transcription, dict):
            seconds = audio_ms / 1000
            emit(
                out,
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": f"({seconds:.1f} seconds of audio)",
                    "usage": {"type": "duration", "seconds": seconds},
                },
            )

    def _clear(self, event: Json, out: Outbox) -> None:
        self._buffer_bytes = 0
        self._speech_item, self._silence_ms = None, 0
        emit(out, {"type": "input_audio_buffer.cleared"})

    def _output_clear(self, event: Json, out: Outbox) -> None:
        raise Rejected(
            "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.",
            "invalid_value",
            "type",
        )

    # -- conversation items

    def _item_create(self, event: Json, out: Outbox) -> None:
        item = self._check_item(event.get("item"), "item")
        previous = event.get("previous_item_id")
        if previous is None:
            previous = self._order[-1] if self._order else None
        elif previous == "root":
            previous = None
        elif previous not in self._items:
            raise Rejected(
                f"Previous item with id '{previous}' not found.",
                "item_not_found",
                "previous_item_id",
            )
        assert previous is None or isinstance(previous, str)
        audio_ms = 0
        for part in parts(item):
            audio = part.pop("audio", None)
            # Only an input_audio part carries audio (and gets a transcript field for it).
            if isinstance(audio, str) and part.get("type") == "input_audio":
                audio_ms += len(audio) * 3 // 4 // bytes_per_ms(self._input_format())
                part.setdefault("transcript", None)
        self._add_item(item, previous, out, audio_ms=audio_ms)

    def _check_item(self, item: object, where: str) -> Json:
        if not isinstance(item, dict):
            raise missing(where) if item is None else invalid(where, item)
        kind = item.get("type")
        item_id = item.get("id")
        if item_id is not None and (not isinstance(item_id, str) or item_id in self._items):
            raise Rejected(
                f"Item with id '{item_id}' already exists.", "invalid_value", f"{where}.id"
            )
        stored: Json = {"id": item_id or new_id("item"), "type": kind, "object": "realtime.item"}
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _PART_TYPES:
                raise invalid(f"{where}.role", role, _PART_TYPES)
            assert isinstance(role, str)
            content = item.get("content")
            if not isinstance(content, list):
                raise (
                    missing(f"{where}.content")
                    if content is None
                    else invalid(f"{where}.content", content)
                )
            for index, part in enumerate(content):
                part_type = part.get("type") if isinstance(part, dict) else None
                if part_type not in _PART_TYPES[role]:
                    raise invalid(f"{where}.content[{index}].type", part_type, _PART_TYPES[role])
            stored.update(status="completed", role=role, content=[dict(p) for p in content])
        elif kind == "function_call":
            name, arguments = item.get("name"), item.get("arguments", "")
            if not isinstance(name, str):
                raise missing(f"{where}.name")
            if not isinstance(arguments, str):
                raise invalid(f"{where}.arguments", arguments)
            call_id = item.get("call_id") or new_id("call")
            stored.update(status="completed", name=name, call_id=call_id, arguments=arguments)
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str):
                raise missing(f"{where}.call_id")
            if not isinstance(output, str):
                raise missing(f"{where}.output")
            stored.update(call_id=call_id, output=output)
        else:
            allowed = ("message", "function_call", "function_call_output")
            raise invalid(f"{where}.type", kind, allowed)
        return stored

    def _add_item(
        self, item: Json, previous: str | None, out: Outbox, *, audio_ms: int = 0
    ) -> None:
        item_id = str(item["id"])
        position = 0 if previous is None else self._order.index(previous) + 1
        self._order.insert(position, item_id)
        self._items[item_id] = item
        if audio_ms:
            self._audio_ms[item_id] = audio_ms
        for kind in ("conversation.item.added", "conversation.item.done"):
            emit(out, {"type": kind, "previous_item_id": previous, "item": item})

    def _find_item(self, event: Json) -> tuple[str, Json]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise missing("item_id")
        item = self._items.get(item_id)
        if item is None:
            raise Rejected(f"Item with item_id not found: {item_id}", "item_not_found", "item_id")
        return item_id, item

    def _item_retrieve(self, event: Json, out: Outbox) -> None:
        _, item = self._find_item(event)
        emit(out, {"type": "conversation.item.retrieved", "item": item})

    def _item_delete(self, event: Json, out: Outbox) -> None:
        item_id, _ = self._find_item(event)
        del self._items[item_id]
        self._order.remove(item_id)
        self._audio_ms.pop(item_id, None)
        emit(out, {"type": "conversation.item.deleted", "item_id": item_id})

    def _item_truncate(self, event: Json, out: Outbox) -> None:
        item_id, item = self._find_item(event)
        content_index, audio_end_ms = event.get("content_index"), event.get("audio_end_ms")
        content = parts(item)
        if item.get("role") != "assistant" or not isinstance(content_index, int):
            raise invalid("content_index", content_index)
        if (
            not 0 <= content_index < len(content)
            or content[content_index].get("type") != "output_audio"
        ):
            raise invalid("content_index", content_index)
        available = self._audio_ms.get(item_id, 0)
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms < 0:
            raise invalid("audio_end_ms", audio_end_ms)
        if audio_end_ms > available:
            raise Rejected(
                f"Audio content of {available}ms is shorter than {audio_end_ms}ms.",
                "invalid_value",
                "audio_end_ms",
            )
        self._audio_ms[item_id] = audio_end_ms
        # OpenAI drops the transcript of truncated audio so text and audio stay in step.
        content[content_index]["transcript"] = ""
        emit(
            out,
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            },
        )

    # -- responses

    def _response_cancel(self, event: Json, out: Outbox) -> None:
        raise Rejected(
            "Cancellation failed: no active response found", "response_cancel_not_active"
        )

    def _response_create(self, event: Json, out: Outbox) -> None:
        params = event.get("response")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise invalid("response", params)
        self._respond(params, out)

    def _check_input(self, item: object, where: str) -> Json:
        if isinstance(item, dict) and item.get("type") == "item_reference":
            reference = self._items.get(str(item.get("id")))
            if reference is None:
                raise Rejected(
                    f"Item with id '{item.get('id')}' not found.", "item_not_found", where
                )
            return reference
        return self._check_item(item, where)

    def _respond(self, params: Json, out: Outbox) -> None:
        modalities, audio_output, inputs = check_response(params, self.session, self._check_input)
        in_conversation = params.get("conversation", "auto") != "none"
        context = inputs if inputs is not None else [self._items[i] for i in self._order]
        if "audio" in modalities:
            self._assistant_audio = True
        plan = ResponsePlan(
            modalities=modalities,
            audio_output=audio_output,
            instructions=params.get("instructions", self.session.get("instructions")),
            max_tokens=params.get(
                "max_output_tokens", self.session.get("max_output_tokens", "inf")
            ),
            metadata=params.get("metadata"),
            conversation_id=self._conversation_id if in_conversation else None,
            previous_item_id=self._order[-1] if self._order else None,
            context=context,
            text=reply_text(context, self._audio_ms, self.greeting),
            audio_ms=self.reply_audio_ms if "audio" in modalities else 0,
        )
        stream_response(plan, out, self._audio_ms, self._keep_reply)

    def _keep_reply(self, item_id: str, item: Json, audio_ms: int) -> None:
        self._items[item_id] = item
        self._order.append(item_id)
        if audio_ms:
            self._audio_ms[item_id] = audio_ms
