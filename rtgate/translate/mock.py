"""The ``mock/`` model: an in-process realtime model that speaks GA like OpenAI.

There is no upstream. :class:`MockModel` answers every client event itself on
``to_client`` with the events, ids, ordering and errors OpenAI's GA Realtime
API produces (``/work/shared/reference/protocols.md`` 2.3-2.6), so clients,
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

Responses complete within the call that asked for them, so ``response.cancel``
always finds nothing to cancel (``response_cancel_not_active``). The reply is
deterministic: "You said: ..." echoing the last user text, else a greeting.
Audio chunks are base64-encoded once at import.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Final

import orjson

from rtgate.translate.base import (
    Binary,
    Frame,
    Outbox,
    Translator,
    error_event,
    flatten_usage,
    new_id,
)

Json = dict[str, object]

_CHUNK_MS: Final = 40
_TONE_HZ: Final = 400  # 40 ms hold exactly 16 periods, so chunks repeat seamlessly
_AMPLITUDE: Final = 0.2
_PCM_RATE: Final = 24000
_G711_RATE: Final = 8000
_MIN_COMMIT_MS: Final = 100  # OpenAI refuses to commit less than 100 ms of audio
_INPUT_MS_PER_TOKEN: Final = 100  # roughly what OpenAI bills for user audio
_OUTPUT_MS_PER_TOKEN: Final = 50  # and for assistant audio
_ECHO_LIMIT: Final = 200

_PCM_FORMAT: Final[Json] = {"type": "audio/pcm", "rate": _PCM_RATE}
_FORMATS: Final = ("audio/pcm", "audio/pcmu", "audio/pcma")
_VOICES: Final = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)

_SESSION_KEYS: Final = frozenset(
    {
        "type",
        "model",
        "output_modalities",
        "instructions",
        "audio",
        "include",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "tracing",
        "truncation",
        "prompt",
        "reasoning",
        "parallel_tool_calls",
    }
)
_AUDIO_KEYS: Final = {
    "input": frozenset({"format", "transcription", "noise_reduction", "turn_detection"}),
    "output": frozenset({"format", "voice", "speed"}),
}
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


# -- synthetic audio -------------------------------------------------------------


def _tone(rate: int, samples: int) -> list[int]:
    peak = _AMPLITUDE * 32767
    return [round(peak * math.sin(2 * math.pi * _TONE_HZ * n / rate)) for n in range(samples)]


def _ulaw(sample: int) -> int:
    """G.711 mu-law encode one 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, min(7, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _alaw(sample: int) -> int:
    """G.711 A-law encode one 16-bit sample."""
    value = sample >> 3
    mask = 0xD5 if value >= 0 else 0x55
    if value < 0:
        value = -value - 1
    segment = max(0, value.bit_length() - 5)
    if segment >= 8:
        return 0x7F ^ mask
    shift = 1 if segment < 2 else segment
    return ((segment << 4) | ((value >> shift) & 0x0F)) ^ mask


def _ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte & 0x70) >> 4)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def _alaw_decode(byte: int) -> int:
    byte ^= 0x55
    segment = (byte & 0x70) >> 4
    magnitude = (byte & 0x0F) << 4
    magnitude = magnitude + 8 if segment == 0 else (magnitude + 0x108) << (segment - 1)
    return magnitude if byte & 0x80 else -magnitude


def _chunk_bytes(fmt: str) -> bytes:
    if fmt == "audio/pcm":
        samples = _tone(_PCM_RATE, _PCM_RATE * _CHUNK_MS // 1000)
        return struct.pack(f"<{len(samples)}h", *samples)
    encode = _ulaw if fmt == "audio/pcmu" else _alaw
    return bytes(encode(s) for s in _tone(_G711_RATE, _G711_RATE * _CHUNK_MS // 1000))


_TONE_CHUNKS: Final = {fmt: _chunk_bytes(fmt) for fmt in _FORMATS}
_FULL_CHUNKS_B64: Final = {fmt: base64.b64encode(raw).decode() for fmt, raw in _TONE_CHUNKS.items()}


def _bytes_per_ms(fmt: str) -> int:
    return _PCM_RATE * 2 // 1000 if fmt == "audio/pcm" else _G711_RATE // 1000


@lru_cache(maxsize=64)
def _partial_chunk_b64(fmt: str, ms: int) -> str:
    return base64.b64encode(_TONE_CHUNKS[fmt][: ms * _bytes_per_ms(fmt)]).decode()


def audio_chunks(fmt: str, total_ms: int) -> list[str]:
    """Base64 tone chunks of ``_CHUNK_MS`` adding up to ``total_ms`` in format ``fmt``."""
    full, rest = divmod(total_ms, _CHUNK_MS)
    chunks = [_FULL_CHUNKS_B64[fmt]] * full
    if rest:
        chunks.append(_partial_chunk_b64(fmt, rest))
    return chunks


# Loudness of a chunk, in units of 256 (the high byte of a PCM16 sample), read
# through ``bytes.translate`` so VAD costs no Python loop per sample.
_PCM_HIGH_BYTE: Final = bytes(b if b < 128 else 255 - b for b in range(256))
_ULAW_LEVEL: Final = bytes(min(255, abs(_ulaw_decode(b)) >> 8) for b in range(256))
_ALAW_LEVEL: Final = bytes(min(255, abs(_alaw_decode(b)) >> 8) for b in range(256))


def peak_level(fmt: str, audio: bytes) -> int:
    """Peak amplitude of ``audio`` in 1/128ths of full scale (0..128)."""
    if not audio:
        return 0
    if fmt == "audio/pcm":
        return max(audio[1::2].translate(_PCM_HIGH_BYTE), default=0)
    return max(audio.translate(_ULAW_LEVEL if fmt == "audio/pcmu" else _ALAW_LEVEL))


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


# -- validation -----------------------------------------------------------------


class _Rejected(Exception):
    """A client event OpenAI would answer with an ``error`` event."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


def _missing(param: str) -> _Rejected:
    return _Rejected(f"Missing required parameter: '{param}'.", "missing_required_parameter", param)


def _invalid(param: str, value: object, allowed: Iterable[str] = ()) -> _Rejected:
    shown = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()[:100]
    message = f"Invalid value: {shown} for '{param}'."
    choices = list(allowed)
    if choices:
        message += " Supported values are: " + ", ".join(f"'{c}'" for c in choices) + "."
    return _Rejected(message, "invalid_value", param)


def _unknown(param: str) -> _Rejected:
    return _Rejected(f"Unknown parameter: '{param}'.", "unknown_parameter", param)


def _check_keys(value: Json, allowed: frozenset[str], where: str) -> None:
    for key in value:
        if key not in allowed:
            raise _unknown(f"{where}.{key}")


def _check_modalities(value: object, param: str) -> list[str]:
    if not isinstance(value, list) or not all(m in ("text", "audio") for m in value):
        raise _invalid(param, value, ("text", "audio"))
    if len(value) != 1:
        # GA allows exactly one: audio responses carry their transcript anyway.
        raise _Rejected(
            f"Invalid modalities: {value}. Supported combinations are: ['text'] and ['audio'].",
            "invalid_value",
            param,
        )
    return [str(m) for m in value]


def _check_format(value: object, param: str) -> None:
    if not isinstance(value, dict):
        raise _invalid(param, value)
    kind = value.get("type")
    if kind not in _FORMATS:
        raise _invalid(f"{param}.type", kind, _FORMATS)
    if kind == "audio/pcm" and value.get("rate", _PCM_RATE) != _PCM_RATE:
        raise _invalid(f"{param}.rate", value.get("rate"), ("24000",))


def _check_max_tokens(value: object, param: str) -> None:
    if value == "inf" or value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise _invalid(param, value, ("1..4096", "inf"))


def _check_voice(value: object, param: str) -> None:
    if isinstance(value, str) and value:
        return
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return
    raise _invalid(param, value, _VOICES)


def _check_turn_detection(value: object, param: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _invalid(param, value)
    kind = value.get("type")
    if kind not in ("server_vad", "semantic_vad"):
        raise _invalid(f"{param}.type", kind, ("server_vad", "semantic_vad"))
    threshold = value.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise _invalid(f"{param}.threshold", threshold)
    for key in ("silence_duration_ms", "prefix_padding_ms"):
        ms = value.get(key, 0)
        if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
            raise _invalid(f"{param}.{key}", ms)


def _check_audio(audio: object) -> None:
    if not isinstance(audio, dict):
        raise _invalid("session.audio", audio)
    _check_keys(audio, frozenset(_AUDIO_KEYS), "session.audio")
    for side, allowed in _AUDIO_KEYS.items():
        config = audio.get(side)
        if config is None:
            continue
        where = f"session.audio.{side}"
        if not isinstance(config, dict):
            raise _invalid(where, config)
        _check_keys(config, allowed, where)
        if "format" in config:
            _check_format(config["format"], f"{where}.format")
        if "turn_detection" in config:
            _check_turn_detection(config["turn_detection"], f"{where}.turn_detection")
        if "voice" in config:
            _check_voice(config["voice"], f"{where}.voice")
        for key in ("transcription", "noise_reduction"):
            if config.get(key) is not None and not isinstance(config[key], dict):
                raise _invalid(f"{where}.{key}", config[key])
        speed = config.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 1.5:
            raise _invalid(f"{where}.speed", speed)


def _check_session(session: object) -> Json:
    if not isinstance(session, dict):
        raise _missing("session") if session is None else _invalid("session", session)
    if "type" not in session:
        raise _missing("session.type")
    if session["type"] != "realtime":
        # The mock serves conversations; a transcription session needs ?intent=transcription.
        raise _invalid("session.type", session["type"], ("realtime",))
    _check_keys(session, _SESSION_KEYS, "session")
    if "output_modalities" in session:
        _check_modalities(session["output_modalities"], "session.output_modalities")
    if "instructions" in session and not isinstance(session["instructions"], str):
        raise _invalid("session.instructions", session["instructions"])
    if "max_output_tokens" in session:
        _check_max_tokens(session["max_output_tokens"], "session.max_output_tokens")
    if "tools" in session and not isinstance(session["tools"], list):
        raise _invalid("session.tools", session["tools"])
    if "audio" in session:
        _check_audio(session["audio"])
    return session


def _merge(base: Json, update: Json) -> Json:
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and key in ("audio", "input", "output")
        ):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def _path(obj: Json, *keys: str) -> object:
    value: object = obj
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def default_session(model: str) -> Json:
    """The session OpenAI announces for a new GA conversation, with this model."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful, witty and friendly AI. Keep replies short.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": dict(_PCM_FORMAT),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(_PCM_FORMAT), "voice": "marin", "speed": 1.0},
        },
    }


# -- the model ------------------------------------------------------------------


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
        _emit(out, {"type": "session.created", "session": self.session})

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
                raise _missing("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise _invalid("type", kind, _CLIENT_EVENTS)
            handler(event, out)
        except _Rejected as rejected:
            out.client_json(
                error_event(
                    rejected.message, code=rejected.code, param=rejected.param, event_id=event_id
                )
            )

    def on_upstream(self, frame: Frame, out: Outbox, now: float) -> None:
        """Nothing comes from the (null) upstream; anything that does is ignored."""

    # -- session

    def _session_update(self, event: Json, out: Outbox) -> None:
        update = _check_session(event.get("session"))
        voice = _path(update, "audio", "output", "voice")
        if voice is not None and self._assistant_audio and voice != self._voice():
            raise _Rejected(
                "Cannot update a conversation's voice if assistant audio is present.",
                "cannot_update_voice",
                "session.audio.output.voice",
            )
        self.session = _merge(self.session, update)
        _emit(out, {"type": "session.updated", "session": self.session})

    def _voice(self) -> object:
        return _path(self.session, "audio", "output", "voice")

    def _input_format(self) -> str:
        kind = _path(self.session, "audio", "input", "format", "type")
        return kind if isinstance(kind, str) and kind in _FORMATS else "audio/pcm"

    # -- input audio buffer

    def _append(self, event: Json, out: Outbox) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _missing("audio") if audio is None else _invalid("audio", audio)
        try:
            raw = binascii.a2b_base64(audio, strict_mode=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            raise _Rejected(
                "Invalid 'audio'. Expected base64-encoded audio bytes.", "invalid_value", "audio"
            )
        self._buffer_bytes += len(raw)
        turn_detection = _path(self.session, "audio", "input", "turn_detection")
        if isinstance(turn_detection, dict) and raw:
            self._detect_speech(raw, turn_detection, out)

    def _detect_speech(self, raw: bytes, config: Json, out: Outbox) -> None:
        """Energy VAD on the audio timeline: a pure stand-in for OpenAI's server VAD."""
        fmt = self._input_format()
        chunk_ms = len(raw) // _bytes_per_ms(fmt)
        start_ms = self._buffer_ms_total
        self._buffer_ms_total += chunk_ms
        threshold = config.get("threshold", 0.5)
        level = max(1, round(16 * threshold)) if isinstance(threshold, int | float) else 8
        if peak_level(fmt, raw) >= level:
            self._silence_ms = 0
            if self._speech_item is None:
                self._speech_item = new_id("item")
                _emit(
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
        _emit(
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
        return self._buffer_bytes // _bytes_per_ms(self._input_format())

    def _commit(self, event: Json, out: Outbox) -> None:
        buffered = self._buffer_ms()
        if buffered < _MIN_COMMIT_MS:
            raise _Rejected(
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
        _emit(
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
        transcription = _path(self.session, "audio", "input", "transcription")
        if isinstance(transcription, dict):
            seconds = audio_ms / 1000
            _emit(
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
        _emit(out, {"type": "input_audio_buffer.cleared"})

    def _output_clear(self, event: Json, out: Outbox) -> None:
        raise _Rejected(
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
            raise _Rejected(
                f"Previous item with id '{previous}' not found.",
                "item_not_found",
                "previous_item_id",
            )
        assert previous is None or isinstance(previous, str)
        audio_ms = 0
        for part in _parts(item):
            audio = part.pop("audio", None)
            if isinstance(audio, str):
                audio_ms += len(audio) * 3 // 4 // _bytes_per_ms(self._input_format())
                part.setdefault("transcript", None)
        self._add_item(item, previous, out, audio_ms=audio_ms)

    def _check_item(self, item: object, where: str) -> Json:
        if not isinstance(item, dict):
            raise _missing(where) if item is None else _invalid(where, item)
        kind = item.get("type")
        item_id = item.get("id")
        if item_id is not None and (not isinstance(item_id, str) or item_id in self._items):
            raise _Rejected(
                f"Item with id '{item_id}' already exists.", "invalid_value", f"{where}.id"
            )
        stored: Json = {"id": item_id or new_id("item"), "type": kind, "object": "realtime.item"}
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _PART_TYPES:
                raise _invalid(f"{where}.role", role, _PART_TYPES)
            assert isinstance(role, str)
            content = item.get("content")
            if not isinstance(content, list):
                raise (
                    _missing(f"{where}.content")
                    if content is None
                    else _invalid(f"{where}.content", content)
                )
            for index, part in enumerate(content):
                part_type = part.get("type") if isinstance(part, dict) else None
                if part_type not in _PART_TYPES[role]:
                    raise _invalid(f"{where}.content[{index}].type", part_type, _PART_TYPES[role])
            stored.update(status="completed", role=role, content=[dict(p) for p in content])
        elif kind == "function_call":
            name, arguments = item.get("name"), item.get("arguments", "")
            if not isinstance(name, str):
                raise _missing(f"{where}.name")
            if not isinstance(arguments, str):
                raise _invalid(f"{where}.arguments", arguments)
            call_id = item.get("call_id") or new_id("call")
            stored.update(status="completed", name=name, call_id=call_id, arguments=arguments)
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str):
                raise _missing(f"{where}.call_id")
            if not isinstance(output, str):
                raise _missing(f"{where}.output")
            stored.update(call_id=call_id, output=output)
        else:
            allowed = ("message", "function_call", "function_call_output")
            raise _invalid(f"{where}.type", kind, allowed)
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
            _emit(out, {"type": kind, "previous_item_id": previous, "item": item})

    def _find_item(self, event: Json) -> tuple[str, Json]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise _missing("item_id")
        item = self._items.get(item_id)
        if item is None:
            raise _Rejected(f"Item with item_id not found: {item_id}", "item_not_found", "item_id")
        return item_id, item

    def _item_retrieve(self, event: Json, out: Outbox) -> None:
        _, item = self._find_item(event)
        _emit(out, {"type": "conversation.item.retrieved", "item": item})

    def _item_delete(self, event: Json, out: Outbox) -> None:
        item_id, _ = self._find_item(event)
        del self._items[item_id]
        self._order.remove(item_id)
        self._audio_ms.pop(item_id, None)
        _emit(out, {"type": "conversation.item.deleted", "item_id": item_id})

    def _item_truncate(self, event: Json, out: Outbox) -> None:
        item_id, item = self._find_item(event)
        content_index, audio_end_ms = event.get("content_index"), event.get("audio_end_ms")
        parts = _parts(item)
        if item.get("role") != "assistant" or not isinstance(content_index, int):
            raise _invalid("content_index", content_index)
        if (
            not 0 <= content_index < len(parts)
            or parts[content_index].get("type") != "output_audio"
        ):
            raise _invalid("content_index", content_index)
        available = self._audio_ms.get(item_id, 0)
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms < 0:
            raise _invalid("audio_end_ms", audio_end_ms)
        if audio_end_ms > available:
            raise _Rejected(
                f"Audio content of {available}ms is shorter than {audio_end_ms}ms.",
                "invalid_value",
                "audio_end_ms",
            )
        self._audio_ms[item_id] = audio_end_ms
        # OpenAI drops the transcript of truncated audio so text and audio stay in step.
        parts[content_index]["transcript"] = ""
        _emit(
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
        raise _Rejected(
            "Cancellation failed: no active response found", "response_cancel_not_active"
        )

    def _response_create(self, event: Json, out: Outbox) -> None:
        params = event.get("response")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _invalid("response", params)
        self._respond(params, out)

    def _check_response(self, params: Json) -> tuple[list[str], Json, list[Json] | None]:
        _check_keys(params, _RESPONSE_KEYS, "response")
        modalities = self.session.get("output_modalities")
        if "output_modalities" in params:
            modalities = _check_modalities(
                params["output_modalities"], "response.output_modalities"
            )
        if "instructions" in params and not isinstance(params["instructions"], str):
            raise _invalid("response.instructions", params["instructions"])
        if "max_output_tokens" in params:
            _check_max_tokens(params["max_output_tokens"], "response.max_output_tokens")
        conversation = params.get("conversation", "auto")
        if not isinstance(conversation, str):
            raise _invalid("response.conversation", conversation, ("auto", "none"))
        metadata = params.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise _invalid("response.metadata", metadata)
        current = _path(self.session, "audio", "output")
        output: Json = dict(current) if isinstance(current, dict) else {}
        requested = _path(params, "audio", "output")
        if requested is not None:
            if not isinstance(requested, dict):
                raise _invalid("response.audio.output", requested)
            if "format" in requested:
                _check_format(requested["format"], "response.audio.output.format")
            if "voice" in requested:
                _check_voice(requested["voice"], "response.audio.output.voice")
            output.update(requested)
        inputs: list[Json] | None = None
        if "input" in params:
            given = params["input"]
            if not isinstance(given, list):
                raise _invalid("response.input", given)
            inputs = [
                self._check_input(item, f"response.input[{i}]") for i, item in enumerate(given)
            ]
        chosen = modalities if isinstance(modalities, list) else ["audio"]
        return [str(m) for m in chosen], output, inputs

    def _check_input(self, item: object, where: str) -> Json:
        if isinstance(item, dict) and item.get("type") == "item_reference":
            reference = self._items.get(str(item.get("id")))
            if reference is None:
                raise _Rejected(
                    f"Item with id '{item.get('id')}' not found.", "item_not_found", where
                )
            return reference
        return self._check_item(item, where)

    def _respond(self, params: Json, out: Outbox) -> None:
        modalities, audio_output, inputs = self._check_response(params)
        in_conversation = params.get("conversation", "auto") != "none"
        instructions = params.get("instructions", self.session.get("instructions"))
        max_tokens = params.get("max_output_tokens", self.session.get("max_output_tokens", "inf"))
        context = inputs if inputs is not None else [self._items[i] for i in self._order]

        reply = self._reply_text(context)
        audio_ms = self.reply_audio_ms if "audio" in modalities else 0
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
            "conversation_id": self._conversation_id if in_conversation else None,
            "output_modalities": modalities,
            "max_output_tokens": max_tokens,
            "audio": {
                "output": {k: v for k, v in audio_output.items() if k in ("format", "voice")}
            },
            "usage": None,
            "metadata": params.get("metadata"),
        }
        _emit(out, {"type": "response.created", "response": response})
        item: Json = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        _emit(
            out,
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            },
        )
        previous = self._order[-1] if self._order else None
        if in_conversation:
            _emit(
                out, {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
            )
        ids: Json = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }
        if "audio" in modalities:
            fmt = _path(audio_output, "format", "type")
            part = self._stream_audio(
                ids,
                fmt if isinstance(fmt, str) and fmt in _FORMATS else "audio/pcm",
                audio_ms,
                reply,
                out,
            )
        else:
            part = _stream_text(ids, reply, out)
        item = {
            **item,
            "status": "incomplete" if status == "incomplete" else "completed",
            "content": [part],
        }
        _emit(
            out,
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            },
        )
        if in_conversation:
            self._items[item_id] = item
            self._order.append(item_id)
            if audio_ms:
                self._audio_ms[item_id] = audio_ms
            _emit(
                out, {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )

        usage = _usage(instructions, context, reply, audio_ms, self._audio_ms)
        response.update(status=status, status_details=status_details, output=[item], usage=usage)
        _emit(out, {"type": "response.done", "response": response})
        flat = flatten_usage(usage)
        out.add_usage(flat)

    def _reply_text(self, context: list[Json]) -> str:
        """Echo the latest user message: its text, else how much audio it held."""
        for item in reversed(context):
            if item.get("role") != "user":
                continue
            for part in reversed(_parts(item)):
                text = (
                    part.get("text") if part.get("type") == "input_text" else part.get("transcript")
                )
                if isinstance(text, str) and text.strip():
                    said = " ".join(text.split())
                    if len(said) > _ECHO_LIMIT:
                        said = said[:_ECHO_LIMIT].rsplit(" ", 1)[0] + "..."
                    return f"You said: {said}"
            audio_ms = self._audio_ms.get(str(item.get("id")), 0)
            if audio_ms:
                return f"I heard {audio_ms / 1000:.1f} seconds of audio."
            break
        return self.greeting

    def _stream_audio(
        self, ids: Json, fmt: str, audio_ms: int, transcript: str, out: Outbox
    ) -> Json:
        self._assistant_audio = True
        _emit(
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
                _emit(out, {"type": "response.output_audio_transcript.delta", **ids, "delta": word})
            next_word += per_chunk
        for word in words[next_word:]:
            _emit(out, {"type": "response.output_audio_transcript.delta", **ids, "delta": word})
        _emit(out, {"type": "response.output_audio.done", **ids})
        _emit(
            out, {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript}
        )
        _emit(
            out,
            {
                "type": "response.content_part.done",
                **ids,
                "part": {"type": "audio", "transcript": transcript},
            },
        )
        return {"type": "output_audio", "transcript": transcript}


def _stream_text(ids: Json, text: str, out: Outbox) -> Json:
    _emit(out, {"type": "response.content_part.added", **ids, "part": {"type": "text", "text": ""}})
    for word in _words(text):
        _emit(out, {"type": "response.output_text.delta", **ids, "delta": word})
    _emit(out, {"type": "response.output_text.done", **ids, "text": text})
    _emit(
        out, {"type": "response.content_part.done", **ids, "part": {"type": "text", "text": text}}
    )
    return {"type": "output_text", "text": text}


def _emit(out: Outbox, event: Json) -> None:
    """Queue a server event with a fresh ``event_id`` right after its ``type``."""
    out.client_json({"type": event["type"], "event_id": new_id("event"), **event})


def _parts(item: Json) -> list[Json]:
    content = item.get("content")
    if not isinstance(content, list):
        return []
    return [part for part in content if isinstance(part, dict)]


def _words(text: str) -> list[str]:
    """``text`` cut into deltas that join back to exactly ``text``."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]] if text else []


def _truncate(reply: str, audio_ms: int, max_tokens: int) -> tuple[str, int]:
    """Cut a reply to ``max_tokens`` output tokens, keeping text and audio in proportion."""
    total = _text_tokens(reply) + audio_ms // _OUTPUT_MS_PER_TOKEN
    share = max_tokens / total
    kept_audio = int(audio_ms * share) // _CHUNK_MS * _CHUNK_MS
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
        for part in _parts(item):
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
