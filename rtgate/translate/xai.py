"""xAI Grok Voice Agent: normalise its GA-lookalike events for strict GA clients.

xAI speaks OpenAI Realtime GA event names but with quirks that make a strict
client (the openai SDK's pydantic types, pipecat) reject events
(https://docs.x.ai/docs/guides/voice/agent):

* ``ping`` keepalive server events, which GA does not have: dropped;
* streaming response events without ``output_index`` / ``content_index``:
  filled with 0 (xAI answers with one item and one content part);
* ``response.content_part.done`` without ``part``: back-filled from the matching
  ``.added`` plus the final text or transcript of the ``*.done`` events, or an
  empty part of the right type;
* ``usage: {}`` (or partial usage) on ``response.created``/``response.done``:
  a zero-filled GA usage object;
* ``role: "tool"`` on function call items: dropped (GA's ``function_call`` and
  ``function_call_output`` items have no role; message roles are user, assistant
  and system);
* a ``conversation.created`` greeting where GA starts with ``session.created``:
  a GA ``session.created`` is synthesised before it, and a real
  ``session.created`` arriving later is passed on as ``session.updated``.

Client -> xAI passes untouched. Events that already conform are passed as the
same ``bytes`` object; the high-volume deltas are checked with byte searches
and never decoded when they carry their indices.

``Outbox.usage`` is set on every ``response.done`` to
:func:`rtgate.translate.base.flatten_usage` of the (normalised) GA usage:
``input_tokens``, ``output_tokens``, ``total_tokens`` and dotted detail keys
such as ``input_token_details.audio_tokens`` and
``input_token_details.cached_tokens_details.text_tokens``.
"""

from __future__ import annotations

from typing import Final

import orjson

from rtgate.protocol.events import parse_event, sniff_type
from rtgate.translate.base import Outbox, Translator, flatten_usage, new_id
from rtgate.wire import Frame

Json = dict[str, object]

_OUTPUT_INDEX_KEY: Final = b'"output_index":'
_CONTENT_INDEX_KEY: Final = b'"content_index":'

# Deltas make up nearly every frame of a response. They are flat (no nested
# objects, and a string value is never followed by a colon), so a key found in
# the bytes is a top-level key: those that carry their indices skip decoding.
_FAST_DELTAS: Final[dict[str, tuple[bytes, ...]]] = {
    "response.output_audio.delta": (_OUTPUT_INDEX_KEY, _CONTENT_INDEX_KEY),
    "response.output_audio_transcript.delta": (_OUTPUT_INDEX_KEY, _CONTENT_INDEX_KEY),
    "response.output_text.delta": (_OUTPUT_INDEX_KEY, _CONTENT_INDEX_KEY),
    "response.function_call_arguments.delta": (_OUTPUT_INDEX_KEY,),
}
_NEEDS_OUTPUT_INDEX: Final = frozenset(
    {
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    }
)
_NEEDS_CONTENT_INDEX: Final = frozenset(
    kind
    for kind in _NEEDS_OUTPUT_INDEX
    if kind.startswith(("response.content_part.", "response.output_"))
    and not kind.startswith("response.output_item.")
)
_ITEM_EVENTS: Final = frozenset(
    {
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.created",
        "conversation.item.retrieved",
        "response.output_item.added",
        "response.output_item.done",
    }
)
_DECODED: Final = _NEEDS_OUTPUT_INDEX | _ITEM_EVENTS | {"response.created", "response.done"}

_ZERO_USAGE: Final[Json] = {
    "total_tokens": 0,
    "input_tokens": 0,
    "output_tokens": 0,
    "input_token_details": {
        "text_tokens": 0,
        "audio_tokens": 0,
        "image_tokens": 0,
        "cached_tokens": 0,
        "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 0, "audio_tokens": 0},
}

PartKey = tuple[object, object, object]


def full_usage(usage: Json) -> Json:
    """``usage`` with every GA usage field present; missing counts are 0.

    A missing ``total_tokens`` becomes input + output so the sum stays right.
    """
    filled = _fill(usage, _ZERO_USAGE)
    if "total_tokens" not in usage:
        inputs, outputs = filled["input_tokens"], filled["output_tokens"]
        if isinstance(inputs, int) and isinstance(outputs, int):
            filled["total_tokens"] = inputs + outputs
    return filled


def _fill(given: Json, defaults: Json) -> Json:
    filled = dict(given)
    for key, default in defaults.items():
        value = filled.get(key)
        if isinstance(default, dict):
            filled[key] = _fill(value, default) if isinstance(value, dict) else _fill({}, default)
        elif key not in filled or value is None:
            filled[key] = default
    return filled


def _has_key(frame: bytes, key: bytes) -> bool:
    return key in frame or key[:-1] + b" :" in frame


class XaiTranslator(Translator):
    """Per-session normaliser for ``xai/`` deployments (see module docstring)."""

    def __init__(self, *, model: str | None = None) -> None:
        self._model = model
        self._session_seen = False
        self._synthesised_session = False
        # Content parts announced by ``.added`` (and completed by ``*.done``
        # events) until their ``content_part.done``, keyed by
        # (response_id, item_id, content_index).
        self._parts: dict[PartKey, Json] = {}

    def on_upstream(self, frame: Frame, out: Outbox, now: float) -> None:
        if type(frame) is not bytes:
            out.to_client.append(frame)
            return
        kind = sniff_type(frame)
        required = _FAST_DELTAS.get(kind) if kind is not None else None
        if required is not None:
            if all(_has_key(frame, key) for key in required):
                out.to_client.append(frame)
                return
        elif kind == "ping":
            return  # xAI keepalive; GA clients do not know it
        elif kind == "conversation.created" and not self._session_seen:
            self._session_seen = self._synthesised_session = True
            out.client_json(self._synthetic_session_created())
        elif kind == "session.created":
            if self._synthesised_session:
                self._synthesised_session = False
                frame = self._as_session_updated(frame)
            self._session_seen = True
        if kind in _DECODED:
            frame = self._normalise(kind, frame, out)
        out.to_client.append(frame)

    def _synthetic_session_created(self) -> Json:
        session: Json = {
            "type": "realtime",
            "object": "realtime.session",
            "id": new_id("sess"),
            "output_modalities": ["audio"],
        }
        if self._model:
            session["model"] = self._model
        return {"type": "session.created", "event_id": new_id("event"), "session": session}

    @staticmethod
    def _as_session_updated(frame: bytes) -> bytes:
        event = parse_event(frame)
        if event is None:
            return frame
        event["type"] = "session.updated"
        return orjson.dumps(event)

    def _normalise(self, kind: str | None, frame: bytes, out: Outbox) -> bytes:
        event = parse_event(frame)
        if event is None:
            return frame
        changed = False
        if kind in _NEEDS_OUTPUT_INDEX and "output_index" not in event:
            event["output_index"] = 0
            changed = True
        if kind in _NEEDS_CONTENT_INDEX and "content_index" not in event:
            event["content_index"] = 0
            changed = True
        if kind in _ITEM_EVENTS:
            changed = _fix_role(event.get("item")) or changed
        elif kind == "response.created" or kind == "response.done":
            changed = self._fix_response(kind, event, out) or changed
        elif kind is not None:
            changed = self._track_part(kind, event) or changed
        return orjson.dumps(event) if changed else frame

    def _track_part(self, kind: str, event: Json) -> bool:
        """Remember parts and their final text; back-fill ``part`` on ``.done``."""
        key: PartKey = (
            _hashable(event.get("response_id")),
            _hashable(event.get("item_id")),
            _hashable(event.get("content_index")),
        )
        if kind == "response.content_part.added":
            part = event.get("part")
            if isinstance(part, dict):
                self._parts[key] = dict(part)
                return False
            event["part"] = self._parts.setdefault(key, {"type": "audio", "transcript": ""})
            return True
        if kind == "response.output_text.done":
            self._complete_part(key, "text", "text", event.get("text"))
        elif kind == "response.output_audio_transcript.done":
            self._complete_part(key, "audio", "transcript", event.get("transcript"))
        elif kind == "response.content_part.done":
            known = self._parts.pop(key, None)
            if not isinstance(event.get("part"), dict):
                event["part"] = known if known is not None else {"type": "audio", "transcript": ""}
                return True
        return False

    def _complete_part(self, key: PartKey, part_type: str, field: str, value: object) -> None:
        part = self._parts.setdefault(key, {"type": part_type})
        if isinstance(value, str):
            part[field] = value

    def _fix_response(self, kind: str, event: Json, out: Outbox) -> bool:
        response = event.get("response")
        if not isinstance(response, dict):
            if kind == "response.done":
                out.add_usage({})
            return False
        changed = False
        output = response.get("output")
        if isinstance(output, list):
            for item in output:
                changed = _fix_role(item) or changed
        usage = response.get("usage")
        if isinstance(usage, dict) or (kind == "response.done" and usage is None):
            filled = full_usage(usage if isinstance(usage, dict) else {})
            if filled != usage:
                response["usage"] = filled
                changed = True
            if kind == "response.done":
                out.add_usage(flatten_usage(filled))
        if kind == "response.done":
            response_id = _hashable(response.get("id"))
            for key in [k for k in self._parts if k[0] == response_id]:
                del self._parts[key]
        return changed


def _hashable(value: object) -> object:
    """An id as a dict key: ids are strings or ints, anything else (malformed) as JSON text."""
    if value is None or isinstance(value, str | int | float):
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _fix_role(item: object) -> bool:
    # xAI marks function call items with role "tool"; GA's call items have no role at all.
    if isinstance(item, dict) and item.get("role") == "tool":
        del item["role"]
        return True
    return False
