"""GA client events turned into Nova Sonic input: the ``on_client`` handlers.

Owns what each client event means for a Nova stream
(https://docs.aws.amazon.com/nova/latest/userguide/input-events.html):
``session.update`` (applied before the stream opens, reported when a later
one would need a new stream), audio appends into the one AUDIO content
container (PCM16 base64 passed through untouched, G.711 decoded to PCM16),
text and function-output items as Nova content blocks, and the local
acknowledgements for events Nova has no equivalent of (commit, clear,
cancel, truncate). Functions take the session's
:class:`~rtgate.translate.nova.state.NovaState`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from rtgate.protocol.events import appended_audio, is_base64
from rtgate.translate.audio import g711_b64_to_pcm16_b64
from rtgate.translate.base import Outbox, error_event, invalid_audio_error, new_id
from rtgate.translate.ga import items as ga_items
from rtgate.translate.ga.events import emit
from rtgate.translate.nova.response import finish_response
from rtgate.translate.nova.setup import (
    audio_content_start,
    merge_update,
    send_session,
    send_upstream,
    text_content,
    tool_result_content,
)
from rtgate.translate.nova.state import NovaState, Phase

_STREAMING: Final = Phase.STREAMING  # read per audio frame: a global is cheaper than Enum.attr


def append_audio(t: NovaState, frame: bytes, out: Outbox) -> None:
    """One ``audioInput`` into the AUDIO container (opened on the first append).

    The base64 is checked before it is spliced into the event as bytes: a parsed
    ``audio`` may hold a ``"`` that would otherwise end the JSON string.
    """
    audio_b64 = appended_audio(frame)
    if audio_b64 is None or not is_base64(audio_b64):
        out.client_json(invalid_audio_error())
        return
    if t.phase is not _STREAMING and not _open_audio(t, out):
        return
    fmt = t.config.input_format["type"]
    if fmt != "audio/pcm":
        audio_b64 = g711_b64_to_pcm16_b64(audio_b64, mu_law=fmt == "audio/pcmu")
    pcm_bytes = len(audio_b64) * 3 // 4 - audio_b64[-2:].count(b"=")
    t.input_ms += pcm_bytes / (t.input_rate * 2) * 1000
    out.to_upstream.append(t.audio_prefix + audio_b64 + b'"}}}')


def _open_audio(t: NovaState, out: Outbox) -> bool:
    """Open the stream if needed and its one AUDIO container; False once the stream is ending."""
    if t.phase is Phase.WAITING:
        t.open_stream(out)
    if t.phase is not Phase.OPEN:
        return False
    t.phase = Phase.STREAMING
    content = t.audio_content = str(uuid.uuid4())
    out.upstream_json(audio_content_start(t.prompt, content, t.input_rate))
    t.audio_prefix = (
        b'{"event":{"audioInput":{"promptName":"'
        + t.prompt.encode()
        + b'","contentName":"'
        + content.encode()
        + b'","content":"'
    )
    return True


def session_update(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    """Merge before the stream opens (then open it); afterwards keep only what Nova allows."""
    session = event.get("session")
    if not isinstance(session, Mapping):
        out.client_json(error_event("session.update needs a session", event_id=event_id))
        return
    if not t.started:
        problems = merge_update(t.config, session)
        _report(problems, out, event_id)
        t.open_stream(out)
    else:
        trial = copy.deepcopy(t.config)
        problems = merge_update(trial, session)
        if trial.nova_fields() != t.config.nova_fields():
            problems.append(
                "changes to instructions, voice, formats, tools or sampling once audio or text "
                "has started (Nova Sonic takes them once per stream)"
            )
            # Keep what Nova does not depend on (echoed settings like transcription).
            t.config.transcription = trial.transcription
        else:
            t.config = trial
        _report(problems, out, event_id)
    send_session(out, "session.updated", t.config, t.session_id)


def _report(problems: list[str], out: Outbox, event_id: str | None) -> None:
    if problems:
        out.client_json(
            error_event(
                "not applied with Amazon Nova Sonic: " + "; ".join(problems),
                code="unsupported_session_config",
                event_id=event_id,
            )
        )


def _unsupported_item(out: Outbox, message: str, event_id: str | None) -> None:
    out.client_json(error_event(message, code="unsupported_item", event_id=event_id))


def _function_output(
    t: NovaState, item: Mapping[str, Any], item_id: str, out: Outbox, event_id: str | None
) -> dict[str, Any] | None:
    """Send a ``function_call_output`` as TOOL content; the item to echo, or None if refused."""
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not isinstance(output, str):
        out.client_json(
            error_event("function_call_output needs call_id and output", event_id=event_id)
        )
        return None
    send_upstream(out, tool_result_content(t.prompt, str(uuid.uuid4()), call_id, output))
    return ga_items.function_call_output_item(item_id, call_id, output)


def _text_message(
    t: NovaState, item: Mapping[str, Any], item_id: str, out: Outbox, event_id: str | None
) -> dict[str, Any] | None:
    """Send a text ``message`` as TEXT content; the item to echo, or None if refused."""
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
        _unsupported_item(
            out,
            "Amazon Nova Sonic takes text message items only (audio goes through "
            "input_audio_buffer.append)",
            event_id,
        )
        return None
    text = "\n".join(texts)
    if t.audio_content is None:
        # History: allowed once, before audio streaming begins (Nova's input-events.html).
        send_upstream(out, text_content(t.prompt, str(uuid.uuid4()), role.upper(), text))
    elif "nova-2" in t.config.model and role == "user":
        # Nova 2 cross-modal input: typed text during a live audio session.
        send_upstream(
            out, text_content(t.prompt, str(uuid.uuid4()), "USER", text, interactive=True)
        )
    else:
        _unsupported_item(
            out, "this Nova Sonic model takes text items only before audio starts", event_id
        )
        return None
    return ga_items.text_message(item_id, role, texts)


def item_create(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    item = event.get("item")
    if not isinstance(item, Mapping):
        out.client_json(error_event("conversation.item.create needs an item", event_id=event_id))
        return
    item_type = item.get("type", "message")
    given_id = item.get("id")
    item_id = given_id if isinstance(given_id, str) else new_id("item")
    if item_type == "function_call_output":
        echoed = _function_output(t, item, item_id, out, event_id)
    elif item_type == "message":
        echoed = _text_message(t, item, item_id, out, event_id)
    else:
        _unsupported_item(
            out, f"{item_type} items are not supported with Amazon Nova Sonic", event_id
        )
        return
    if echoed is None:
        return
    t.chain.added_and_done(out, echoed)


def _commit(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    # Nova ends turns itself; acknowledge so manual-turn clients carry on.
    item = t.pending_user_item = t.pending_user_item or new_id("item")
    emit(out, "input_audio_buffer.committed", previous_item_id=t.chain.last, item_id=item)


def _clear(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    emit(out, "input_audio_buffer.cleared")


def _ignore(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    """Nothing to do: ``response.create`` (Nova answers on its own once it hears the end
    of a turn) and ``output_audio_buffer.clear`` (WebRTC only; a WebSocket client owns
    its playback buffer)."""


def _cancel(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    if t.response is not None:
        finish_response(t, out, "cancelled", reason="client_cancelled")
        t.suppress = True


def _truncate(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    acknowledged = ga_items.truncated_ack(event)
    if acknowledged is None:
        out.client_json(
            error_event(
                "conversation.item.truncate needs a string item_id and integer "
                "content_index and audio_end_ms",
                event_id=event_id,
            )
        )
        return
    out.client_json(acknowledged)


def unsupported(t: NovaState, event: dict[str, Any], out: Outbox, event_id: str | None) -> None:
    out.client_json(
        error_event(
            f"{event['type']} is not supported with Amazon Nova Sonic",
            code="unsupported_event",
            event_id=event_id,
        )
    )


Handler = Callable[[NovaState, dict[str, Any], Outbox, "str | None"], None]
HANDLERS: Final[dict[str, Handler]] = {
    "input_audio_buffer.commit": _commit,
    "input_audio_buffer.clear": _clear,
    "conversation.item.create": item_create,
    "response.create": _ignore,
    "response.cancel": _cancel,
    "conversation.item.truncate": _truncate,
    "output_audio_buffer.clear": _ignore,
}
"""Client event type -> handler, once the stream is open (``session.update`` comes first)."""
