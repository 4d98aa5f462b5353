"""GA conversation items, their content, and the chain that orders them.

Item ``content`` entries are typed by role (``output_text`` / ``output_audio``
for the assistant, ``input_text`` / ``input_audio`` / ``input_image`` for the
user, ``input_text`` for the system); the streaming ``part`` of
``response.content_part.*`` is ``text`` or ``audio``. :class:`ItemChain` is
the conversation's order as the client sees it: every ``conversation.item.added``
and ``.done`` names the item before it in ``previous_item_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

from rtgate.translate.base import Outbox
from rtgate.translate.ga.events import emit, server_event

Modality = Literal["audio", "text"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]

TEXT_CONTENT: Final[Mapping[str, str]] = {
    "user": "input_text",
    "system": "input_text",
    "assistant": "output_text",
}
"""The content type of a text entry in a message of each role."""

MAX_OPEN_ITEMS: Final = 256
"""Items added but not yet done that the chain remembers (oldest forgotten first)."""


def stream_part(modality: Modality, text: str) -> dict[str, object]:
    """The ``part`` of ``response.content_part.added`` / ``.done``."""
    if modality == "audio":
        return {"type": "audio", "transcript": text}
    return {"type": "text", "text": text}


def assistant_content(modality: Modality, text: str) -> dict[str, object]:
    """An assistant item's content entry: ``output_audio`` (with transcript) or ``output_text``."""
    if modality == "audio":
        return {"type": "output_audio", "transcript": text}
    return {"type": "output_text", "text": text}


def message_item(item_id: str, role: str, status: ItemStatus, content: list[Any]) -> dict[str, Any]:
    """A GA ``message`` item."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": role,
        "content": content,
    }


def user_audio_item(item_id: str, status: ItemStatus, transcript: str | None) -> dict[str, Any]:
    """The user's spoken turn: one ``input_audio`` entry with its transcript (None until known)."""
    return message_item(
        item_id, "user", status, [{"type": "input_audio", "transcript": transcript}]
    )


def text_message(item_id: str, role: str, texts: list[str]) -> dict[str, Any]:
    """A completed text message of ``role``, each text an entry of the role's text type."""
    kind = TEXT_CONTENT.get(role, "input_text")
    return message_item(item_id, role, "completed", [{"type": kind, "text": t} for t in texts])


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: ItemStatus
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_call_output_item(item_id: str, call_id: str, output: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }


class ItemChain:
    """The conversation's order: the last item, and what preceded each item still open."""

    __slots__ = ("_previous", "last")

    def __init__(self) -> None:
        self.last: str | None = None
        self._previous: dict[str, str | None] = {}

    def added(self, out: Outbox, item: Mapping[str, Any]) -> None:
        """``conversation.item.added``: ``item`` follows the last item and becomes the last."""
        item_id = str(item["id"])
        self._previous[item_id] = self.last
        while len(self._previous) > MAX_OPEN_ITEMS:
            del self._previous[next(iter(self._previous))]
        emit(out, "conversation.item.added", previous_item_id=self.last, item=item)
        self.last = item_id

    def done(self, out: Outbox, item: Mapping[str, Any]) -> None:
        """``conversation.item.done``, naming the same predecessor its ``added`` named."""
        previous = self._previous.pop(str(item["id"]), None)
        emit(out, "conversation.item.done", previous_item_id=previous, item=item)

    def added_and_done(self, out: Outbox, item: Mapping[str, Any]) -> None:
        """An item complete when it is added (a client's item, a committed turn)."""
        self.added(out, item)
        self.done(out, item)


def transcription_delta(out: Outbox, item_id: str, delta: str) -> None:
    emit(
        out,
        "conversation.item.input_audio_transcription.delta",
        item_id=item_id,
        content_index=0,
        delta=delta,
    )


def transcription_completed(out: Outbox, item_id: str, transcript: str, seconds: float) -> None:
    """The user's transcript, billed as OpenAI bills transcription: by audio duration."""
    emit(
        out,
        "conversation.item.input_audio_transcription.completed",
        item_id=item_id,
        content_index=0,
        transcript=transcript,
        usage={"type": "duration", "seconds": seconds},
    )


def _as_text(value: object) -> str:
    """A string field as given, anything else as its JSON (GA arguments and outputs are strings)."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def _echo_part(role: str, part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "input_audio":
        # OpenAI echoes an audio entry without its bytes (retrieve returns them).
        transcript = part.get("transcript")
        return {
            "type": "input_audio",
            "transcript": transcript if isinstance(transcript, str) else None,
        }
    if kind == "input_image":
        echoed: dict[str, Any] = {
            "type": "input_image",
            "image_url": _as_text(part.get("image_url")),
        }
        if part.get("detail") in ("auto", "low", "high"):
            echoed["detail"] = part["detail"]
        return echoed
    if kind == "output_audio":
        return {"type": "output_audio", "transcript": _as_text(part.get("transcript", ""))}
    return {"type": TEXT_CONTENT.get(role, "input_text"), "text": _as_text(part.get("text", ""))}


def client_item(item: Mapping[str, Any], item_id: str) -> dict[str, Any]:
    """The GA echo of an item a client created, already checked by the translator.

    Only GA's keys are kept; text entries take the type the role's messages use;
    ``arguments`` and ``output`` are strings.
    """
    kind = item.get("type", "message")
    if kind == "function_call":
        return function_call_item(
            item_id,
            _as_text(item.get("call_id")),
            _as_text(item.get("name")),
            _as_text(item.get("arguments", "")),
            "completed",
        )
    if kind == "function_call_output":
        return function_call_output_item(
            item_id, _as_text(item.get("call_id")), _as_text(item.get("output"))
        )
    role = str(item.get("role"))
    content = item.get("content")
    parts = [p for p in content if isinstance(p, Mapping)] if isinstance(content, list) else []
    return message_item(item_id, role, "completed", [_echo_part(role, p) for p in parts])


def truncated_ack(event: Mapping[str, Any]) -> dict[str, object] | None:
    """OpenAI's ``conversation.item.truncated`` for a well-formed truncate, else None."""
    item_id = event.get("item_id")
    content_index = event.get("content_index", 0)
    audio_end_ms = event.get("audio_end_ms", 0)
    if not isinstance(item_id, str) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for v in (content_index, audio_end_ms)
    ):
        return None
    return server_event(
        "conversation.item.truncated",
        item_id=item_id,
        content_index=content_index,
        audio_end_ms=audio_end_ms,
    )
