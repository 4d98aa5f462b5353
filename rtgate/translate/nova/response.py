"""The GA responses a Nova Sonic session shows the client, one at a time.

Pure. The event shapes and order are :class:`~rtgate.translate.ga.response.ResponseWriter`'s;
this module decides when a Nova turn opens and ends a response: barge-in
(``speech_started`` plus a cancelled response), and ``response.done`` with the
usage Nova reported, which may wait up to :data:`USAGE_GRACE` for the
``usageEvent`` that follows a turn. Functions take the session's
:class:`~rtgate.translate.nova.state.NovaState`; the Nova events that drive
them are read in :mod:`~rtgate.translate.nova.output`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from rtgate.translate.base import Outbox, new_id
from rtgate.translate.ga.events import emit
from rtgate.translate.ga.response import ResponseWriter
from rtgate.translate.ga.usage import Usage
from rtgate.translate.nova.state import NovaState

USAGE_GRACE: Final = 0.3
"""Seconds ``response.done`` waits after the end of a turn for the ``usageEvent`` that
Nova sends right after it, so the usage lands in the response it belongs to."""


def usage_of(acc: Mapping[str, int]) -> Usage:
    """GA usage from the per-turn sums (``in_text``, ``in_audio``, ``out_text``, ``out_audio``)."""
    return Usage(
        input_text=acc.get("in_text", 0),
        input_audio=acc.get("in_audio", 0),
        output_text=acc.get("out_text", 0),
        output_audio=acc.get("out_audio", 0),
    )


def ensure_response(t: NovaState, out: Outbox) -> ResponseWriter:
    """The open response, announcing a new one if there is none."""
    if t.response is None:
        config = t.config
        t.response = ResponseWriter(
            out,
            modality="text" if config.output_modalities == ["text"] else "audio",
            output_format=dict(config.output_format),
            voice=config.voice,
            max_output_tokens=config.max_output_tokens,
            conversation=t.chain,
            conversation_id=t.conversation_id,
        )
    return t.response


def function_call(t: NovaState, tool: dict[str, Any], out: Outbox) -> None:
    """A whole function call item (Nova sends a tool use complete, never in pieces)."""
    ensure_response(t, out).function_call(out, tool["call_id"], tool["name"], tool["arguments"])


def barge_in(t: NovaState, out: Outbox) -> None:
    """The user spoke over the answer: ``speech_started``, the response cancelled, the rest dropped."""
    if t.response is None or t.suppress:
        return
    item_id = t.pending_user_item = new_id("item")
    emit(out, "input_audio_buffer.speech_started", audio_start_ms=int(t.input_ms), item_id=item_id)
    finish_response(t, out, "cancelled", reason="turn_detected")
    t.suppress = True


def finish_response(
    t: NovaState,
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
    details: dict[str, Any] | None = None
    if status != "completed":
        details = {"type": status}
        if reason is not None:
            details["reason"] = reason
        if error is not None:
            details["error"] = error
    body = response.finish(out, status, details)
    if defer:
        t.done_pending = (response, body)
        t.deadline = t.now + USAGE_GRACE
        return
    _emit_done(t, out, response, body)


def flush_done(t: NovaState, out: Outbox) -> None:
    """Send a held ``response.done`` now, with whatever usage has arrived."""
    pending, t.done_pending = t.done_pending, None
    if pending is not None:
        t.deadline = None
        _emit_done(t, out, *pending)


def _emit_done(
    t: NovaState, out: Outbox, response: ResponseWriter, body: dict[str, object]
) -> None:
    usage = usage_of(t.usage)
    t.usage = {}
    response.done(out, body, usage)
