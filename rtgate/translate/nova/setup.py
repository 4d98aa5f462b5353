"""Nova Sonic session configuration: GA ``session`` <-> the events that open a Nova stream.

Owns what the client configures and what Nova is told once per stream
(https://docs.aws.amazon.com/nova/latest/userguide/input-events.html): the per-deployment
:class:`NovaDefaults`, the
client's :class:`SessionConfig` merged from ``session.update``
(:func:`merge_update`) and echoed back (:func:`session_object`), the voice and
audio-format mapping, and the Nova input events built from it:
``sessionStart`` / ``promptStart`` / SYSTEM text (:func:`opening_events`), text
and tool-result content blocks and the AUDIO content start. Pure data in,
JSON-ready dicts out; no session state lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import orjson

from rtgate.translate.base import Outbox
from rtgate.translate.ga import session as ga_session
from rtgate.translate.ga.session import function_tools

# Nova Sonic v1 voices (input-events.html above); other ids pass through for newer models.
NOVA_VOICES: Final = frozenset(
    [
        "matthew",
        "tiffany",
        "amy",
        "lupe",
        "carlos",
        "ambre",
        "florian",
        "greta",
        "lennart",
        "beatrice",
        "lorenzo",
    ]
)
OPENAI_TO_NOVA_VOICE: Final = {
    "alloy": "tiffany",
    "ash": "matthew",
    "ballad": "matthew",
    "cedar": "matthew",
    "coral": "tiffany",
    "echo": "matthew",
    "marin": "tiffany",
    "sage": "amy",
    "shimmer": "tiffany",
    "verse": "matthew",
}
DEFAULT_VOICE: Final = "matthew"
DEFAULT_MAX_TOKENS: Final = 1024
DEFAULT_TOP_P: Final = 0.9
DEFAULT_TEMPERATURE: Final = 0.7
DEFAULT_SETUP_TIMEOUT: Final = 1.5
"""Seconds ``start`` waits for the client's first ``session.update`` before using defaults."""

PCM_24K: Final = {"type": "audio/pcm", "rate": 24000}
SAMPLE_RATES: Final = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
"""Sample rate Nova is told for each GA format (G.711 is carried as 8 kHz PCM16)."""
_EAGERNESS: Final = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH", "auto": "MEDIUM"}


@attrs.frozen
class NovaDefaults:
    """Per-deployment defaults (``litellm_params``: ``voice``, ``max_tokens``, ``temperature``,
    ``top_p``, ``endpointing_sensitivity``, ``session_start_timeout``)."""

    voice: str = DEFAULT_VOICE
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    endpointing_sensitivity: str | None = None
    setup_timeout: float = DEFAULT_SETUP_TIMEOUT


def nova_voice(voice: object, default: str = DEFAULT_VOICE) -> str:
    """A Nova voice id for an OpenAI voice name or a Nova id (unknown ids pass through)."""
    if not isinstance(voice, str) or not voice:
        return default
    if voice in OPENAI_TO_NOVA_VOICE:
        return OPENAI_TO_NOVA_VOICE[voice]
    return voice.lower() if voice.lower() in NOVA_VOICES else voice


def audio_format(value: object) -> dict[str, Any] | None:
    """A GA audio format rtgate can serve to Nova, normalised; None if unsupported."""
    if isinstance(value, str):  # legacy names
        value = {"pcm16": PCM_24K, "g711_ulaw": {"type": "audio/pcmu"}}.get(
            value, {"type": "audio/pcma"} if value == "g711_alaw" else None
        )
    if not isinstance(value, Mapping):
        return None
    kind = value.get("type")
    if kind == "audio/pcm":
        rate = value.get("rate", 24000)
        return dict(PCM_24K) if rate == 24000 else None
    if kind in ("audio/pcmu", "audio/pcma"):
        return {"type": kind}
    return None


@attrs.define
class SessionConfig:
    """What the client asked for, in GA terms, plus what Nova was told."""

    model: str
    instructions: str = ""
    voice: str = DEFAULT_VOICE
    """As the client named it (echoed back)."""
    output_modalities: list[str] = attrs.field(factory=lambda: ["audio"])
    input_format: dict[str, Any] = attrs.field(factory=lambda: dict(PCM_24K))
    output_format: dict[str, Any] = attrs.field(factory=lambda: dict(PCM_24K))
    turn_detection: dict[str, Any] | None = attrs.field(
        factory=lambda: {"type": "server_vad", "create_response": True, "interrupt_response": True}
    )
    transcription: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = attrs.field(factory=list)
    tool_choice: object = "auto"
    max_output_tokens: int | str = "inf"
    temperature: float | None = None

    def nova_fields(self) -> tuple[object, ...]:
        """Everything Nova takes once per stream: a change here needs a new stream."""
        return (
            self.instructions,
            self.voice,
            self.output_modalities,
            self.input_format,
            self.output_format,
            self.tools,
            self.max_output_tokens,
            self.temperature,
            (self.turn_detection or {}).get("eagerness"),
        )


def _merged_format(
    side: Mapping[str, Any], name: str, current: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    """``side["format"]`` normalised if present and supported; else ``current`` (noting why)."""
    if "format" not in side:
        return current
    fmt = audio_format(side["format"])
    if fmt is None:
        problems.append(f"audio.{name}.format {side['format']!r}")
        return current
    return fmt


def merge_update(config: SessionConfig, session: Mapping[str, Any]) -> list[str]:
    """Apply a GA ``session`` object onto ``config``; the problems (unsupported values)."""
    problems: list[str] = []
    if isinstance(session.get("instructions"), str):
        config.instructions = session["instructions"]
    modalities = session.get("output_modalities")
    if isinstance(modalities, list) and modalities:
        if modalities in (["audio"], ["text"]):
            config.output_modalities = list(modalities)
        else:
            problems.append(f"output_modalities {modalities!r} (use ['audio'] or ['text'])")
    audio = session.get("audio")
    if isinstance(audio, Mapping):
        audio_in = audio.get("input")
        if isinstance(audio_in, Mapping):
            config.input_format = _merged_format(audio_in, "input", config.input_format, problems)
            if "turn_detection" in audio_in:
                td = audio_in["turn_detection"]
                config.turn_detection = dict(td) if isinstance(td, Mapping) else None
            if "transcription" in audio_in:
                tr = audio_in["transcription"]
                config.transcription = dict(tr) if isinstance(tr, Mapping) else None
        audio_out = audio.get("output")
        if isinstance(audio_out, Mapping):
            config.output_format = _merged_format(
                audio_out, "output", config.output_format, problems
            )
            if isinstance(audio_out.get("voice"), str):
                config.voice = audio_out["voice"]
    if "tools" in session:
        kept, dropped = function_tools(session["tools"])
        if dropped:
            problems.append(
                "tools other than named functions (Nova takes function tools only): "
                + ", ".join(dropped)
            )
        config.tools = kept
    if "tool_choice" in session:
        config.tool_choice = session["tool_choice"]
    max_tokens = session.get("max_output_tokens")
    if (isinstance(max_tokens, int) and not isinstance(max_tokens, bool)) or max_tokens == "inf":
        config.max_output_tokens = max_tokens
    temperature = session.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        config.temperature = float(temperature)
    return problems


def session_object(config: SessionConfig, session_id: str) -> dict[str, Any]:
    """The GA ``session`` rtgate reports in ``session.created`` / ``session.updated``."""
    return ga_session.session_object(
        model=config.model,
        voice=config.voice,
        session_id=session_id,
        output_modalities=config.output_modalities,
        instructions=config.instructions,
        input_format=config.input_format,
        output_format=config.output_format,
        turn_detection=config.turn_detection,
        transcription=config.transcription,
        tools=config.tools,
        tool_choice=config.tool_choice,
        max_output_tokens=config.max_output_tokens,
    )


def send_session(out: Outbox, kind: str, config: SessionConfig, session_id: str) -> None:
    """Queue ``session.created`` or ``session.updated`` for the client."""
    out.client_json(ga_session.session_event(kind, session_object(config, session_id)))


# -- Nova input events ----------------------------------------------------------------


def nova_event(name: str, body: dict[str, Any]) -> dict[str, object]:
    """One Nova input event: ``{"event": {name: body}}``."""
    return {"event": {name: body}}


def send_upstream(out: Outbox, events: Iterable[dict[str, object]]) -> None:
    """Queue Nova input events in order."""
    for event in events:
        out.upstream_json(event)


def opening_events(
    config: SessionConfig, defaults: NovaDefaults, prompt: str, system_content: str
) -> list[dict[str, object]]:
    """``sessionStart``, ``promptStart`` and the SYSTEM text content, in order."""
    max_tokens = config.max_output_tokens
    inference: dict[str, Any] = {
        "maxTokens": max_tokens if isinstance(max_tokens, int) else defaults.max_tokens,
        "topP": defaults.top_p,
        "temperature": config.temperature
        if config.temperature is not None
        else defaults.temperature,
    }
    session_start: dict[str, Any] = {"inferenceConfiguration": inference}
    sensitivity = defaults.endpointing_sensitivity
    eagerness = (config.turn_detection or {}).get("eagerness")
    if isinstance(eagerness, str) and eagerness in _EAGERNESS:
        sensitivity = _EAGERNESS[eagerness]
    # Only Nova 2 documents turnDetectionConfiguration (NOVA2 sonic-turn-taking).
    if sensitivity and "nova-2" in config.model:
        session_start["turnDetectionConfiguration"] = {"endpointingSensitivity": sensitivity}
    prompt_start: dict[str, Any] = {
        "promptName": prompt,
        "textOutputConfiguration": {"mediaType": "text/plain"},
        "audioOutputConfiguration": {
            "mediaType": "audio/lpcm",
            "sampleRateHertz": SAMPLE_RATES[config.output_format["type"]],
            "sampleSizeBits": 16,
            "channelCount": 1,
            "voiceId": nova_voice(config.voice, defaults.voice),
            "encoding": "base64",
            "audioType": "SPEECH",
        },
        "toolUseOutputConfiguration": {"mediaType": "application/json"},
    }
    if config.tools:
        prompt_start["toolConfiguration"] = {"tools": [_tool_spec(t) for t in config.tools]}
    events = [nova_event("sessionStart", session_start), nova_event("promptStart", prompt_start)]
    if config.instructions:
        events += text_content(prompt, system_content, "SYSTEM", config.instructions)
    return events


def _tool_spec(tool: Mapping[str, Any]) -> dict[str, Any]:
    parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    spec: dict[str, Any] = {
        "name": str(tool.get("name", "")),
        "description": str(tool.get("description", "")),
        # Nova wants the JSON schema as a string (input-events.html, toolConfiguration).
        "inputSchema": {"json": orjson.dumps(parameters).decode()},
    }
    return {"toolSpec": spec}


def _content_start(prompt: str, content: str, fields: dict[str, Any]) -> dict[str, object]:
    """``contentStart`` for ``content``; ``fields`` in the order Nova's samples send them."""
    return nova_event("contentStart", {"promptName": prompt, "contentName": content, **fields})


def _content_block(
    prompt: str, content: str, start: dict[str, Any], name: str, payload: str
) -> list[dict[str, object]]:
    """A whole one-shot content block: ``contentStart``, one ``name`` event, ``contentEnd``."""
    return [
        _content_start(prompt, content, start),
        nova_event(name, {"promptName": prompt, "contentName": content, "content": payload}),
        nova_event("contentEnd", {"promptName": prompt, "contentName": content}),
    ]


def text_content(
    prompt: str, content: str, role: str, text: str, *, interactive: bool = False
) -> list[dict[str, object]]:
    """A TEXT content block (history, system prompt or Nova 2 typed input)."""
    start = {
        "type": "TEXT",
        "interactive": interactive,
        "role": role,
        "textInputConfiguration": {"mediaType": "text/plain"},
    }
    return _content_block(prompt, content, start, "textInput", text)


def tool_result_content(
    prompt: str, content: str, tool_use_id: str, result: str
) -> list[dict[str, object]]:
    """A TOOL content block answering Nova's ``toolUse`` ``tool_use_id``."""
    start = {
        "interactive": False,
        "type": "TOOL",
        "role": "TOOL",
        "toolResultInputConfiguration": {
            "toolUseId": tool_use_id,
            "type": "TEXT",
            "textInputConfiguration": {"mediaType": "text/plain"},
        },
    }
    return _content_block(prompt, content, start, "toolResult", result)


def audio_content_start(prompt: str, content: str, rate: int) -> dict[str, object]:
    """``contentStart`` of the session's one interactive USER AUDIO container."""
    return _content_start(
        prompt,
        content,
        {
            "type": "AUDIO",
            "interactive": True,
            "role": "USER",
            "audioInputConfiguration": {
                "mediaType": "audio/lpcm",
                "sampleRateHertz": rate,
                "sampleSizeBits": 16,
                "channelCount": 1,
                "audioType": "SPEECH",
                "encoding": "base64",
            },
        },
    )
