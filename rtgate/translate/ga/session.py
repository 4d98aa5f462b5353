"""The GA ``session`` object every translated session shows in ``session.created`` / ``.updated``.

One shape for every provider: the fields of the SDK's
``RealtimeSessionCreateRequest`` plus the three OpenAI adds to the session it
reports (``object``, ``id``, ``expires_at``; :data:`REPORTED_ONLY`). Each
translator fills in what is in effect for its provider.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final

from rtgate.translate.ga.events import server_event

PCM24: Final[Mapping[str, object]] = {"type": "audio/pcm", "rate": 24000}
"""OpenAI's default audio format both ways: 16-bit PCM at 24 kHz."""

DEFAULT_TURN_DETECTION: Final[Mapping[str, object]] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
"""OpenAI's server VAD defaults, as a new GA session reports them."""

REPORTED_ONLY: Final = ("object", "id", "expires_at")
"""Keys OpenAI's reported session has that the SDK's request model does not declare."""


def session_object(
    *,
    model: str,
    voice: object,
    session_id: str | None = None,
    output_modalities: Iterable[str] = ("audio",),
    instructions: str = "",
    input_format: Mapping[str, object] = PCM24,
    output_format: Mapping[str, object] = PCM24,
    turn_detection: Mapping[str, object] | None = DEFAULT_TURN_DETECTION,
    transcription: Mapping[str, object] | None = None,
    noise_reduction: Mapping[str, object] | None = None,
    speed: float = 1.0,
    tools: Iterable[Mapping[str, Any]] = (),
    tool_choice: object = "auto",
    max_output_tokens: object = "inf",
) -> dict[str, Any]:
    """A GA session object (``id`` only when given); nested values are copies."""
    session: dict[str, Any] = {"type": "realtime", "object": "realtime.session"}
    if session_id is not None:
        session["id"] = session_id
    session.update(
        model=model,
        output_modalities=list(output_modalities),
        instructions=instructions,
        tools=copy.deepcopy([dict(t) for t in tools]),
        tool_choice=copy.deepcopy(tool_choice),
        max_output_tokens=max_output_tokens,
        tracing=None,
        truncation="auto",
        prompt=None,
        include=None,
        expires_at=0,
        audio={
            "input": {
                "format": dict(input_format),
                "transcription": _copy(transcription),
                "noise_reduction": _copy(noise_reduction),
                "turn_detection": _copy(turn_detection),
            },
            "output": {"format": dict(output_format), "voice": voice, "speed": speed},
        },
    )
    return session


def _copy(value: Mapping[str, object] | None) -> dict[str, object] | None:
    return copy.deepcopy(dict(value)) if value is not None else None


def session_event(kind: str, session: Mapping[str, Any]) -> dict[str, object]:
    """``session.created`` or ``session.updated`` carrying ``session``."""
    return server_event(kind, session=session)


def function_tools(tools: object) -> tuple[list[dict[str, Any]], list[str]]:
    """The function tools of a client's ``session.tools``, in the shape the session reports.

    A tool without ``type`` is a function (OpenAI's default); each kept tool carries
    ``type``, ``name`` and, when well typed, ``description`` and ``parameters``. Returns the
    kept tools and, for each dropped entry, why (``tools[i] ...``), for the translator's
    warning; a ``tools`` that is not a list keeps none.
    """
    if not isinstance(tools, list):
        return [], [] if tools is None else ["tools (not a list)"]
    kept: list[dict[str, Any]] = []
    dropped: list[str] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            dropped.append(f"tools[{index}] (not an object)")
            continue
        kind = tool.get("type", "function")
        if kind != "function":
            dropped.append(f"tools[{index}] (type {str(kind)[:40]!r} is not a function)")
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            dropped.append(f"tools[{index}] (a function needs a name)")
            continue
        shown: dict[str, Any] = {"type": "function", "name": name}
        if isinstance(tool.get("description"), str):
            shown["description"] = tool["description"]
        if isinstance(tool.get("parameters"), Mapping):
            shown["parameters"] = copy.deepcopy(dict(tool["parameters"]))
        kept.append(shown)
    return kept, dropped
