"""Bridge a client speaking the retired OpenAI *beta* Realtime protocol to GA.

A client that connects with ``OpenAI-Beta: realtime=v1`` talks the beta shape:
flat ``session`` objects, string audio formats, ``response.text.delta`` and
friends. Every upstream rtgate dials speaks GA only (OpenAI closes beta
sessions with 4000 ``beta_api_shape_disabled`` since 2026-05-12), so the relay
runs each client frame through :meth:`BetaBridge.client_to_ga` and each frame
for the client through :meth:`BetaBridge.server_to_beta`.

What changes (OpenAI's reference, https://platform.openai.com/docs/api-reference/realtime,
and the openai SDK's ``openai.types.realtime`` vs ``openai.types.beta.realtime``):

* client -> GA: ``session.update`` flat -> nested (``type: "realtime"``,
  ``output_modalities``, ``audio.input`` / ``audio.output``, object formats,
  ``max_output_tokens``; ``temperature`` dropped, GA has none);
  ``transcription_session.update`` -> ``session.update`` with
  ``type: "transcription"``; ``response.create`` parameters;
  content part types of assistant items (``text`` -> ``output_text``).
* GA -> client: ``response.output_text.*`` / ``output_audio.*`` /
  ``output_audio_transcript.*`` renamed to the beta names,
  ``conversation.item.added`` -> ``conversation.item.created`` and
  ``conversation.item.done`` dropped (beta had neither), content part types
  back, session objects nested -> flat.

Audio frames are the bulk of the traffic: a client's
``input_audio_buffer.append`` is returned as the very same ``bytes`` object and
a server's ``response.output_audio.delta`` is renamed by splicing its
``{"type":"...`` prefix, never by decoding the JSON. Frames from an upstream
that still emits beta names (``response.audio.delta``) pass unchanged.
"""

from __future__ import annotations

from typing import Final

import orjson

from rtgate.protocol.events import parse_event, sniff_type

Json = dict[str, object]

# Beta string formats and their GA objects. GA PCM is 24 kHz only (OP-GA
# realtime_audio_formats: "Only a 24kHz sample rate is supported").
_GA_FORMATS: Final[dict[str, Json]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
_BETA_FORMATS: Final[dict[str, str]] = {
    "audio/pcm": "pcm16",
    "audio/pcmu": "g711_ulaw",
    "audio/pcma": "g711_alaw",
}

# Flat beta session keys that live under ``audio.input`` / ``audio.output`` in GA.
_INPUT_KEYS: Final = {
    "input_audio_format": "format",
    "input_audio_transcription": "transcription",
    "turn_detection": "turn_detection",
    "input_audio_noise_reduction": "noise_reduction",
}
_OUTPUT_KEYS: Final = {"output_audio_format": "format", "voice": "voice", "speed": "speed"}
_INPUT_KEYS_BACK: Final = {ga: beta for beta, ga in _INPUT_KEYS.items()}
_OUTPUT_KEYS_BACK: Final = {ga: beta for beta, ga in _OUTPUT_KEYS.items()}

# Content part types of assistant messages; user/system parts keep ``input_*``.
_GA_ASSISTANT_PARTS: Final = {"text": "output_text", "audio": "output_audio"}
_GA_USER_PARTS: Final = {"text": "input_text", "audio": "input_audio"}
_BETA_PARTS: Final = {"output_text": "text", "output_audio": "audio"}

# Flat GA server events whose only change is the name: the hot path.
_RENAMES: Final = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
_RENAME_PREFIXES: Final = tuple(
    (
        prefix + ga.encode() + b'"',
        prefix + beta.encode() + b'"',
    )
    for ga, beta in _RENAMES.items()
    for prefix in (b'{"type":"', b'{"type": "')
)

_CLIENT_EVENTS_TO_TRANSLATE: Final = frozenset(
    {
        "session.update",
        "transcription_session.update",
        "response.create",
        "conversation.item.create",
    }
)
_ITEM_EVENTS: Final = frozenset(
    {
        "conversation.item.created",
        "conversation.item.retrieved",
        "response.output_item.added",
        "response.output_item.done",
    }
)
_PART_EVENTS: Final = frozenset({"response.content_part.added", "response.content_part.done"})
_RESPONSE_EVENTS: Final = frozenset({"response.created", "response.done"})
_SESSION_EVENTS: Final = frozenset({"session.created", "session.updated"})
_SERVER_EVENTS_TO_TRANSLATE: Final = (
    _ITEM_EVENTS
    | _PART_EVENTS
    | _RESPONSE_EVENTS
    | _SESSION_EVENTS
    | {"conversation.item.added", "conversation.item.done"}
    | frozenset(_RENAMES)
)

_UNSET: Final = object()


def ga_modalities(value: object) -> object:
    """Beta ``modalities`` -> GA ``output_modalities``: audio implies its transcript text."""
    if isinstance(value, list) and value and all(isinstance(m, str) for m in value):
        return ["audio"] if "audio" in value else list(value)
    return value


def beta_modalities(value: object) -> object:
    """GA ``output_modalities`` -> beta ``modalities`` (beta audio always came with text)."""
    if isinstance(value, list) and "audio" in value:
        return ["text", "audio"]
    return value


def ga_format(value: object) -> object:
    """``"pcm16"`` -> ``{"type": "audio/pcm", "rate": 24000}``; anything else unchanged."""
    if isinstance(value, str) and value in _GA_FORMATS:
        return dict(_GA_FORMATS[value])
    return value


def beta_format(value: object) -> object:
    """``{"type": "audio/pcmu"}`` -> ``"g711_ulaw"``; anything unknown unchanged."""
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str) and kind in _BETA_FORMATS:
            return _BETA_FORMATS[kind]
    return value


def session_to_ga(flat: Json, kind: str = "realtime") -> Json:
    """A beta (flat) session object as a GA (nested) one of session type ``kind``.

    Keys already in GA shape are kept, so a half-migrated client works too.
    """
    ga: Json = {"type": flat.get("type", kind)}
    audio_in: Json = {}
    audio_out: Json = {}
    for key, value in flat.items():
        if key in ("type", "temperature"):
            continue
        if key == "modalities":
            if kind == "realtime":
                ga["output_modalities"] = ga_modalities(value)
        elif key == "max_response_output_tokens":
            ga["max_output_tokens"] = value
        elif key in _INPUT_KEYS:
            audio_in[_INPUT_KEYS[key]] = ga_format(value) if key == "input_audio_format" else value
        elif key in _OUTPUT_KEYS:
            audio_out[_OUTPUT_KEYS[key]] = (
                ga_format(value) if key == "output_audio_format" else value
            )
        elif key == "client_secret":
            continue  # beta transcription sessions echoed it; GA session.update refuses it
        else:
            ga[key] = value
    if audio_in or audio_out:
        audio = ga.get("audio")
        merged: Json = dict(audio) if isinstance(audio, dict) else {}
        for side, values in (("input", audio_in), ("output", audio_out)):
            if values:
                existing = merged.get(side)
                merged[side] = {**existing, **values} if isinstance(existing, dict) else values
        ga["audio"] = merged
    return ga


def session_to_beta(ga: Json, temperature: object = _UNSET) -> Json:
    """A GA (nested) session object as the beta flat shape.

    ``temperature`` (the value the client last set, which GA does not keep) is
    put back so the client reads what it wrote.
    """
    flat: Json = {}
    for key, value in ga.items():
        if key == "type":
            continue
        if key == "output_modalities":
            flat["modalities"] = beta_modalities(value)
        elif key == "max_output_tokens":
            flat["max_response_output_tokens"] = value
        elif key == "audio" and isinstance(value, dict):
            _flatten_audio(value, flat)
        else:
            flat[key] = value
    if temperature is not _UNSET:
        flat["temperature"] = temperature
    return flat


def _flatten_audio(audio: Json, flat: Json) -> None:
    for side, names in (("input", _INPUT_KEYS_BACK), ("output", _OUTPUT_KEYS_BACK)):
        values = audio.get(side)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            beta_key = names.get(key)
            if beta_key is not None:
                flat[beta_key] = beta_format(value) if key == "format" else value


def item_to_ga(item: object) -> bool:
    """Rename beta content part types of ``item`` in place; True if anything changed."""
    if not isinstance(item, dict):
        return False
    content = item.get("content")
    if not isinstance(content, list):
        return False
    names = _GA_ASSISTANT_PARTS if item.get("role") == "assistant" else _GA_USER_PARTS
    return _rename_parts(content, names)


def item_to_beta(item: object) -> bool:
    """Rename GA content part types of ``item`` in place; True if anything changed."""
    if not isinstance(item, dict):
        return False
    content = item.get("content")
    return isinstance(content, list) and _rename_parts(content, _BETA_PARTS)


def _rename_parts(parts: list[object], names: dict[str, str]) -> bool:
    changed = False
    for part in parts:
        if isinstance(part, dict):
            kind = part.get("type")
            if isinstance(kind, str) and kind in names:
                part["type"] = names[kind]
                changed = True
    return changed


def response_params_to_ga(params: Json) -> Json:
    """Beta ``response.create.response`` -> GA parameters."""
    ga: Json = {}
    audio_out: Json = {}
    for key, value in params.items():
        if key == "modalities":
            ga["output_modalities"] = ga_modalities(value)
        elif key == "max_response_output_tokens":
            ga["max_output_tokens"] = value
        elif key == "voice":
            audio_out["voice"] = value
        elif key == "output_audio_format":
            audio_out["format"] = ga_format(value)
        elif key == "temperature":
            continue
        elif key == "input" and isinstance(value, list):
            for item in value:
                item_to_ga(item)
            ga[key] = value
        else:
            ga[key] = value
    if audio_out:
        audio = ga.get("audio")
        merged: Json = dict(audio) if isinstance(audio, dict) else {}
        existing = merged.get("output")
        merged["output"] = {**existing, **audio_out} if isinstance(existing, dict) else audio_out
        ga["audio"] = merged
    return ga


def response_to_beta(response: Json) -> None:
    """Rewrite a GA response object (``response.created``/``done``) in place as beta."""
    if "output_modalities" in response:
        response["modalities"] = beta_modalities(response.pop("output_modalities"))
    audio = response.get("audio")
    if isinstance(audio, dict):
        output = audio.get("output")
        if isinstance(output, dict):
            del response["audio"]
            if "voice" in output:
                response["voice"] = output["voice"]
            if "format" in output:
                response["output_audio_format"] = beta_format(output["format"])
    output_items = response.get("output")
    if isinstance(output_items, list):
        for item in output_items:
            item_to_beta(item)


class BetaBridge:
    """Per-session beta <-> GA translation for one beta-speaking client.

    Pure and synchronous. ``None`` from either method means "drop the frame".
    The only state kept is the ``temperature`` the client last set, which GA
    forgets, so ``session.updated`` can report it back.
    """

    def __init__(self) -> None:
        self._temperature: object = _UNSET

    def client_to_ga(self, frame: bytes) -> bytes | None:
        """A beta client frame as GA; frames needing no change are returned as is."""
        kind = sniff_type(frame)
        if kind not in _CLIENT_EVENTS_TO_TRANSLATE:
            return frame
        event = parse_event(frame)
        if event is None:
            return frame
        if kind == "session.update" or kind == "transcription_session.update":
            session = event.get("session")
            if not isinstance(session, dict):
                return frame  # let the upstream word the error
            if "temperature" in session:
                self._temperature = session["temperature"]
            session_kind = "realtime" if kind == "session.update" else "transcription"
            event["type"] = "session.update"
            event["session"] = session_to_ga(session, session_kind)
        elif kind == "response.create":
            params = event.get("response")
            if not isinstance(params, dict):
                return frame
            event["response"] = response_params_to_ga(params)
        elif not item_to_ga(event.get("item")):  # conversation.item.create
            return frame
        return orjson.dumps(event)

    def server_to_beta(self, frame: bytes) -> bytes | None:
        """A GA server frame as beta; ``None`` for GA-only events beta never had."""
        for ga_prefix, beta_prefix in _RENAME_PREFIXES:
            if frame.startswith(ga_prefix):
                return beta_prefix + frame[len(ga_prefix) :]
        kind = sniff_type(frame)
        if kind not in _SERVER_EVENTS_TO_TRANSLATE:
            return frame
        if kind == "conversation.item.done":
            return None
        event = parse_event(frame)
        if event is None:
            return frame
        if kind in _RENAMES:
            event["type"] = _RENAMES[kind]
        elif kind == "conversation.item.added":
            event["type"] = "conversation.item.created"
            item_to_beta(event.get("item"))
        elif kind in _ITEM_EVENTS:
            if not item_to_beta(event.get("item")):
                return frame
        elif kind in _PART_EVENTS:
            part = event.get("part")
            if not (isinstance(part, dict) and _rename_parts([part], _BETA_PARTS)):
                return frame
        elif kind in _RESPONSE_EVENTS:
            response = event.get("response")
            if not isinstance(response, dict):
                return frame
            response_to_beta(response)
        else:  # session.created / session.updated
            session = event.get("session")
            if not isinstance(session, dict):
                return frame
            if session.get("type") == "transcription":
                if kind == "session.updated":
                    event["type"] = "transcription_session.updated"
                event["session"] = session_to_beta(session)
            else:
                event["session"] = session_to_beta(session, self._temperature)
        return orjson.dumps(event)
