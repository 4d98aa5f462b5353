"""The GA response sequence a Nova Sonic session shows the client, one response at a time.

Owns how rtgate-minted responses and items are announced and closed:
``response.created``, the assistant message with its one content part
(``audio`` or ``text``), function call items, barge-in (``speech_started``
plus a cancelled response), and ``response.done`` with the usage Nova
reported, which may wait up to :data:`USAGE_GRACE` for the ``usageEvent``
that follows a turn. Functions take the :class:`~rtgate.translate.nova.translator.NovaTranslator`
whose state they advance; the Nova events that drive them are read in
:mod:`~rtgate.translate.nova.output`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from rtgate.translate.base import Outbox, flatten_usage, new_id

if TYPE_CHECKING:
    from rtgate.translate.nova.translator import NovaTranslator

USAGE_GRACE: Final = 0.3
"""Seconds ``response.done`` waits after the end of a turn for the ``usageEvent`` that
Nova sends right after it, so the usage lands in the response it belongs to."""


@attrs.define
class Response:
    """The one open GA response."""

    id: str
    items: list[dict[str, Any]] = attrs.field(factory=list)
    message_id: str | None = None
    part_kind: str | None = None
    """``audio`` or ``text``: the message's one content part, once it exists."""
    transcript: list[str] = attrs.field(factory=list)


def client_event(out: Outbox, kind: str, **fields: object) -> None:
    """Queue a GA server event with a fresh ``event_id``."""
    event: dict[str, object] = {"type": kind, "event_id": new_id("event")}
    event.update(fields)
    out.client_json(event)


def message_item(item_id: str, role: str, status: str, content: object) -> dict[str, Any]:
    """A GA ``message`` item."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": role,
        "status": status,
        "content": content,
    }


def announce_item(t: NovaTranslator, out: Outbox, kind: str, item: dict[str, Any]) -> None:
    """``conversation.item.added`` / ``.done`` for an item following the last one."""
    client_event(out, kind, previous_item_id=t.last_item, item=item)


def usage_block(acc: Mapping[str, int]) -> dict[str, Any]:
    """GA ``usage`` from the per-turn sums (``in_text``, ``in_audio``, ``out_text``, ``out_audio``)."""
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


def _response_body(t: NovaTranslator, response: Response, status: str) -> dict[str, Any]:
    return {
        "object": "realtime.response",
        "id": response.id,
        "status": status,
        "status_details": None,
        "output": copy.deepcopy(response.items),
        "conversation_id": "conv_" + t.session_id.removeprefix("sess_"),
        "output_modalities": list(t.config.output_modalities),
        "max_output_tokens": t.config.max_output_tokens,
        "audio": {"output": {"format": dict(t.config.output_format), "voice": t.config.voice}},
        "usage": None,
        "metadata": None,
    }


def ensure_response(t: NovaTranslator, out: Outbox) -> Response:
    """The open response, announcing a new one if there is none."""
    if t.response is None:
        t.response = Response(new_id("resp"))
        client_event(out, "response.created", response=_response_body(t, t.response, "in_progress"))
    return t.response


def ensure_message(t: NovaTranslator, out: Outbox) -> Response:
    """The open response, with its assistant message item and content part announced."""
    response = ensure_response(t, out)
    if response.message_id is None:
        item_id = response.message_id = new_id("item")
        item = message_item(item_id, "assistant", "in_progress", [])
        response.items.append(item)
        output_index = len(response.items) - 1
        client_event(
            out,
            "response.output_item.added",
            response_id=response.id,
            output_index=output_index,
            item=item,
        )
        announce_item(t, out, "conversation.item.added", item)
        t.last_item = item_id
        kind = response.part_kind = "text" if t.config.output_modalities == ["text"] else "audio"
        part: dict[str, Any] = (
            {"type": kind, "transcript": ""} if kind == "audio" else {"type": "text", "text": ""}
        )
        client_event(
            out,
            "response.content_part.added",
            response_id=response.id,
            item_id=item_id,
            output_index=output_index,
            content_index=0,
            part=part,
        )
    return response


def function_call(t: NovaTranslator, tool: dict[str, Any], out: Outbox) -> None:
    """A whole function call item (Nova sends a tool use complete, never in pieces)."""
    response = ensure_response(t, out)
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
    client_event(out, "response.output_item.added", item=dict(item), **common)
    announce_item(t, out, "conversation.item.added", dict(item))
    client_event(
        out,
        "response.function_call_arguments.delta",
        item_id=item_id,
        call_id=tool["call_id"],
        delta=tool["arguments"],
        **common,
    )
    client_event(
        out,
        "response.function_call_arguments.done",
        item_id=item_id,
        call_id=tool["call_id"],
        name=tool["name"],
        arguments=tool["arguments"],
        **common,
    )
    item.update(status="completed", arguments=tool["arguments"])
    client_event(out, "response.output_item.done", item=dict(item), **common)
    announce_item(t, out, "conversation.item.done", dict(item))
    t.last_item = item_id


def barge_in(t: NovaTranslator, out: Outbox) -> None:
    """The user spoke over the answer: ``speech_started``, the response cancelled, the rest dropped."""
    if t.response is None or t.suppress:
        return
    item_id = t.pending_user_item = new_id("item")
    client_event(
        out,
        "input_audio_buffer.speech_started",
        audio_start_ms=int(t.input_ms),
        item_id=item_id,
    )
    finish_response(t, out, "cancelled", reason="turn_detected")
    t.suppress = True


def _close_message(out: Outbox, response: Response, item_status: str) -> None:
    """The ``.done`` events of the assistant message, its part and the item."""
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
        client_event(out, "response.output_audio.done", **common)
        client_event(out, "response.output_audio_transcript.done", transcript=transcript, **common)
    else:
        part = {"type": "text", "text": transcript}
        client_event(out, "response.output_text.done", text=transcript, **common)
    client_event(out, "response.content_part.done", part=part, **common)
    message.update(status=item_status, content=[part])
    client_event(
        out,
        "response.output_item.done",
        response_id=response.id,
        output_index=index,
        item=dict(message),
    )
    client_event(out, "conversation.item.done", previous_item_id=None, item=dict(message))


def finish_response(
    t: NovaTranslator,
    out: Outbox,
    status: str,
    *,
    reason: str | None = None,
    error: dict[str, Any] | None = None,
    defer: bool = False,
) -> None:
    """Close the open response's items and send ``response.done`` (or, with ``defer``,
    hold it up to :data:`USAGE_GRACE` for the usage that follows a turn)."""
    flush_done(t, out)
    response = t.response
    if response is None:
        return
    t.response = None
    if response.message_id is not None:
        _close_message(out, response, "completed" if status == "completed" else "incomplete")
    body = _response_body(t, response, status)
    if status != "completed":
        details: dict[str, Any] = {"type": status}
        if reason is not None:
            details["reason"] = reason
        if error is not None:
            details["error"] = error
        body["status_details"] = details
    if defer:
        t.done_pending = body
        t.deadline = t.now + USAGE_GRACE
        return
    _emit_done(t, out, body)


def flush_done(t: NovaTranslator, out: Outbox) -> None:
    """Send a held ``response.done`` now, with whatever usage has arrived."""
    body, t.done_pending = t.done_pending, None
    if body is not None:
        t.deadline = None
        _emit_done(t, out, body)


def _emit_done(t: NovaTranslator, out: Outbox, body: dict[str, Any]) -> None:
    usage = usage_block(t.usage)
    t.usage = {}
    body["usage"] = usage
    client_event(out, "response.done", response=body)
    out.add_usage(flatten_usage(usage))
