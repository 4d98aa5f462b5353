"""OpenAI GA session configuration -> the one Gemini Live ``setup`` message.

Pure. Owns: merging ``session.update`` payloads into the session the client
asked for, turning that session into Gemini's ``setup`` (model, modality,
voice, instructions, tools, sampling, voice activity detection,
transcription), listing what Gemini cannot honour so the translator can say
so, and the GA ``session`` object rtgate echoes in ``session.created`` /
``session.updated``.

Facts used (https://ai.google.dev/api/live and
https://ai.google.dev/gemini-api/docs/live-api/capabilities): the setup is one-shot (a second one is
closed with 1007), ``turn_detection: null`` means client-driven activity
(``automaticActivityDetection.disabled``), Gemini takes PCM16 at any rate named
in the MIME type and always answers PCM16 at 24 kHz.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

import attrs

from rtgate.translate.base import get_path
from rtgate.translate.ga.session import function_tools, session_object

OPENAI_TO_GEMINI_VOICE: Final = {
    "alloy": "Zephyr",
    "ash": "Charon",
    "ballad": "Fenrir",
    "cedar": "Charon",
    "coral": "Aoede",
    "echo": "Puck",
    "marin": "Aoede",
    "sage": "Kore",
    "shimmer": "Leda",
    "verse": "Orus",
}
GEMINI_VOICES: Final = frozenset(
    [
        "Puck",
        "Charon",
        "Kore",
        "Fenrir",
        "Aoede",
        "Leda",
        "Orus",
        "Zephyr",
        "Achernar",
        "Achird",
        "Algenib",
        "Algieba",
        "Alnilam",
        "Autonoe",
        "Callirrhoe",
        "Despina",
        "Enceladus",
        "Erinome",
        "Gacrux",
        "Iapetus",
        "Laomedeia",
        "Pulcherrima",
        "Rasalgethi",
        "Sadachbia",
        "Sadaltager",
        "Schedar",
        "Sulafat",
        "Umbriel",
        "Vindemiatrix",
        "Zubenelgenubi",
    ]
)
_GEMINI_BY_LOWER: Final = {v.lower(): v for v in GEMINI_VOICES}
DEFAULT_VOICE: Final = "Puck"
OUTPUT_RATE: Final = 24000
"""Gemini Live always answers 16-bit PCM at 24 kHz
(https://ai.google.dev/gemini-api/docs/live-api/capabilities)."""

# JSON-schema keys Gemini's ``Schema`` understands (google.genai.types.Schema aliases).
_SCHEMA_KEYS: Final = frozenset(
    [
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    ]
)
# Keys OpenAI tool schemas carry that change nothing for Gemini's OpenAPI-style Schema.
_SCHEMA_DROPPABLE: Final = frozenset({"$schema", "additionalProperties", "strict", "$comment"})

_HANDLED_SESSION_KEYS: Final = frozenset(
    {
        "type",
        "object",
        "id",
        "model",
        "output_modalities",
        "instructions",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "max_response_output_tokens",
        "temperature",
        "expires_at",
    }
)
# Present-but-default values that need no warning.
_HARMLESS_DEFAULTS: Final[Mapping[str, tuple[object, ...]]] = {
    "truncation": ("auto", None),
    "tracing": (None,),
    "prompt": (None,),
    "include": (None, []),
    "parallel_tool_calls": (True, None),
    "reasoning": (None,),
}


@attrs.frozen
class AudioFormat:
    """A client audio format: ``pcm`` (with its rate), ``pcmu`` or ``pcma`` (8 kHz)."""

    encoding: str = "pcm"
    rate: int = 24000

    def as_openai(self) -> dict[str, object]:
        if self.encoding == "pcm":
            return {"type": "audio/pcm", "rate": self.rate}
        return {"type": f"audio/{self.encoding}"}


PCM24: Final = AudioFormat()


def parse_format(value: object) -> AudioFormat | None:
    """A GA format object (or a beta string the bridge left); None if unknown."""
    if isinstance(value, str):
        return {
            "pcm16": PCM24,
            "g711_ulaw": AudioFormat("pcmu", 8000),
            "g711_alaw": AudioFormat("pcma", 8000),
        }.get(value)
    if not isinstance(value, Mapping):
        return None
    kind = value.get("type")
    if kind == "audio/pcm":
        rate = value.get("rate", 24000)
        return AudioFormat("pcm", rate) if isinstance(rate, int) and 8000 <= rate <= 48000 else None
    if kind in ("audio/pcmu", "audio/pcma"):
        return AudioFormat(str(kind)[len("audio/") :], 8000)
    return None


@attrs.frozen
class SessionPlan:
    """What one session configuration means for Gemini and for the local translation."""

    setup: dict[str, Any]
    """The ``setup`` body without ``sessionResumption`` (added when sent)."""
    ignored: tuple[str, ...]
    """Client settings Gemini cannot honour, as ``path (why)`` texts."""
    input_format: AudioFormat
    output_format: AudioFormat
    manual_activity: bool
    """``turn_detection: null``: the client marks turns (commit / response.create)."""
    text_output: bool
    transcribe_input: bool
    voice: str
    """The voice as the client named it (echoed back)."""


def default_session(model_group: str) -> dict[str, Any]:
    """The GA session a Gemini-backed session starts with (what ``session.created`` shows)."""
    return session_object(
        model=model_group,
        voice=DEFAULT_VOICE,
        input_format=PCM24.as_openai(),
        output_format=PCM24.as_openai(),
        turn_detection={
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
        },
    )


def merge_session(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Apply one ``session.update`` payload: given keys replace, ``audio.input``/``output`` merge."""
    merged = copy.deepcopy(dict(current))
    for key, value in update.items():
        if key == "audio" and isinstance(value, Mapping):
            audio = merged.setdefault("audio", {})
            if not isinstance(audio, dict):
                audio = merged["audio"] = {}
            for side, settings in value.items():
                if isinstance(settings, Mapping) and isinstance(audio.get(side), dict):
                    audio[side].update(copy.deepcopy(dict(settings)))
                else:
                    audio[side] = copy.deepcopy(settings)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def gemini_voice(voice: object) -> str | None:
    """Gemini's prebuilt voice for an OpenAI or Gemini voice name; None if not a name."""
    if not isinstance(voice, str) or not voice:
        return None
    lowered = voice.lower()
    if lowered in OPENAI_TO_GEMINI_VOICE:
        return OPENAI_TO_GEMINI_VOICE[lowered]
    return _GEMINI_BY_LOWER.get(lowered, voice)


def model_path(
    model: str, *, vertex_project: str | None = None, vertex_location: str | None = None
) -> str:
    """``models/M`` on AI Studio; the full publisher path on Vertex."""
    if vertex_project is not None:
        if model.startswith("projects/"):
            return model
        name = model.removeprefix("models/")
        if not name.startswith("publishers/"):
            name = f"publishers/google/models/{name}"
        return f"projects/{vertex_project}/locations/{vertex_location or 'us-central1'}/{name}"
    return model if model.startswith("models/") else f"models/{model}"


def build_plan(session: Mapping[str, Any], model: str) -> SessionPlan:
    """Translate a (merged) GA session into Gemini's setup; ``model`` is the setup's model path."""
    ignored: list[str] = []
    generation: dict[str, Any] = {}

    modalities = session.get("output_modalities")
    text_output = isinstance(modalities, list) and modalities == ["text"]
    if isinstance(modalities, list) and "text" in modalities and "audio" in modalities:
        ignored.append("output_modalities (Gemini answers in one modality; using audio)")
    generation["responseModalities"] = ["TEXT" if text_output else "AUDIO"]

    client_voice = get_path(session, "audio", "output", "voice")
    voice_name = gemini_voice(client_voice)
    if client_voice is not None and voice_name is None:
        ignored.append("audio.output.voice (custom voices do not exist on Gemini)")
    if not text_output:
        generation["speechConfig"] = {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice_name or DEFAULT_VOICE}}
        }
    speed = get_path(session, "audio", "output", "speed")
    if speed is not None and speed != 1.0:
        ignored.append("audio.output.speed (Gemini has no speaking-rate setting)")

    temperature = session.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        generation["temperature"] = float(temperature)
    max_tokens = session.get("max_output_tokens", session.get("max_response_output_tokens"))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        generation["maxOutputTokens"] = max_tokens

    setup: dict[str, Any] = {"model": model, "generationConfig": generation}
    instructions = session.get("instructions")
    if isinstance(instructions, str) and instructions:
        setup["systemInstruction"] = {"parts": [{"text": instructions}]}

    declarations = _function_declarations(session.get("tools"), ignored)
    if declarations:
        setup["tools"] = [{"functionDeclarations": declarations}]
    tool_choice = session.get("tool_choice")
    if tool_choice not in (None, "auto"):
        ignored.append(
            f"tool_choice={_short(tool_choice)} (Gemini Live always chooses tools itself)"
        )

    input_format = parse_format(get_path(session, "audio", "input", "format"))
    if input_format is None:
        ignored.append("audio.input.format (unknown; using audio/pcm at 24 kHz)")
        input_format = PCM24
    output_format = parse_format(get_path(session, "audio", "output", "format"))
    if output_format is None:
        ignored.append("audio.output.format (unknown; using audio/pcm at 24 kHz)")
        output_format = PCM24

    turn = get_path(session, "audio", "input", "turn_detection")
    manual, realtime_config = _activity_detection(turn, ignored)
    setup["realtimeInputConfig"] = realtime_config

    transcription = get_path(session, "audio", "input", "transcription")
    transcribe_input = isinstance(transcription, Mapping)
    if transcribe_input:
        setup["inputAudioTranscription"] = {}
    if not text_output:
        # OpenAI always streams a transcript of spoken answers; Gemini does on request.
        setup["outputAudioTranscription"] = {}
    # Without compression an audio session ends after 15 minutes
    # (https://ai.google.dev/gemini-api/docs/live-session).
    setup["contextWindowCompression"] = {"slidingWindow": {}}

    noise = get_path(session, "audio", "input", "noise_reduction")
    if noise is not None:
        ignored.append("audio.input.noise_reduction (Gemini has no noise reduction setting)")
    for key, value in session.items():
        if key in _HANDLED_SESSION_KEYS:
            continue
        if key in _HARMLESS_DEFAULTS and value in _HARMLESS_DEFAULTS[key]:
            continue
        if key == "input_audio_transcription" or value is None:
            continue
        ignored.append(f"{key} (not supported by Gemini Live)")

    return SessionPlan(
        setup=setup,
        ignored=tuple(ignored),
        input_format=input_format,
        output_format=output_format,
        manual_activity=manual,
        text_output=text_output,
        transcribe_input=transcribe_input,
        voice=client_voice if isinstance(client_voice, str) and voice_name else DEFAULT_VOICE,
    )


def _activity_detection(turn: object, ignored: list[str]) -> tuple[bool, dict[str, Any]]:
    """(manual?, realtimeInputConfig) for a GA ``turn_detection`` value."""
    if turn is None:
        return True, {"automaticActivityDetection": {"disabled": True}}
    if not isinstance(turn, Mapping):
        ignored.append("audio.input.turn_detection (not an object; using server VAD)")
        return False, {"automaticActivityDetection": {"disabled": False}}
    detection: dict[str, Any] = {"disabled": False}
    config: dict[str, Any] = {"automaticActivityDetection": detection}
    kind = turn.get("type", "server_vad")
    if kind == "server_vad":
        silence = turn.get("silence_duration_ms")
        if isinstance(silence, int) and silence >= 0:
            detection["silenceDurationMs"] = silence
        padding = turn.get("prefix_padding_ms")
        if isinstance(padding, int) and padding >= 0:
            detection["prefixPaddingMs"] = padding
        threshold = turn.get("threshold")
        # Gemini offers two start sensitivities; a lower OpenAI threshold means more sensitive.
        if isinstance(threshold, int | float) and threshold < 0.5:
            detection["startOfSpeechSensitivity"] = "START_SENSITIVITY_HIGH"
        elif isinstance(threshold, int | float) and threshold > 0.5:
            detection["startOfSpeechSensitivity"] = "START_SENSITIVITY_LOW"
    elif kind == "semantic_vad":
        # No semantic detector on Gemini: eagerness maps onto end-of-speech sensitivity.
        eagerness = turn.get("eagerness")
        if eagerness == "high":
            detection["endOfSpeechSensitivity"] = "END_SENSITIVITY_HIGH"
        elif eagerness == "low":
            detection["endOfSpeechSensitivity"] = "END_SENSITIVITY_LOW"
    else:
        ignored.append(f"audio.input.turn_detection.type={_short(kind)} (using server VAD)")
    if turn.get("create_response") is False:
        ignored.append(
            "audio.input.turn_detection.create_response=false (Gemini always answers a turn)"
        )
    if turn.get("interrupt_response") is False:
        config["activityHandling"] = "NO_INTERRUPTION"
    if turn.get("idle_timeout_ms") is not None:
        ignored.append("audio.input.turn_detection.idle_timeout_ms (no idle timeout on Gemini)")
    return False, config


def _function_declarations(tools: object, ignored: list[str]) -> list[dict[str, Any]]:
    kept, dropped = function_tools(tools)
    ignored.extend(f"{why} (Gemini Live takes named function tools only)" for why in dropped)
    declarations: list[dict[str, Any]] = []
    for tool in kept:
        declaration: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            declaration["description"] = tool["description"]
        parameters = tool.get("parameters")
        if parameters:
            converted = gemini_schema(parameters)
            if converted is None:
                # Full JSON Schema (refs, combinators Gemini's Schema lacks) travels as is.
                declaration["parametersJsonSchema"] = dict(parameters)
            else:
                declaration["parameters"] = converted
        declarations.append(declaration)
    return declarations


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON schema as Gemini's OpenAPI-style ``Schema``; None if it uses what that lacks."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_DROPPABLE:
            continue
        if key not in _SCHEMA_KEYS:
            return None
        if key == "type":
            types = value if isinstance(value, list) else [value]
            names = [t for t in types if isinstance(t, str) and t != "null"]
            if len(names) != 1 or len(types) - len(names) > 1:
                return None
            out["type"] = names[0].upper()
            if len(types) == 2:
                out["nullable"] = True
        elif key == "properties":
            if not isinstance(value, Mapping):
                return None
            props: dict[str, Any] = {}
            for prop, sub in value.items():
                converted = gemini_schema(sub) if isinstance(sub, Mapping) else None
                if converted is None:
                    return None
                props[prop] = converted
            out["properties"] = props
        elif key == "items":
            converted = gemini_schema(value) if isinstance(value, Mapping) else None
            if converted is None:
                return None
            out["items"] = converted
        elif key == "anyOf":
            if not isinstance(value, list):
                return None
            variants = [gemini_schema(v) if isinstance(v, Mapping) else None for v in value]
            if any(v is None for v in variants):
                return None
            out["anyOf"] = variants
        else:
            out[key] = value
    return out


def session_echo(session: Mapping[str, Any], plan: SessionPlan, session_id: str) -> dict[str, Any]:
    """The GA ``session`` object for ``session.created`` / ``session.updated``: what is in effect."""
    echo = default_session(str(session.get("model") or ""))
    echo = merge_session(echo, {k: v for k, v in session.items() if k in _HANDLED_SESSION_KEYS})
    echo["id"] = session_id
    echo["object"] = "realtime.session"
    echo["type"] = "realtime"
    echo["output_modalities"] = ["text"] if plan.text_output else ["audio"]
    audio = echo["audio"]
    audio["input"]["format"] = plan.input_format.as_openai()
    audio["output"]["format"] = plan.output_format.as_openai()
    audio["output"]["voice"] = plan.voice
    audio["output"]["speed"] = 1.0
    audio["input"]["noise_reduction"] = None
    echo.pop("temperature", None)
    echo.pop("max_response_output_tokens", None)
    if echo.get("tool_choice") not in (None, "auto"):
        echo["tool_choice"] = "auto"
    echo["tools"] = function_tools(echo.get("tools"))[0]  # what became functionDeclarations
    return echo


def changed_setup_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Top-level setup fields (with generationConfig split) whose values differ."""
    changed: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key == "generationConfig":
            old_gen = old.get(key) or {}
            new_gen = new.get(key) or {}
            changed += [
                f"generationConfig.{k}"
                for k in sorted(set(old_gen) | set(new_gen))
                if old_gen.get(k) != new_gen.get(k)
            ]
        elif old.get(key) != new.get(key):
            changed.append(key)
    return changed


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
