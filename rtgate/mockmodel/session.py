"""The mock model's session: OpenAI's GA defaults, ``session.update`` validation and merging.

Owns what :mod:`rtgate.mockmodel.translator` accepts and refuses in client events:
:class:`Rejected` (a refusal OpenAI answers with an ``error`` event) with the
helpers that word it the way OpenAI does (``missing_required_parameter``,
``invalid_value``, ``unknown_parameter``), the checks shared by
``session.update`` and ``response.create`` (modalities, audio format, voice,
``max_output_tokens``), the session shape itself (:func:`default_session`,
:func:`check_session`, :func:`merge`) and :func:`path` for reading nested
settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import orjson

from rtgate.mockmodel.audio import FORMATS, PCM_RATE
from rtgate.translate.base import new_id
from rtgate.translate.ga.session import DEFAULT_TURN_DETECTION, session_object

Json = dict[str, object]

_PCM_FORMAT: Final[Json] = {"type": "audio/pcm", "rate": PCM_RATE}
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


class Rejected(Exception):
    """A client event OpenAI would answer with an ``error`` event."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


def missing(param: str) -> Rejected:
    return Rejected(f"Missing required parameter: '{param}'.", "missing_required_parameter", param)


def invalid(param: str, value: object, allowed: Iterable[str] = ()) -> Rejected:
    shown = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()[:100]
    message = f"Invalid value: {shown} for '{param}'."
    choices = list(allowed)
    if choices:
        message += " Supported values are: " + ", ".join(f"'{c}'" for c in choices) + "."
    return Rejected(message, "invalid_value", param)


def _unknown(param: str) -> Rejected:
    return Rejected(f"Unknown parameter: '{param}'.", "unknown_parameter", param)


def check_keys(value: Json, allowed: frozenset[str], where: str) -> None:
    for key in value:
        if key not in allowed:
            raise _unknown(f"{where}.{key}")


def check_modalities(value: object, param: str) -> list[str]:
    if not isinstance(value, list) or not all(m in ("text", "audio") for m in value):
        raise invalid(param, value, ("text", "audio"))
    if len(value) != 1:
        # GA allows exactly one: audio responses carry their transcript anyway.
        raise Rejected(
            f"Invalid modalities: {value}. Supported combinations are: ['text'] and ['audio'].",
            "invalid_value",
            param,
        )
    return [str(m) for m in value]


def check_format(value: object, param: str) -> None:
    if not isinstance(value, dict):
        raise invalid(param, value)
    kind = value.get("type")
    if kind not in FORMATS:
        raise invalid(f"{param}.type", kind, FORMATS)
    if kind == "audio/pcm" and value.get("rate", PCM_RATE) != PCM_RATE:
        raise invalid(f"{param}.rate", value.get("rate"), ("24000",))


def check_max_tokens(value: object, param: str) -> None:
    if value == "inf" or value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise invalid(param, value, ("1..4096", "inf"))


def check_voice(value: object, param: str) -> None:
    if isinstance(value, str) and value:
        return
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return
    raise invalid(param, value, _VOICES)


def _check_turn_detection(value: object, param: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid(param, value)
    kind = value.get("type")
    if kind not in ("server_vad", "semantic_vad"):
        raise invalid(f"{param}.type", kind, ("server_vad", "semantic_vad"))
    threshold = value.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise invalid(f"{param}.threshold", threshold)
    for key in ("silence_duration_ms", "prefix_padding_ms"):
        ms = value.get(key, 0)
        if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
            raise invalid(f"{param}.{key}", ms)


def _check_audio(audio: object) -> None:
    if not isinstance(audio, dict):
        raise invalid("session.audio", audio)
    check_keys(audio, frozenset(_AUDIO_KEYS), "session.audio")
    for side, allowed in _AUDIO_KEYS.items():
        config = audio.get(side)
        if config is None:
            continue
        where = f"session.audio.{side}"
        if not isinstance(config, dict):
            raise invalid(where, config)
        check_keys(config, allowed, where)
        if "format" in config:
            check_format(config["format"], f"{where}.format")
        if "turn_detection" in config:
            _check_turn_detection(config["turn_detection"], f"{where}.turn_detection")
        if "voice" in config:
            check_voice(config["voice"], f"{where}.voice")
        for key in ("transcription", "noise_reduction"):
            if config.get(key) is not None and not isinstance(config[key], dict):
                raise invalid(f"{where}.{key}", config[key])
        speed = config.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 1.5:
            raise invalid(f"{where}.speed", speed)


def check_session(session: object) -> Json:
    """The ``session`` of a ``session.update``, or :class:`Rejected` as OpenAI words it."""
    if not isinstance(session, dict):
        raise missing("session") if session is None else invalid("session", session)
    if "type" not in session:
        raise missing("session.type")
    if session["type"] != "realtime":
        # The mock serves conversations; a transcription session needs ?intent=transcription.
        raise invalid("session.type", session["type"], ("realtime",))
    check_keys(session, _SESSION_KEYS, "session")
    if "output_modalities" in session:
        check_modalities(session["output_modalities"], "session.output_modalities")
    if "instructions" in session and not isinstance(session["instructions"], str):
        raise invalid("session.instructions", session["instructions"])
    if "max_output_tokens" in session:
        check_max_tokens(session["max_output_tokens"], "session.max_output_tokens")
    if "tools" in session:
        _check_tools(session["tools"])
    if "audio" in session:
        _check_audio(session["audio"])
    return session


def merge(base: Json, update: Json) -> Json:
    """``base`` with ``update`` applied: ``audio``/``input``/``output`` merge, the rest replace."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and key in ("audio", "input", "output")
        ):
            merged[key] = merge(current, value)
        else:
            merged[key] = value
    return merged


def default_session(model: str) -> Json:
    """The session OpenAI announces for a new GA conversation, with this model."""
    return session_object(
        model=model,
        voice="marin",
        session_id=new_id("sess"),
        instructions="You are a helpful, witty and friendly AI. Keep replies short.",
        input_format=_PCM_FORMAT,
        output_format=_PCM_FORMAT,
        turn_detection=DEFAULT_TURN_DETECTION,
    )


def _check_tools(tools: object) -> None:
    """Function tools only (the mock runs no MCP server); a missing ``type`` is a function,
    as OpenAI's, and is written in so the session reports it."""
    if not isinstance(tools, list):
        raise invalid("session.tools", tools)
    for index, tool in enumerate(tools):
        where = f"session.tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid(where, tool)
        if tool.setdefault("type", "function") != "function":
            raise invalid(f"{where}.type", tool["type"], ("function",))
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise (
                missing(f"{where}.name")
                if "name" not in tool
                else invalid(f"{where}.name", tool["name"])
            )
        if "description" in tool and not isinstance(tool["description"], str):
            raise invalid(f"{where}.description", tool["description"])
        if "parameters" in tool and not isinstance(tool["parameters"], dict):
            raise invalid(f"{where}.parameters", tool["parameters"])
