"""Gemini Live (AI Studio and Vertex AI) behind the OpenAI Realtime GA protocol.

Pure translator (no I/O, time arrives as ``now``). It owns one session's
state: the one-shot ``setup`` (built from the client's first
``session.update``, or defaults after ``setup_wait`` seconds), input buffered
until ``setupComplete``, the GA event sequence for Gemini's output
(:mod:`rtgate.translate.gemini_output`), and the session's lifetime across
connections: on ``goAway`` or a ``session.update`` that changes the setup it
asks the relay to redial and resumes with the latest resumption handle.

Mapping reference: protocols.md §9.2. Where Gemini has no equivalent of a
client event (truncate, cancel, clear) the client gets the acknowledgement
OpenAI would send and the difference is absorbed locally; client
configuration Gemini cannot honour is reported in an ``error`` event.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import orjson

from rtgate.errors import close_reason, scrub
from rtgate.protocol.events import parse_event, sniff_type
from rtgate.translate import audio
from rtgate.translate.base import (
    Binary,
    CloseClient,
    Frame,
    Outbox,
    Reconnect,
    Translator,
    error_event,
    new_id,
)
from rtgate.translate.gemini_output import ResponseWriter, map_usage, usage_record
from rtgate.translate.gemini_setup import (
    OUTPUT_RATE,
    PCM24,
    AudioFormat,
    SessionPlan,
    build_plan,
    changed_setup_fields,
    default_session,
    merge_session,
    parse_format,
    session_echo,
)

_CONFIG, _SETUP_SENT, _LIVE, _RECONNECTING, _CLOSED = (
    "config",
    "setup_sent",
    "live",
    "reconnecting",
    "closed",
)
_AUDIO_KEY: Final = b'"audio":"'
_BASE64: Final = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_RATE: Final = re.compile(r"rate=(\d+)")
_MAX_CALL_NAMES: Final = 1024
_RESPONSE_FIELDS_GEMINI_LACKS: Final = (
    "instructions",
    "tools",
    "tool_choice",
    "output_modalities",
    "audio",
    "max_output_tokens",
    "input",
    "prompt",
    "temperature",
)
RECONNECT_MARGIN: Final = 3.0
"""Seconds before a ``goAway`` deadline at which rtgate stops waiting for the turn to end."""


def parse_duration(value: object) -> float:
    """A proto-JSON Duration (``"9.5s"``) or a ``{seconds, nanos}`` object, in seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return max(0.0, float(value[:-1]))
        except ValueError:
            return 0.0
    if isinstance(value, Mapping):
        seconds = value.get("seconds", 0)
        nanos = value.get("nanos", 0)
        try:
            return max(0.0, float(seconds) + float(nanos) / 1e9)
        except (TypeError, ValueError):
            return 0.0
    return 0.0


class GeminiTranslator(Translator):
    """One client session translated for Gemini Live (see module docstring)."""

    def __init__(
        self,
        *,
        model_path: str,
        model_group: str,
        session_id: str,
        vertex: bool = False,
        setup_wait: float = 2.0,
        max_buffered_bytes: int = 8 * 1024 * 1024,
        max_buffered_frames: int = 2000,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.model_path = model_path
        self.vertex = vertex
        self.session_id = session_id
        self.setup_wait = setup_wait
        self.max_buffered_bytes = max_buffered_bytes
        self.max_buffered_frames = max_buffered_frames
        self.secrets = secrets
        self.deadline = None
        self.conversation_id = new_id("conv")
        self.session: dict[str, Any] = default_session(model_group)
        self.plan: SessionPlan = build_plan(self.session, model_path)
        self.phase = _CONFIG
        self.sent_setup: dict[str, Any] | None = None
        self.handle: str | None = None
        # Input held back: raw client events before the setup exists, then upstream frames until
        # setupComplete. (frame, is_audio) so input_audio_buffer.clear can drop audio.
        self._raw_queue: list[bytes] = []
        self._pending: list[tuple[bytes, bool]] = []
        self._buffered_bytes = 0
        self._overflowing = False
        self._announce_update = False
        self._input_sent = False  # something reached Gemini that resumption must keep
        self._setup_deadline: float | None = None
        self._goaway_deadline: float | None = None
        self._reconnect_wanted: str | None = None
        self._reconnect_requested = False
        self.response: ResponseWriter | None = None
        self._suppress = False
        self._usage: dict[str, Any] | None = None
        self._activity_open = False
        self._audio_since_commit = False
        self._input_since_response = False
        self._pending_content = False
        self._user_item: str | None = None
        self._user_announced = False
        self._user_transcript: list[str] = []
        self._last_item: str | None = None
        self._call_names: OrderedDict[str, str] = OrderedDict()
        self._cancelled_calls: set[str] = set()
        self._resampler: audio.Resampler | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, out: Outbox, now: float) -> None:
        out.client_json(self._session_event("session.created"))
        self._setup_deadline = now + self.setup_wait
        self._refresh_deadline()

    def on_timer(self, out: Outbox, now: float) -> None:
        if (
            self._setup_deadline is not None
            and now >= self._setup_deadline
            and self.phase == _CONFIG
        ):
            self._setup_deadline = None
            self._send_first_setup(out, now)
        if self._goaway_deadline is not None and now >= self._goaway_deadline:
            self._goaway_deadline = None
            if self._reconnect_wanted is not None and not self._reconnect_requested:
                self._reconnect_now(out, self._reconnect_wanted)
        self._refresh_deadline()

    def on_reconnected(self, out: Outbox, now: float) -> None:
        self._reconnect_requested = False
        self._goaway_deadline = None
        self._refresh_deadline()
        if self.response is not None and not self.response.closed:
            # The old connection is gone mid-answer; Gemini does not resume a generation.
            self._close_response(
                out,
                "failed",
                {
                    "type": "failed",
                    "error": {"type": "server_error", "code": "upstream_reconnected"},
                },
            )
        self._suppress = False
        self._activity_open = False
        self._send_setup(out)

    def on_upstream_closed(
        self, code: int, reason: str, out: Outbox, now: float, *, error_type: str | None = None
    ) -> None:
        reason = scrub(reason, self.secrets)
        if self._reconnect_requested and reason.startswith("reconnect failed"):
            # The old connection is still in use: carry on with it and say what was lost.
            self._reconnect_requested = False
            self.phase = _LIVE if self.sent_setup is not None else _CONFIG
            note = (
                "the session.update was not applied"
                if self._announce_update
                else "the session may end soon"
            )
            self._announce_update = False
            out.client_json(
                error_event(
                    f"could not reconnect to Gemini Live ({reason}); {note}",
                    error_type="server_error",
                    code="upstream_reconnect_failed",
                )
            )
            self._flush_pending(out)
            return
        if self.phase == _CLOSED:
            return
        self.phase = _CLOSED
        self.deadline = None
        if self.response is not None and not self.response.closed:
            self._close_response(
                out,
                "failed",
                {"type": "failed", "error": {"type": "server_error", "code": f"upstream_{code}"}},
            )
        detail = f": {reason}" if reason else ""
        if code in (1000, 1001):
            out.close = CloseClient(code, close_reason(reason, self.secrets))
            return
        if code == 1007:
            message = f"Gemini rejected a request as invalid (1007){detail}"
            kind, client_code = "invalid_request_error", 1008
        elif code == 1008:
            message = f"Gemini refused the session (1008){detail}"
            kind, client_code = "invalid_request_error", 1008
        elif code == 1011:
            message = f"Gemini failed internally (1011){detail}"
            kind, client_code = "server_error", 1011
        else:
            message = f"Gemini closed the session ({code}){detail}"
            kind = "invalid_request_error" if 3000 <= code <= 4999 else "server_error"
            client_code = code if 3000 <= code <= 4999 else 1011
        out.client_json(
            error_event(message, error_type=kind, code=error_type or f"upstream_{code}")
        )
        out.close = CloseClient(client_code, close_reason(reason or message, self.secrets))

    # -- client -> Gemini ----------------------------------------------------------------

    def on_client(self, frame: Frame, out: Outbox, now: float) -> None:
        if self.phase == _CLOSED:
            return
        if isinstance(frame, Binary):
            out.client_json(
                error_event(
                    "binary messages are not part of the Realtime protocol", code="invalid_value"
                )
            )
            return
        kind = sniff_type(frame)
        if self.phase == _CONFIG and kind != "session.update":
            self._hold_raw(frame, out)
            return
        if kind == "input_audio_buffer.append":
            self._append(frame, out)
            return
        event = parse_event(frame)
        if event is None or not isinstance(kind, str):
            out.client_json(
                error_event("the message is not a JSON object with a type", code="invalid_json")
            )
            return
        client_event_id = _event_id(event)
        handler = _CLIENT_HANDLERS.get(kind)
        if handler is None:
            out.client_json(
                error_event(
                    f"unknown or unsupported client event type '{kind[:60]}'",
                    code="invalid_value",
                    event_id=client_event_id,
                    param="type",
                )
            )
            return
        handler(self, event, out, now)

    def _hold_raw(self, frame: bytes, out: Outbox) -> None:
        if self._reserve(len(frame), out):
            self._raw_queue.append(frame)

    def _reserve(self, size: int, out: Outbox) -> bool:
        held = len(self._raw_queue) + len(self._pending)
        if (
            self._buffered_bytes + size > self.max_buffered_bytes
            or held >= self.max_buffered_frames
        ):
            if not self._overflowing:
                self._overflowing = True
                out.client_json(
                    error_event(
                        "input arrived faster than the Gemini session could be set up; rtgate holds at most "
                        f"{self.max_buffered_bytes} bytes and dropped the excess",
                        error_type="server_error",
                        code="input_buffer_full",
                    )
                )
            return False
        self._buffered_bytes += size
        return True

    def _upstream(self, out: Outbox, message: bytes, *, is_audio: bool = False) -> None:
        """Send to Gemini now, or hold until the current setup is complete (order kept)."""
        if self.phase == _LIVE:
            out.to_upstream.append(message)
            self._input_sent = True
        elif self._reserve(len(message), out):
            self._pending.append((message, is_audio))

    def _flush_pending(self, out: Outbox) -> None:
        if self._pending:
            out.to_upstream.extend(frame for frame, _ in self._pending)
            self._input_sent = True
        self._pending.clear()
        self._buffered_bytes = sum(len(f) for f in self._raw_queue)
        self._overflowing = False

    def _append(self, frame: bytes, out: Outbox) -> None:
        data = _audio_field(frame)
        if data is None:
            event = parse_event(frame)
            value = event.get("audio") if event is not None else None
            data = value.encode("ascii", "replace") if isinstance(value, str) else None
        if data is None or len(data) % 4 or _BASE64.fullmatch(data) is None:
            out.client_json(
                error_event(
                    "input_audio_buffer.append needs base64 'audio'",
                    code="invalid_value",
                    param="audio",
                )
            )
            return
        if not data:
            return
        fmt = self.plan.input_format
        if fmt.encoding == "pcm":
            rate = fmt.rate
        else:
            raw = binascii.a2b_base64(data)
            pcm = audio.ulaw_to_pcm16(raw) if fmt.encoding == "pcmu" else audio.alaw_to_pcm16(raw)
            data, rate = base64.b64encode(pcm), 8000  # Gemini resamples any declared rate
        message = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=%d","data":"%s"}}}' % (
            rate,
            data,
        )
        if self.plan.manual_activity and not self._activity_open:
            self._activity_open = True
            self._upstream(out, b'{"realtimeInput":{"activityStart":{}}}')
        if self._user_item is not None and self._user_announced:
            self._finish_user_item(out)
        self._user_turn(out)
        self._audio_since_commit = True
        self._input_since_response = True
        self._upstream(out, message, is_audio=True)

    def _session_update(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        session = event.get("session")
        if not isinstance(session, Mapping):
            out.client_json(error_event("session.update needs a 'session' object", param="session"))
            return
        if session.get("type") == "transcription":
            out.client_json(
                error_event(
                    "transcription-only sessions are not available on Gemini Live; the session was not changed",
                    code="unsupported_session_type",
                    param="session.type",
                )
            )
            return
        merged = merge_session(self.session, session)
        plan = build_plan(merged, self.model_path)
        if plan.ignored:
            out.client_json(
                error_event(
                    "Gemini Live cannot apply: " + "; ".join(plan.ignored),
                    code="unsupported_session_config",
                    param="session",
                )
            )
        if self.phase == _CONFIG:
            self.session, self.plan = merged, plan
            self._send_first_setup(out, now)
            # Answered at once, like OpenAI, so it precedes the acks of later events; a setup
            # Gemini rejects still ends in an error event and a close.
            out.client_json(self._session_event("session.updated"))
            return
        changed = changed_setup_fields(self.sent_setup or {}, plan.setup)
        if not changed:
            self.session, self.plan = merged, plan
            self._session_updated(out)
            return
        if self._input_sent and self.handle is None:
            # A fresh connection would forget the conversation: keep the old setup, apply only
            # what rtgate does locally (audio formats), and say what was not applied.
            local: dict[str, Any] = {}
            for side in ("input", "output"):
                fmt = _nested(session, "audio", side, "format")
                if fmt is not None and parse_format(fmt) is not None:
                    local.setdefault("audio", {})[side] = {"format": fmt}
            self.session = merge_session(self.session, local)
            self.plan = build_plan(self.session, self.model_path)
            out.client_json(
                error_event(
                    "Gemini Live fixes these settings when the session starts and has not yet offered a "
                    "resumption point, so they were not changed: " + ", ".join(changed),
                    code="session_update_not_applied",
                    param="session",
                )
            )
            self._session_updated(out)
            return
        self.session, self.plan = merged, plan
        self._announce_update = True
        self._want_reconnect(
            out, "session.update changed " + ", ".join(changed), now, deadline=None
        )

    def _session_updated(self, out: Outbox) -> None:
        if self.phase == _LIVE:
            out.client_json(self._session_event("session.updated"))
        else:
            self._announce_update = True

    def _session_event(self, kind: str) -> dict[str, object]:
        return {
            "type": kind,
            "event_id": new_id("event"),
            "session": session_echo(self.session, self.plan, self.session_id),
        }

    def _send_first_setup(self, out: Outbox, now: float) -> None:
        self._setup_deadline = None
        self._send_setup(out)
        raw, self._raw_queue = self._raw_queue, []
        self._buffered_bytes = 0
        self._overflowing = False
        for frame in raw:
            self.on_client(frame, out, now)
        self._refresh_deadline()

    def _send_setup(self, out: Outbox) -> None:
        setup = dict(self.plan.setup)
        self.sent_setup = dict(setup)
        setup["sessionResumption"] = {"handle": self.handle} if self.handle else {}
        out.upstream_json({"setup": setup})
        self.phase = _SETUP_SENT

    def _commit(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        if not self._audio_since_commit:
            out.client_json(
                error_event(
                    "Error committing input audio buffer: buffer is empty.",
                    code="input_audio_buffer_commit_empty",
                    event_id=_event_id(event),
                )
            )
            return
        if self.plan.manual_activity:
            if self._activity_open:
                self._activity_open = False
                self._upstream(out, b'{"realtimeInput":{"activityEnd":{}}}')
        elif not self.vertex:
            # AI Studio: ends the audio stream so its detector closes the turn (Vertex lacks it).
            self._upstream(out, b'{"realtimeInput":{"audioStreamEnd":true}}')
        self._audio_since_commit = False
        self._announce_user_item(out)

    def _clear(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        # Audio already streamed cannot be taken back; audio still held is dropped.
        kept: list[tuple[bytes, bool]] = [(f, a) for f, a in self._pending if not a]
        self._pending = kept
        self._buffered_bytes = sum(len(f) for f, _ in kept) + sum(len(f) for f in self._raw_queue)
        self._audio_since_commit = False
        if self._user_item is not None and not self._user_announced:
            self._user_item = None
            self._user_transcript = []
        out.client_json({"type": "input_audio_buffer.cleared", "event_id": new_id("event")})

    def _item_create(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        item = event.get("item")
        if not isinstance(item, Mapping):
            out.client_json(error_event("conversation.item.create needs an 'item'", param="item"))
            return
        kind = item.get("type", "message")
        if kind == "function_call_output":
            self._function_output(item, event, out)
            return
        if kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                out.client_json(
                    error_event("function_call items need call_id and name", param="item")
                )
                return
            self._call_names[call_id] = name
            part: dict[str, Any] = {
                "functionCall": {
                    "id": call_id,
                    "name": name,
                    "args": _json_object(item.get("arguments")),
                }
            }
            self._content(out, "model", [part])
            self._item_added(out, item)
            return
        if kind != "message":
            out.client_json(
                error_event(
                    f"item type '{str(kind)[:40]}' is not supported by Gemini Live",
                    param="item.type",
                )
            )
            return
        role = item.get("role")
        if role not in ("user", "assistant"):
            out.client_json(
                error_event(
                    f"Gemini Live cannot add a '{str(role)[:20]}' message mid-session; use session.instructions",
                    param="item.role",
                    event_id=_event_id(event),
                )
            )
            return
        parts = self._parts(item.get("content"), out)
        if parts is None:
            return
        self._content(out, "user" if role == "user" else "model", parts)
        if role == "user":
            self._pending_content = True
            self._input_since_response = True
        self._item_added(out, item)

    def _parts(self, content: object, out: Outbox) -> list[dict[str, Any]] | None:
        if not isinstance(content, list) or not content:
            out.client_json(
                error_event("a message item needs a non-empty 'content' list", param="item.content")
            )
            return None
        parts: list[dict[str, Any]] = []
        for index, piece in enumerate(content):
            if not isinstance(piece, Mapping):
                piece = {}
            kind = piece.get("type")
            if kind in ("input_text", "text", "output_text") and isinstance(piece.get("text"), str):
                parts.append({"text": piece["text"]})
            elif kind == "input_audio" and isinstance(piece.get("audio"), str):
                parts.append({"inlineData": self._audio_blob(piece["audio"])})
            elif kind == "input_image" and isinstance(piece.get("image_url"), str):
                blob = _data_url(piece["image_url"])
                if blob is None:
                    out.client_json(
                        error_event(
                            "input_image needs a base64 data: URL", param=f"item.content[{index}]"
                        )
                    )
                    return None
                parts.append({"inlineData": blob})
            else:
                out.client_json(
                    error_event(
                        f"content part {index} ('{str(kind)[:30]}') is not supported",
                        param=f"item.content[{index}]",
                    )
                )
                return None
        return parts

    def _audio_blob(self, b64: str) -> dict[str, str]:
        fmt = self.plan.input_format
        if fmt.encoding == "pcm":
            return {"mimeType": f"audio/pcm;rate={fmt.rate}", "data": b64}
        raw = base64.b64decode(b64)
        pcm = audio.ulaw_to_pcm16(raw) if fmt.encoding == "pcmu" else audio.alaw_to_pcm16(raw)
        return {"mimeType": "audio/pcm;rate=8000", "data": base64.b64encode(pcm).decode()}

    def _content(self, out: Outbox, role: str, parts: list[dict[str, Any]]) -> None:
        message = {
            "clientContent": {"turns": [{"role": role, "parts": parts}], "turnComplete": False}
        }
        self._upstream(out, orjson.dumps(message))

    def _item_added(self, out: Outbox, item: Mapping[str, Any]) -> None:
        echoed = dict(item)
        echoed.setdefault("id", new_id("item"))
        echoed["object"] = "realtime.item"
        echoed.setdefault("status", "completed")
        for kind in ("conversation.item.added", "conversation.item.done"):
            out.client_json(
                {
                    "type": kind,
                    "event_id": new_id("event"),
                    "previous_item_id": self._last_item,
                    "item": echoed,
                }
            )
        self._last_item = str(echoed["id"])

    def _function_output(self, item: Mapping[str, Any], event: dict[str, Any], out: Outbox) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or call_id not in self._call_names:
            out.client_json(
                error_event(
                    f"no function call with call_id '{str(call_id)[:64]}' is waiting for output",
                    param="item.call_id",
                    event_id=_event_id(event),
                )
            )
            return
        name = self._call_names[call_id]
        if call_id in self._cancelled_calls:
            self._cancelled_calls.discard(call_id)  # Gemini cancelled it; it wants no answer
        else:
            response = {
                "id": call_id,
                "name": name,
                "response": _function_response(item.get("output")),
            }
            self._upstream(out, orjson.dumps({"toolResponse": {"functionResponses": [response]}}))
            self._input_since_response = True
        self._item_added(out, item)

    def _response_create(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        params = event.get("response")
        if isinstance(params, Mapping):
            if params.get("conversation") == "none":
                out.client_json(
                    error_event(
                        "out-of-band responses (conversation: none) are not available on Gemini Live",
                        param="response.conversation",
                        event_id=_event_id(event),
                    )
                )
                return
            lacking = [k for k in _RESPONSE_FIELDS_GEMINI_LACKS if params.get(k) is not None]
            if lacking:
                out.client_json(
                    error_event(
                        "Gemini Live cannot change per response: "
                        + ", ".join(lacking)
                        + " (the session's "
                        "settings apply)",
                        code="unsupported_response_config",
                        param="response",
                        event_id=_event_id(event),
                    )
                )
        if self.response is not None and not self.response.closed:
            out.client_json(
                error_event(
                    "Conversation already has an active response in progress",
                    code="conversation_already_has_active_response",
                    event_id=_event_id(event),
                )
            )
            return
        if self.plan.manual_activity and self._activity_open:
            self._activity_open = False
            self._audio_since_commit = False
            self._upstream(out, b'{"realtimeInput":{"activityEnd":{}}}')
            self._announce_user_item(out)
        elif self._pending_content or not self._input_since_response:
            # Text items wait for turnComplete; with nothing new it asks for an answer anyway
            # (a greeting). Audio turns and tool outputs make Gemini answer by itself.
            self._upstream(out, b'{"clientContent":{"turnComplete":true}}')
        self._pending_content = False
        self._input_since_response = False

    def _response_cancel(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        if self.response is None or self.response.closed:
            out.client_json(
                error_event(
                    "Cancellation failed: no active response found",
                    code="response_cancel_not_active",
                    event_id=_event_id(event),
                )
            )
            return
        self._close_response(
            out, "cancelled", {"type": "cancelled", "reason": "client_cancelled"}, with_usage=False
        )
        # Gemini has no cancel: drop the rest of this turn; with client-driven turns a new
        # activity interrupts the generation upstream too.
        self._suppress = True
        if self.plan.manual_activity and not self._activity_open:
            self._activity_open = True
            self._upstream(out, b'{"realtimeInput":{"activityStart":{}}}')

    def _truncate(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        out.client_json(
            {
                "type": "conversation.item.truncated",
                "event_id": new_id("event"),
                "item_id": event.get("item_id"),
                "content_index": event.get("content_index", 0),
                "audio_end_ms": event.get("audio_end_ms", 0),
            }
        )

    def _unsupported(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        out.client_json(
            error_event(
                f"{event.get('type')} is not available on Gemini Live",
                code="unsupported_event",
                event_id=_event_id(event),
            )
        )

    # -- Gemini -> client ----------------------------------------------------------------

    def on_upstream(self, frame: Frame, out: Outbox, now: float) -> None:
        data = frame.data if isinstance(frame, Binary) else frame
        message = parse_event(data)
        if message is None:
            out.client_json(
                error_event(
                    "Gemini sent a message rtgate could not parse",
                    error_type="server_error",
                    code="upstream_invalid",
                )
            )
            return
        usage = message.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = usage  # per turn; the latest report wins
        if "setupComplete" in message:
            self._setup_complete(out)
        content = message.get("serverContent")
        if isinstance(content, Mapping):
            self._server_content(content, out, now)
        tool_call = message.get("toolCall")
        if isinstance(tool_call, Mapping):
            self._tool_call(tool_call, out)
        cancellation = message.get("toolCallCancellation")
        if isinstance(cancellation, Mapping):
            ids = cancellation.get("ids")
            if isinstance(ids, list):
                self._cancelled_calls.update(i for i in ids if isinstance(i, str))
        resumption = message.get("sessionResumptionUpdate")
        if isinstance(resumption, Mapping):
            handle = resumption.get("newHandle")
            if resumption.get("resumable") is not False and isinstance(handle, str) and handle:
                self.handle = handle
        go_away = message.get("goAway")
        if isinstance(go_away, Mapping):
            left = parse_duration(go_away.get("timeLeft"))
            self._want_reconnect(
                out, "goAway", now, deadline=now + max(0.0, left - RECONNECT_MARGIN)
            )

    def _setup_complete(self, out: Outbox) -> None:
        if self.phase != _SETUP_SENT:
            return  # a late answer from a connection being replaced
        self.phase = _LIVE
        if self._announce_update:
            self._announce_update = False
            out.client_json(self._session_event("session.updated"))
        self._flush_pending(out)

    def _server_content(self, content: Mapping[str, Any], out: Outbox, now: float) -> None:
        transcription = content.get("inputTranscription")
        if isinstance(transcription, Mapping) and isinstance(transcription.get("text"), str):
            self._input_transcript(transcription["text"], out)
        turn = content.get("modelTurn")
        if isinstance(turn, Mapping) and not self._suppress:
            parts = turn.get("parts")
            for part in parts if isinstance(parts, list) else ():
                if not isinstance(part, Mapping):
                    continue
                blob = part.get("inlineData")
                if isinstance(blob, Mapping) and isinstance(blob.get("data"), str):
                    mime = str(blob.get("mimeType", ""))
                    if mime.startswith("audio/") and not self.plan.text_output:
                        self._ensure_response(out).audio(
                            out, self._client_audio(blob["data"], mime)
                        )
                elif (
                    isinstance(part.get("text"), str)
                    and not part.get("thought")
                    and self.plan.text_output
                ):
                    self._ensure_response(out).text(out, part["text"])
        spoken = content.get("outputTranscription")
        text = spoken.get("text") if isinstance(spoken, Mapping) else None
        if isinstance(text, str) and text and not self._suppress:
            self._ensure_response(out).transcript(out, text)
        if (
            content.get("generationComplete")
            and self.response is not None
            and not self.response.closed
        ):
            self.response.generation_complete(out)
        if content.get("interrupted"):
            self._interrupted(out)
        if content.get("turnComplete"):
            self._turn_complete(out, now)

    def _client_audio(self, data: str, mime: str) -> str:
        fmt = self.plan.output_format
        match = _RATE.search(mime)
        rate = int(match.group(1)) if match else OUTPUT_RATE
        if fmt == PCM24 and rate == OUTPUT_RATE:
            return data  # the common case: passes through untouched
        target = fmt.rate if fmt.encoding == "pcm" else 8000
        resampler = self._resampler
        if resampler is None or resampler.from_rate != rate or resampler.to_rate != target:
            resampler = self._resampler = audio.Resampler(rate, target)
        try:
            pcm = resampler.convert(base64.b64decode(data))
        except (binascii.Error, ValueError):
            return ""
        if fmt.encoding == "pcmu":
            pcm = audio.pcm16_to_ulaw(pcm)
        elif fmt.encoding == "pcma":
            pcm = audio.pcm16_to_alaw(pcm)
        return base64.b64encode(pcm).decode()

    def _ensure_response(self, out: Outbox) -> ResponseWriter:
        response = self.response
        if response is None or response.closed:
            if not self.plan.manual_activity:
                self._announce_user_item(out)
            response = self.response = ResponseWriter(
                out,
                conversation_id=self.conversation_id,
                text_output=self.plan.text_output,
                output_format=self.plan.output_format.as_openai(),
                voice=self.plan.voice,
                max_output_tokens=self.session.get("max_output_tokens", "inf"),
            )
            self._input_since_response = False
            self._pending_content = False
        return response

    def _close_response(
        self, out: Outbox, status: str, details: object = None, *, with_usage: bool = True
    ) -> None:
        response = self.response
        if response is None or response.closed:
            return
        usage = map_usage(self._usage) if with_usage and self._usage is not None else None
        if usage is not None:
            self._usage = None
            out.usage = usage_record(usage)
        response.close(out, status, details, usage)
        self._last_item = response.items[-1]["id"] if response.items else self._last_item
        if self._resampler is not None:
            self._resampler.reset()

    def _interrupted(self, out: Outbox) -> None:
        if self.response is not None and not self.response.closed and not self._suppress:
            self._close_response(out, "cancelled", {"type": "cancelled", "reason": "turn_detected"})
            self._finish_user_item(out)
            item = self._user_turn(out)
            out.client_json(
                {
                    "type": "input_audio_buffer.speech_started",
                    "event_id": new_id("event"),
                    "audio_start_ms": 0,
                    "item_id": item,
                }
            )
        self._suppress = True  # the rest of this turn was cut off; Gemini ends it with turnComplete

    def _turn_complete(self, out: Outbox, now: float) -> None:
        self._suppress = False
        self._close_response(out, "completed")
        self._finish_user_item(out)
        if self._reconnect_wanted is not None and not self._reconnect_requested:
            self._reconnect_now(out, self._reconnect_wanted)

    def _tool_call(self, tool_call: Mapping[str, Any], out: Outbox) -> None:
        calls = tool_call.get("functionCalls")
        valid = [c for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []
        if not valid:
            return
        response = self._ensure_response(out)
        for call in valid:
            call_id = call.get("id")
            name = str(call.get("name") or "")
            if not isinstance(call_id, str) or not call_id:
                call_id = new_id("call")
            self._call_names[call_id] = name
            while len(self._call_names) > _MAX_CALL_NAMES:
                self._call_names.popitem(last=False)
            args = call.get("args")
            arguments = orjson.dumps(args if isinstance(args, dict) else {}).decode()
            response.function_call(out, call_id, name, arguments)
        # OpenAI ends a response at its function calls; the client answers with outputs.
        self._close_response(out, "completed")
        self._finish_user_item(out)
        self._suppress = False

    # -- the user's turn as an OpenAI input item ------------------------------------------

    def _user_turn(self, out: Outbox) -> str:
        if self._user_item is None:
            self._user_item = new_id("item")
            self._user_announced = False
            self._user_transcript = []
        return self._user_item

    def _announce_user_item(self, out: Outbox) -> None:
        item_id = self._user_item
        if item_id is None or self._user_announced:
            return
        self._user_announced = True
        out.client_json(
            {
                "type": "input_audio_buffer.committed",
                "event_id": new_id("event"),
                "previous_item_id": self._last_item,
                "item_id": item_id,
            }
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        for kind in ("conversation.item.added", "conversation.item.done"):
            out.client_json(
                {
                    "type": kind,
                    "event_id": new_id("event"),
                    "previous_item_id": self._last_item,
                    "item": item,
                }
            )
        self._last_item = item_id

    def _input_transcript(self, text: str, out: Outbox) -> None:
        if not text or not self.plan.transcribe_input:
            return
        item_id = self._user_turn(out)
        self._user_transcript.append(text)
        out.client_json(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "event_id": new_id("event"),
                "item_id": item_id,
                "content_index": 0,
                "delta": text,
            }
        )

    def _finish_user_item(self, out: Outbox) -> None:
        item_id = self._user_item
        if item_id is None:
            return
        if self._user_transcript:
            out.client_json(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": new_id("event"),
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": "".join(self._user_transcript),
                    "usage": {"type": "duration", "seconds": 0},
                }
            )
            self._user_transcript = []
        if self._user_announced or not self._audio_since_commit:
            self._user_item = None
            self._user_announced = False

    # -- reconnects ---------------------------------------------------------------------------

    def _want_reconnect(
        self, out: Outbox, reason: str, now: float, *, deadline: float | None
    ) -> None:
        if self._reconnect_requested:
            return
        busy = self.response is not None and not self.response.closed
        if not busy:
            self._reconnect_now(out, reason)
            return
        self._reconnect_wanted = reason  # after this turn, or at the deadline at the latest
        if deadline is not None:
            self._goaway_deadline = deadline
        self._refresh_deadline()

    def _reconnect_now(self, out: Outbox, reason: str) -> None:
        self._reconnect_wanted = None
        self._goaway_deadline = None
        self._reconnect_requested = True
        self.phase = _RECONNECTING
        out.reconnect = Reconnect(reason)
        self._refresh_deadline()

    def _refresh_deadline(self) -> None:
        candidates = [d for d in (self._setup_deadline, self._goaway_deadline) if d is not None]
        self.deadline = min(candidates) if candidates else None


_Handler = Any
_CLIENT_HANDLERS: dict[str, _Handler] = {
    "session.update": GeminiTranslator._session_update,
    "input_audio_buffer.commit": GeminiTranslator._commit,
    "input_audio_buffer.clear": GeminiTranslator._clear,
    "conversation.item.create": GeminiTranslator._item_create,
    "conversation.item.truncate": GeminiTranslator._truncate,
    "conversation.item.delete": GeminiTranslator._unsupported,
    "conversation.item.retrieve": GeminiTranslator._unsupported,
    "output_audio_buffer.clear": GeminiTranslator._unsupported,
    "response.create": GeminiTranslator._response_create,
    "response.cancel": GeminiTranslator._response_cancel,
}


def _audio_field(frame: bytes) -> bytes | None:
    """The base64 ``audio`` of an append without decoding the JSON (None: use the parser)."""
    start = frame.find(_AUDIO_KEY)
    if start < 0:
        return None
    start += len(_AUDIO_KEY)
    end = frame.find(b'"', start)
    if end < 0:
        return None
    data = frame[start:end]
    return None if b"\\" in data else data


def _event_id(event: Mapping[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def _nested(mapping: object, *path: str) -> object:
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _json_object(value: object) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {"value": value}
    return value if isinstance(value, dict) else {"value": value}


def _function_response(output: object) -> dict[str, Any]:
    """Gemini wants an object; OpenAI outputs are strings (JSON or not)."""
    if isinstance(output, str):
        try:
            parsed = orjson.loads(output)
        except orjson.JSONDecodeError:
            return {"output": output}
        return parsed if isinstance(parsed, dict) else {"output": parsed}
    return output if isinstance(output, dict) else {"output": output}


def _data_url(url: str) -> dict[str, str] | None:
    if not url.startswith("data:") or ";base64," not in url:
        return None
    header, _, data = url[len("data:") :].partition(";base64,")
    return {"mimeType": header or "application/octet-stream", "data": data}


__all__ = ["AudioFormat", "GeminiTranslator", "parse_duration"]
