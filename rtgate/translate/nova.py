"""OpenAI Realtime GA <-> Amazon Nova Sonic events: the pure translator for Bedrock sessions.

Owns the whole session mapping of protocols.md 9.3. Frames to and from the
upstream are Nova's JSON events (``{"event": {name: {...}}}``) as ``bytes``;
``rtgate.aws.h2stream`` does the event-stream framing and signing.

Shape of a session:

* ``start`` answers ``session.created`` at once (Nova says nothing until it
  hears something) and arms :attr:`deadline`: if no ``session.update``
  arrives in time, or the client sends content first, the stream is opened
  with defaults.
* The stream opens with ``sessionStart``, ``promptStart`` (24 kHz PCM16 output
  so audio passes through; 8 kHz for G.711 clients, re-encoded here; voice;
  tools) and the instructions as SYSTEM text. Nova takes this once per
  stream, so a later ``session.update`` that changes it is reported, not
  silently dropped.
* Client audio goes into one AUDIO content container, opened on the first
  append, one ``audioInput`` per append (PCM16 base64 passes through
  untouched; G.711 is decoded and declared at 8 kHz).
* Nova's output becomes the GA response sequence with rtgate-minted ids. The
  assistant transcript comes from the FINAL text stream only (what was
  actually spoken; SPECULATIVE text is a preview and would duplicate it).
  Barge-in (``{"interrupted": true}`` text or an INTERRUPTED stop) becomes
  ``input_audio_buffer.speech_started`` plus a cancelled ``response.done``,
  and the rest of the interrupted turn is dropped. Tool use becomes a
  function call item, and usage from ``usageEvent`` deltas lands in
  ``response.done`` (and :attr:`Outbox.usage`).
* When the client leaves: ``contentEnd`` (audio), ``promptEnd``,
  ``sessionEnd``; the link then sends the empty signed frame and END_STREAM.
"""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import attrs
import orjson

from rtgate.protocol.events import sniff_type
from rtgate.translate.audio import (
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from rtgate.translate.base import (
    Binary,
    CloseClient,
    Frame,
    Outbox,
    Translator,
    error_event,
    flatten_usage,
    new_id,
)

# Nova Sonic v1 voices (protocols.md 7.3); other ids pass through for newer models.
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
USAGE_GRACE: Final = 0.3
"""Seconds ``response.done`` waits after the end of a turn for the ``usageEvent`` that
Nova sends right after it, so the usage lands in the response it belongs to."""

_PCM_24K: Final = {"type": "audio/pcm", "rate": 24000}
_SAMPLE_RATES: Final = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
_EAGERNESS: Final = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH", "auto": "MEDIUM"}


# -- session configuration ------------------------------------------------------------


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
        value = {"pcm16": _PCM_24K, "g711_ulaw": {"type": "audio/pcmu"}}.get(
            value, {"type": "audio/pcma"} if value == "g711_alaw" else None
        )
    if not isinstance(value, Mapping):
        return None
    kind = value.get("type")
    if kind == "audio/pcm":
        rate = value.get("rate", 24000)
        return dict(_PCM_24K) if rate == 24000 else None
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
    input_format: dict[str, Any] = attrs.field(factory=lambda: dict(_PCM_24K))
    output_format: dict[str, Any] = attrs.field(factory=lambda: dict(_PCM_24K))
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
            if "format" in audio_in:
                fmt = audio_format(audio_in["format"])
                if fmt is None:
                    problems.append(f"audio.input.format {audio_in['format']!r}")
                else:
                    config.input_format = fmt
            if "turn_detection" in audio_in:
                td = audio_in["turn_detection"]
                config.turn_detection = dict(td) if isinstance(td, Mapping) else None
            if "transcription" in audio_in:
                tr = audio_in["transcription"]
                config.transcription = dict(tr) if isinstance(tr, Mapping) else None
        audio_out = audio.get("output")
        if isinstance(audio_out, Mapping):
            if "format" in audio_out:
                fmt = audio_format(audio_out["format"])
                if fmt is None:
                    problems.append(f"audio.output.format {audio_out['format']!r}")
                else:
                    config.output_format = fmt
            if isinstance(audio_out.get("voice"), str):
                config.voice = audio_out["voice"]
    tools = session.get("tools")
    if isinstance(tools, list):
        kept = [
            t for t in tools if isinstance(t, Mapping) and t.get("type", "function") == "function"
        ]
        if len(kept) != len(tools):
            problems.append("tools other than functions (Nova takes function tools only)")
        config.tools = [dict(t) for t in kept]
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
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": config.model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "tools": copy.deepcopy(config.tools),
        "tool_choice": config.tool_choice,
        "max_output_tokens": config.max_output_tokens,
        "tracing": None,
        "prompt": None,
        "truncation": "auto",
        "expires_at": 0,
        "include": None,
        "audio": {
            "input": {
                "format": dict(config.input_format),
                "transcription": copy.deepcopy(config.transcription),
                "turn_detection": copy.deepcopy(config.turn_detection),
                "noise_reduction": None,
            },
            "output": {"format": dict(config.output_format), "voice": config.voice, "speed": 1.0},
        },
    }


# -- Nova input events ----------------------------------------------------------------


def _event(name: str, body: dict[str, Any]) -> dict[str, object]:
    return {"event": {name: body}}


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
            "sampleRateHertz": _SAMPLE_RATES[config.output_format["type"]],
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
    events = [_event("sessionStart", session_start), _event("promptStart", prompt_start)]
    if config.instructions:
        events += text_content(prompt, system_content, "SYSTEM", config.instructions)
    return events


def _tool_spec(tool: Mapping[str, Any]) -> dict[str, Any]:
    parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    spec: dict[str, Any] = {
        "name": str(tool.get("name", "")),
        "description": str(tool.get("description", "")),
        # Nova wants the JSON schema as a string (protocols.md 7.3).
        "inputSchema": {"json": orjson.dumps(parameters).decode()},
    }
    return {"toolSpec": spec}


def text_content(
    prompt: str, content: str, role: str, text: str, *, interactive: bool = False
) -> list[dict[str, object]]:
    return [
        _event(
            "contentStart",
            {
                "promptName": prompt,
                "contentName": content,
                "type": "TEXT",
                "interactive": interactive,
                "role": role,
                "textInputConfiguration": {"mediaType": "text/plain"},
            },
        ),
        _event("textInput", {"promptName": prompt, "contentName": content, "content": text}),
        _event("contentEnd", {"promptName": prompt, "contentName": content}),
    ]


def tool_result_content(
    prompt: str, content: str, tool_use_id: str, result: str
) -> list[dict[str, object]]:
    return [
        _event(
            "contentStart",
            {
                "promptName": prompt,
                "contentName": content,
                "interactive": False,
                "type": "TOOL",
                "role": "TOOL",
                "toolResultInputConfiguration": {
                    "toolUseId": tool_use_id,
                    "type": "TEXT",
                    "textInputConfiguration": {"mediaType": "text/plain"},
                },
            },
        ),
        _event("toolResult", {"promptName": prompt, "contentName": content, "content": result}),
        _event("contentEnd", {"promptName": prompt, "contentName": content}),
    ]


def audio_content_start(prompt: str, content: str, rate: int) -> dict[str, object]:
    return _event(
        "contentStart",
        {
            "promptName": prompt,
            "contentName": content,
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


_APPEND_KEYS: Final = (b'"audio":"', b'"audio": "')


def _append_audio(frame: bytes) -> bytes | None:
    """The base64 ``audio`` of an append event, sliced out without decoding the JSON."""
    for key in _APPEND_KEYS:
        start = frame.find(key)
        if start >= 0:
            start += len(key)
            end = frame.find(b'"', start)
            if end >= 0 and frame.find(b"\\", start, end) < 0:
                return frame[start:end]
    return None


# -- the output side: one response at a time ----------------------------------------------


@attrs.define
class _Content:
    """A Nova output content block, by ``contentId``."""

    kind: str
    """TEXT, AUDIO or TOOL."""
    role: str
    stage: str
    """FINAL or SPECULATIVE (FINAL when Nova does not say)."""
    text: list[str] = attrs.field(factory=list)
    tool: dict[str, Any] | None = None
    user_item: str | None = None


@attrs.define
class _Response:
    id: str
    items: list[dict[str, Any]] = attrs.field(factory=list)
    message_id: str | None = None
    part_kind: str | None = None
    """``audio`` or ``text``: the message's one content part, once it exists."""
    transcript: list[str] = attrs.field(factory=list)


def _usage_block(acc: Mapping[str, int]) -> dict[str, Any]:
    input_tokens = acc.get("in_text", 0) + acc.get("in_audio", 0)
    output_tokens = acc.get("out_text", 0) + acc.get("out_audio", 0)
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": acc.get("in_text", 0),
            "audio_tokens": acc.get("in_audio", 0),
            "cached_tokens": 0,
        },
        "output_token_details": {
            "text_tokens": acc.get("out_text", 0),
            "audio_tokens": acc.get("out_audio", 0),
        },
    }


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


class NovaTranslator(Translator):
    """One Nova Sonic session (see module docstring)."""

    def __init__(self, model: str, defaults: NovaDefaults | None = None) -> None:
        self.defaults = defaults or NovaDefaults()
        self.config = SessionConfig(model=model, voice=self.defaults.voice)
        self.session_id = new_id("sess")
        self.prompt = str(uuid.uuid4())
        self.started = False
        self.closed_upstream = False
        self._audio_content: str | None = None
        self._audio_prefix = b""
        self._input_rate = 24000
        self._input_ms = 0.0
        self._turn_start_ms = 0.0
        self._contents: dict[str, _Content] = {}
        self._response: _Response | None = None
        self._suppress = False
        """Drop assistant output until the interrupted or cancelled turn is over."""
        self._pending_user_item: str | None = None
        """The id a speech_started / committed already announced for the next user item."""
        self._last_item: str | None = None
        self._usage: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._done_pending: dict[str, Any] | None = None
        """A finished response whose ``response.done`` waits for its usage."""
        self._now = 0.0

    # -- lifecycle hooks --------------------------------------------------------

    def start(self, out: Outbox, now: float) -> None:
        out.client_json(
            {
                "type": "session.created",
                "event_id": new_id("event"),
                "session": session_object(self.config, self.session_id),
            }
        )
        self.deadline = now + self.defaults.setup_timeout

    def on_timer(self, out: Outbox, now: float) -> None:
        self.deadline = None
        if not self.started:
            self._open_stream(out)
        self._flush_done(out)

    def on_client_closed(self, out: Outbox, now: float) -> None:
        self._flush_done(out)
        if not self.started or self.closed_upstream:
            return
        self.closed_upstream = True
        if self._audio_content is not None:
            out.upstream_json(
                _event(
                    "contentEnd", {"promptName": self.prompt, "contentName": self._audio_content}
                )
            )
            self._audio_content = None
        out.upstream_json(_event("promptEnd", {"promptName": self.prompt}))
        out.upstream_json(_event("sessionEnd", {}))

    def on_upstream_closed(
        self, code: int, reason: str, out: Outbox, now: float, *, error_type: str | None = None
    ) -> None:
        self._flush_done(out)
        if error_type is None and code in (1000, 1001):
            self._finish_response(out, "completed")
            out.close = CloseClient(1000, reason)
            return
        kind = "invalid_request_error" if code == 1008 else "server_error"
        message = reason or f"Bedrock closed the stream ({code})"
        self._finish_response(out, "failed", error={"type": kind, "code": error_type})
        out.client_json(
            error_event(message, error_type=kind, code=error_type or f"upstream_{code}")
        )
        # 1008 (validation), 1013 (throttled, try again later) and 1011 are meaningful to clients.
        client_code = code if code in (1008, 1011, 1013) else 1011
        out.close = CloseClient(client_code, message)

    # -- client -> Nova ---------------------------------------------------------

    def on_client(self, frame: Frame, out: Outbox, now: float) -> None:
        if isinstance(frame, Binary):
            out.client_json(error_event("binary messages are not part of the Realtime protocol"))
            return
        kind = sniff_type(frame)
        if kind == "input_audio_buffer.append":
            audio = _append_audio(frame)
            if audio is not None:
                self._append(audio, out)
                return
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError:
            out.client_json(error_event("the message is not valid JSON", code="invalid_json"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            out.client_json(error_event("the event has no type", code="invalid_event"))
            return
        self._dispatch_client(event, out)

    def _dispatch_client(self, event: dict[str, Any], out: Outbox) -> None:
        kind = event["type"]
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if kind == "session.update":
            self._session_update(event, out, event_id)
            return
        if not self.started:
            self._open_stream(out)
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if isinstance(audio, str):
                self._append(audio.encode(), out)
            else:
                out.client_json(
                    error_event("missing audio", code="invalid_value", event_id=event_id)
                )
        elif kind == "input_audio_buffer.commit":
            # Nova ends turns itself; acknowledge so manual-turn clients carry on.
            item = self._pending_user_item = self._pending_user_item or new_id("item")
            self._client_event(
                out, "input_audio_buffer.committed", previous_item_id=self._last_item, item_id=item
            )
        elif kind == "input_audio_buffer.clear":
            self._client_event(out, "input_audio_buffer.cleared")
        elif kind == "conversation.item.create":
            self._item_create(event, out, event_id)
        elif kind == "response.create":
            pass  # Nova answers on its own once it hears the end of a turn.
        elif kind == "response.cancel":
            if self._response is not None:
                self._finish_response(out, "cancelled", reason="client_cancelled")
                self._suppress = True
        elif kind == "conversation.item.truncate":
            self._client_event(
                out,
                "conversation.item.truncated",
                item_id=event.get("item_id"),
                content_index=event.get("content_index", 0),
                audio_end_ms=event.get("audio_end_ms", 0),
            )
        elif kind == "output_audio_buffer.clear":
            pass  # WebRTC-only; a WebSocket client owns its playback buffer.
        else:
            out.client_json(
                error_event(
                    f"{kind} is not supported with Amazon Nova Sonic",
                    code="unsupported_event",
                    event_id=event_id,
                )
            )

    def _session_update(self, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
        session = event.get("session")
        if not isinstance(session, Mapping):
            out.client_json(error_event("session.update needs a session", event_id=event_id))
            return
        if not self.started:
            problems = merge_update(self.config, session)
            self._report(problems, out, event_id)
            self._open_stream(out)
        else:
            trial = copy.deepcopy(self.config)
            problems = merge_update(trial, session)
            if trial.nova_fields() != self.config.nova_fields():
                problems.append(
                    "changes to instructions, voice, formats, tools or sampling once audio or text "
                    "has started (Nova Sonic takes them once per stream)"
                )
                # Keep what Nova does not depend on (echoed settings like transcription).
                self.config.transcription = trial.transcription
            else:
                self.config = trial
            self._report(problems, out, event_id)
        out.client_json(
            {
                "type": "session.updated",
                "event_id": new_id("event"),
                "session": session_object(self.config, self.session_id),
            }
        )

    def _report(self, problems: list[str], out: Outbox, event_id: str | None) -> None:
        if problems:
            out.client_json(
                error_event(
                    "not applied with Amazon Nova Sonic: " + "; ".join(problems),
                    code="unsupported_session_config",
                    event_id=event_id,
                )
            )

    def _open_stream(self, out: Outbox) -> None:
        self.started = True
        self.deadline = None
        for message in opening_events(self.config, self.defaults, self.prompt, str(uuid.uuid4())):
            out.upstream_json(message)
        fmt = self.config.input_format["type"]
        self._input_rate = _SAMPLE_RATES[fmt]

    def _append(self, audio_b64: bytes, out: Outbox) -> None:
        if not self.started:
            self._open_stream(out)
        if self.closed_upstream:
            return
        if self._audio_content is None:
            content = self._audio_content = str(uuid.uuid4())
            out.upstream_json(audio_content_start(self.prompt, content, self._input_rate))
            self._audio_prefix = (
                b'{"event":{"audioInput":{"promptName":"'
                + self.prompt.encode()
                + b'","contentName":"'
                + content.encode()
                + b'","content":"'
            )
        fmt = self.config.input_format["type"]
        if fmt == "audio/pcm":
            pcm_bytes = len(audio_b64) * 3 // 4 - audio_b64[-2:].count(b"=")
        else:
            try:
                raw = base64.b64decode(audio_b64, validate=True)
            except ValueError:
                out.client_json(error_event("audio is not valid base64", code="invalid_value"))
                return
            pcm = ulaw_to_pcm16(raw) if fmt == "audio/pcmu" else alaw_to_pcm16(raw)
            pcm_bytes = len(pcm)
            audio_b64 = base64.b64encode(pcm)
        self._input_ms += pcm_bytes / (self._input_rate * 2) * 1000
        out.to_upstream.append(self._audio_prefix + audio_b64 + b'"}}}')

    def _item_create(self, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
        item = event.get("item")
        if not isinstance(item, Mapping):
            out.client_json(
                error_event("conversation.item.create needs an item", event_id=event_id)
            )
            return
        item_type = item.get("type", "message")
        item_id = item.get("id") if isinstance(item.get("id"), str) else new_id("item")
        if item_type == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                out.client_json(
                    error_event("function_call_output needs call_id and output", event_id=event_id)
                )
                return
            for message in tool_result_content(self.prompt, str(uuid.uuid4()), call_id, output):
                out.upstream_json(message)
            echoed = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call_output",
                "call_id": call_id,
                "output": output,
                "status": "completed",
            }
        elif item_type == "message":
            role = item.get("role", "user")
            raw_parts = item.get("content")
            parts: list[Any] = raw_parts if isinstance(raw_parts, list) else []
            texts = [
                p["text"]
                for p in parts
                if isinstance(p, Mapping)
                and isinstance(p.get("text"), str)
                and p.get("type") in ("input_text", "output_text", "text")
            ]
            if role not in ("user", "assistant", "system") or not texts or len(texts) != len(parts):
                out.client_json(
                    error_event(
                        "Amazon Nova Sonic takes text message items only (audio goes through "
                        "input_audio_buffer.append)",
                        code="unsupported_item",
                        event_id=event_id,
                    )
                )
                return
            text = "\n".join(texts)
            if self._audio_content is None:
                # History: allowed once, before audio streaming begins (protocols.md 7.3).
                for message in text_content(self.prompt, str(uuid.uuid4()), role.upper(), text):
                    out.upstream_json(message)
            elif "nova-2" in self.config.model and role == "user":
                # Nova 2 cross-modal input: typed text during a live audio session.
                for message in text_content(
                    self.prompt, str(uuid.uuid4()), "USER", text, interactive=True
                ):
                    out.upstream_json(message)
            else:
                out.client_json(
                    error_event(
                        "this Nova Sonic model takes text items only before audio starts",
                        code="unsupported_item",
                        event_id=event_id,
                    )
                )
                return
            echoed = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": role,
                "status": "completed",
                "content": copy.deepcopy(parts),
            }
        else:
            out.client_json(
                error_event(
                    f"{item_type} items are not supported with Amazon Nova Sonic",
                    code="unsupported_item",
                    event_id=event_id,
                )
            )
            return
        self._client_event(
            out, "conversation.item.added", previous_item_id=self._last_item, item=echoed
        )
        self._client_event(
            out, "conversation.item.done", previous_item_id=self._last_item, item=echoed
        )
        self._last_item = item_id

    # -- Nova -> client ---------------------------------------------------------

    def on_upstream(self, frame: Frame, out: Outbox, now: float) -> None:
        raw = frame.data if isinstance(frame, Binary) else frame
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        event = message.get("event") if isinstance(message, dict) else None
        if not isinstance(event, dict) or len(event) != 1:
            return
        ((name, body),) = event.items()
        if not isinstance(body, dict):
            return
        self._now = now
        if name != "usageEvent":
            self._flush_done(out)
        handler = self._UPSTREAM.get(name)
        if handler is not None:
            handler(self, body, out)
        if name == "usageEvent":
            self._flush_done(out)

    def _on_content_start(self, body: dict[str, Any], out: Outbox) -> None:
        content_id = str(body.get("contentId", ""))
        stage = "FINAL"
        fields = body.get("additionalModelFields")
        if isinstance(fields, str) and "SPECULATIVE" in fields:
            stage = "SPECULATIVE"
        content = _Content(str(body.get("type", "")), str(body.get("role", "")), stage)
        self._contents[content_id] = content
        if content.role == "USER" and content.kind == "TEXT":
            # A new user turn: whatever the assistant was doing is over.
            if self._response is not None:
                self._finish_response(out, "completed")
            self._suppress = False
            content.user_item = self._begin_user_item(out)

    def _begin_user_item(self, out: Outbox) -> str:
        announced = self._pending_user_item
        item_id = announced or new_id("item")
        self._pending_user_item = None
        if announced is None:
            self._client_event(
                out,
                "input_audio_buffer.speech_started",
                audio_start_ms=int(self._turn_start_ms),
                item_id=item_id,
            )
        self._client_event(
            out,
            "input_audio_buffer.speech_stopped",
            audio_end_ms=int(self._input_ms),
            item_id=item_id,
        )
        if announced is None:
            self._client_event(
                out,
                "input_audio_buffer.committed",
                previous_item_id=self._last_item,
                item_id=item_id,
            )
        self._turn_start_ms = self._input_ms
        self._client_event(
            out,
            "conversation.item.added",
            previous_item_id=self._last_item,
            item=self._user_item(item_id, None, "in_progress"),
        )
        self._last_item = item_id
        return item_id

    @staticmethod
    def _user_item(item_id: str, transcript: str | None, status: str) -> dict[str, Any]:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": status,
            "content": [{"type": "input_audio", "transcript": transcript}],
        }

    def _on_text(self, body: dict[str, Any], out: Outbox) -> None:
        content = self._contents.get(str(body.get("contentId", "")))
        text = body.get("content")
        if content is None or not isinstance(text, str):
            return
        if content.user_item is not None:
            content.text.append(text)
            self._client_event(
                out,
                "conversation.item.input_audio_transcription.delta",
                item_id=content.user_item,
                content_index=0,
                delta=text,
            )
            return
        if _is_interrupt_marker(text):
            self._barge_in(out)
            return
        if content.role != "ASSISTANT" or self._suppress:
            return
        text_mode = self.config.output_modalities == ["text"]
        # One transcript stream: FINAL (what was spoken). In text mode with no audio
        # wanted, SPECULATIVE would arrive earlier but FINAL still carries every sentence.
        if content.stage != "FINAL":
            return
        response = self._ensure_message(out)
        response.transcript.append(text)
        delta_type = (
            "response.output_text.delta" if text_mode else "response.output_audio_transcript.delta"
        )
        self._client_event(
            out,
            delta_type,
            response_id=response.id,
            item_id=response.message_id,
            output_index=0,
            content_index=0,
            delta=text,
        )

    def _on_audio(self, body: dict[str, Any], out: Outbox) -> None:
        audio = body.get("content")
        if (
            self._suppress
            or not isinstance(audio, str)
            or self.config.output_modalities == ["text"]
        ):
            return
        fmt = self.config.output_format["type"]
        if fmt != "audio/pcm":
            pcm = base64.b64decode(audio)
            encoded = pcm16_to_ulaw(pcm) if fmt == "audio/pcmu" else pcm16_to_alaw(pcm)
            audio = base64.b64encode(encoded).decode()
        response = self._ensure_message(out)
        self._client_event(
            out,
            "response.output_audio.delta",
            response_id=response.id,
            item_id=response.message_id,
            output_index=0,
            content_index=0,
            delta=audio,
        )

    def _on_tool_use(self, body: dict[str, Any], out: Outbox) -> None:
        content = self._contents.get(str(body.get("contentId", "")))
        if content is None:
            content = self._contents[str(body.get("contentId", ""))] = _Content(
                "TOOL", "TOOL", "FINAL"
            )
        content.tool = {
            "name": str(body.get("toolName", "")),
            "call_id": str(body.get("toolUseId", "")),
            "arguments": body.get("content") if isinstance(body.get("content"), str) else "{}",
        }

    def _on_content_end(self, body: dict[str, Any], out: Outbox) -> None:
        content = self._contents.pop(str(body.get("contentId", "")), None)
        stop = body.get("stopReason")
        if content is None:
            return
        if content.user_item is not None:
            transcript = "".join(content.text)
            self._client_event(
                out,
                "conversation.item.input_audio_transcription.completed",
                item_id=content.user_item,
                content_index=0,
                transcript=transcript,
            )
            self._client_event(
                out,
                "conversation.item.done",
                previous_item_id=None,
                item=self._user_item(content.user_item, transcript, "completed"),
            )
            return
        if stop == "INTERRUPTED":
            self._barge_in(out)
        elif content.tool is not None:
            if not self._suppress:
                self._function_call(content.tool, out)
                self._finish_response(out, "completed", defer=True)
        elif content.kind == "TEXT" and content.stage == "FINAL" and stop == "END_TURN":
            self._finish_response(out, "completed", defer=True)

    def _on_usage(self, body: dict[str, Any], out: Outbox) -> None:
        details = body.get("details")
        delta = details.get("delta") if isinstance(details, dict) else None
        if isinstance(delta, dict):
            for side, prefix in (("input", "in"), ("output", "out")):
                part = delta.get(side)
                if isinstance(part, dict):
                    self._add_usage(f"{prefix}_audio", _int(part.get("speechTokens")))
                    self._add_usage(f"{prefix}_text", _int(part.get("textTokens")))
            return
        # No per-event delta: the cumulative totals, differenced.
        for key, total in (
            ("in_text", body.get("totalInputTokens")),
            ("out_text", body.get("totalOutputTokens")),
        ):
            value = _int(total)
            self._add_usage(key, max(0, value - self._totals.get(key, 0)))
            self._totals[key] = value

    def _add_usage(self, key: str, value: int) -> None:
        if value:
            self._usage[key] = self._usage.get(key, 0) + value

    def _on_completion_end(self, body: dict[str, Any], out: Outbox) -> None:
        if self._response is not None:
            self._finish_response(out, "completed")
        self._suppress = False

    _UPSTREAM: ClassVar[dict[str, Callable[[NovaTranslator, dict[str, Any], Outbox], None]]] = {
        "contentStart": _on_content_start,
        "textOutput": _on_text,
        "audioOutput": _on_audio,
        "toolUse": _on_tool_use,
        "contentEnd": _on_content_end,
        "usageEvent": _on_usage,
        "completionEnd": _on_completion_end,
    }

    # -- building the GA response -----------------------------------------------

    def _client_event(self, out: Outbox, kind: str, **fields: object) -> None:
        event: dict[str, object] = {"type": kind, "event_id": new_id("event")}
        event.update(fields)
        out.client_json(event)

    def _response_body(self, response: _Response, status: str) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": status,
            "status_details": None,
            "output": copy.deepcopy(response.items),
            "conversation_id": "conv_" + self.session_id.removeprefix("sess_"),
            "output_modalities": list(self.config.output_modalities),
            "max_output_tokens": self.config.max_output_tokens,
            "audio": {
                "output": {"format": dict(self.config.output_format), "voice": self.config.voice}
            },
            "usage": None,
            "metadata": None,
        }

    def _ensure_response(self, out: Outbox) -> _Response:
        if self._response is None:
            self._response = _Response(new_id("resp"))
            self._client_event(
                out, "response.created", response=self._response_body(self._response, "in_progress")
            )
        return self._response

    def _ensure_message(self, out: Outbox) -> _Response:
        response = self._ensure_response(out)
        if response.message_id is None:
            item_id = response.message_id = new_id("item")
            item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            response.items.append(item)
            output_index = len(response.items) - 1
            self._client_event(
                out,
                "response.output_item.added",
                response_id=response.id,
                output_index=output_index,
                item=item,
            )
            self._client_event(
                out, "conversation.item.added", previous_item_id=self._last_item, item=item
            )
            self._last_item = item_id
            kind = response.part_kind = (
                "text" if self.config.output_modalities == ["text"] else "audio"
            )
            part: dict[str, Any] = (
                {"type": kind, "transcript": ""}
                if kind == "audio"
                else {"type": "text", "text": ""}
            )
            self._client_event(
                out,
                "response.content_part.added",
                response_id=response.id,
                item_id=item_id,
                output_index=output_index,
                content_index=0,
                part=part,
            )
        return response

    def _function_call(self, tool: dict[str, Any], out: Outbox) -> None:
        response = self._ensure_response(out)
        item_id = new_id("item")
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": tool["call_id"],
            "name": tool["name"],
            "arguments": "",
        }
        response.items.append(item)
        index = len(response.items) - 1
        common = {"response_id": response.id, "output_index": index}
        self._client_event(out, "response.output_item.added", item=dict(item), **common)
        self._client_event(
            out, "conversation.item.added", previous_item_id=self._last_item, item=dict(item)
        )
        self._client_event(
            out,
            "response.function_call_arguments.delta",
            item_id=item_id,
            call_id=tool["call_id"],
            delta=tool["arguments"],
            **common,
        )
        self._client_event(
            out,
            "response.function_call_arguments.done",
            item_id=item_id,
            call_id=tool["call_id"],
            name=tool["name"],
            arguments=tool["arguments"],
            **common,
        )
        item.update(status="completed", arguments=tool["arguments"])
        self._client_event(out, "response.output_item.done", item=dict(item), **common)
        self._client_event(
            out, "conversation.item.done", previous_item_id=self._last_item, item=dict(item)
        )
        self._last_item = item_id

    def _barge_in(self, out: Outbox) -> None:
        if self._response is None or self._suppress:
            return
        item_id = self._pending_user_item = new_id("item")
        self._client_event(
            out,
            "input_audio_buffer.speech_started",
            audio_start_ms=int(self._input_ms),
            item_id=item_id,
        )
        self._finish_response(out, "cancelled", reason="turn_detected")
        self._suppress = True

    def _finish_response(
        self,
        out: Outbox,
        status: str,
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
        defer: bool = False,
    ) -> None:
        """Close the open response's items and send ``response.done`` (or, with ``defer``,
        hold it up to :data:`USAGE_GRACE` for the usage that follows a turn)."""
        self._flush_done(out)
        response = self._response
        if response is None:
            return
        self._response = None
        item_status = "completed" if status == "completed" else "incomplete"
        if response.message_id is not None:
            message = next(i for i in response.items if i["id"] == response.message_id)
            index = response.items.index(message)
            transcript = "".join(response.transcript)
            common = {
                "response_id": response.id,
                "item_id": response.message_id,
                "output_index": index,
                "content_index": 0,
            }
            if response.part_kind == "audio":
                part: dict[str, Any] = {"type": "audio", "transcript": transcript}
                self._client_event(out, "response.output_audio.done", **common)
                self._client_event(
                    out, "response.output_audio_transcript.done", transcript=transcript, **common
                )
            else:
                part = {"type": "text", "text": transcript}
                self._client_event(out, "response.output_text.done", text=transcript, **common)
            self._client_event(out, "response.content_part.done", part=part, **common)
            message.update(status=item_status, content=[part])
            self._client_event(
                out,
                "response.output_item.done",
                response_id=response.id,
                output_index=index,
                item=dict(message),
            )
            self._client_event(
                out, "conversation.item.done", previous_item_id=None, item=dict(message)
            )
        body = self._response_body(response, status)
        if status != "completed":
            details: dict[str, Any] = {"type": status}
            if reason is not None:
                details["reason"] = reason
            if error is not None:
                details["error"] = error
            body["status_details"] = details
        if defer:
            self._done_pending = body
            self.deadline = self._now + USAGE_GRACE
            return
        self._emit_done(out, body)

    def _flush_done(self, out: Outbox) -> None:
        body, self._done_pending = self._done_pending, None
        if body is not None:
            self.deadline = None
            self._emit_done(out, body)

    def _emit_done(self, out: Outbox, body: dict[str, Any]) -> None:
        usage = _usage_block(self._usage)
        self._usage = {}
        body["usage"] = usage
        self._client_event(out, "response.done", response=body)
        out.add_usage(flatten_usage(usage))
