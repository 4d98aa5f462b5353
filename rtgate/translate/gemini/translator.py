"""Gemini Live (AI Studio and Vertex AI) behind the OpenAI Realtime GA protocol.

Pure translator (no I/O, time arrives as ``now``). :class:`GeminiTranslator`
owns one session's state and its lifetime across connections: the one-shot
``setup`` (built from the client's first ``session.update``, or defaults after
``setup_wait`` seconds; :mod:`~rtgate.translate.gemini.setup`), input held
until Gemini accepts that setup, the dispatch of client events (handlers in
:mod:`~rtgate.translate.gemini.input`), Gemini's messages (output turned into
GA events by :mod:`~rtgate.translate.gemini.output`, the user's items kept by
:mod:`~rtgate.translate.gemini.items`), and redials.

The session's phases (``self.phase``)::

    config --first session.update, or setup_wait elapsed--> setup_sent
        (client events other than session.update are held raw, then replayed)
    setup_sent --setupComplete--> live
        (messages for Gemini are held in order, then flushed)
    live --goAway, or a session.update that changes the setup--> reconnecting
        (at once when no response is open; otherwise at turnComplete, or at the
        goAway deadline less RECONNECT_MARGIN at the latest)
    reconnecting --on_reconnected: setup with the latest resumption handle--> setup_sent
    reconnecting --the redial failed--> live, the old connection carrying on (error event)
    any --the upstream closed--> closed (error event unless 1000/1001; client closed)

Mapping reference: protocols.md §9.2. Where Gemini has no equivalent of a
client event (truncate, cancel, clear) the client gets the acknowledgement
OpenAI would send and the difference is absorbed locally; client
configuration Gemini cannot honour is reported in an ``error`` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from rtgate.errors import close_reason, scrub
from rtgate.protocol.events import parse_event, sniff_type
from rtgate.translate.base import (
    CloseClient,
    Outbox,
    Reconnect,
    Translator,
    client_close_code,
    error_event,
    get_path,
    new_id,
)
from rtgate.translate.gemini.input import HANDLERS, Handler, append_audio, event_id
from rtgate.translate.gemini.items import Conversation
from rtgate.translate.gemini.output import ClientAudio, ResponseWriter, map_usage, usage_record
from rtgate.translate.gemini.setup import (
    SessionPlan,
    build_plan,
    changed_setup_fields,
    default_session,
    merge_session,
    parse_format,
    session_echo,
)
from rtgate.wire import Binary, Frame

_CONFIG, _SETUP_SENT, _LIVE, _RECONNECTING, _CLOSED = (
    "config",
    "setup_sent",
    "live",
    "reconnecting",
    "closed",
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
        self.conversation = Conversation()
        self._usage: dict[str, Any] | None = None
        self._audio_out = ClientAudio()
        # Turn state shared with the client-event handlers (gemini_input).
        self.suppress = False  # drop Gemini's output until this turn ends (interrupted/cancelled)
        self.activity_open = False  # activityStart sent without its activityEnd (manual turns)
        self.input_since_response = False
        self.pending_content = False  # user content items waiting for turnComplete

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
            self.close_response(out, "failed", _failed("upstream_reconnected"))
        self.suppress = False
        self.activity_open = False
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
            self.close_response(out, "failed", _failed(f"upstream_{code}"))
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
            client_code = client_close_code(code)
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
            append_audio(self, frame, out)
            return
        event = parse_event(frame)
        if event is None or not isinstance(kind, str):
            out.client_json(
                error_event("the message is not a JSON object with a type", code="invalid_json")
            )
            return
        handler = _CLIENT_HANDLERS.get(kind)
        if handler is None:
            out.client_json(
                error_event(
                    f"unknown or unsupported client event type '{kind[:60]}'",
                    code="invalid_value",
                    event_id=event_id(event),
                    param="type",
                )
            )
            return
        handler(self, event, out, now)

    def send_upstream(self, out: Outbox, message: bytes, *, is_audio: bool = False) -> None:
        """Send to Gemini now, or hold until the current setup is complete (order kept)."""
        if self.phase == _LIVE:
            out.to_upstream.append(message)
            self._input_sent = True
        elif self._reserve(len(message), out):
            self._pending.append((message, is_audio))

    def drop_held_audio(self) -> None:
        """Forget audio not yet sent to Gemini (held while a setup is under way)."""
        kept: list[tuple[bytes, bool]] = [(f, a) for f, a in self._pending if not a]
        self._pending = kept
        self._buffered_bytes = sum(len(f) for f, _ in kept) + sum(len(f) for f in self._raw_queue)

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

    def _flush_pending(self, out: Outbox) -> None:
        if self._pending:
            out.to_upstream.extend(frame for frame, _ in self._pending)
            self._input_sent = True
        self._pending.clear()
        self._buffered_bytes = sum(len(f) for f in self._raw_queue)
        self._overflowing = False

    # -- session.update and the setup ------------------------------------------------------

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
                fmt = get_path(session, "audio", side, "format")
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

    def _setup_complete(self, out: Outbox) -> None:
        if self.phase != _SETUP_SENT:
            return  # a late answer from a connection being replaced
        self.phase = _LIVE
        if self._announce_update:
            self._announce_update = False
            out.client_json(self._session_event("session.updated"))
        self._flush_pending(out)

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
                self.conversation.cancelled_calls.update(i for i in ids if isinstance(i, str))
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

    def _server_content(self, content: Mapping[str, Any], out: Outbox, now: float) -> None:
        transcription = content.get("inputTranscription")
        if isinstance(transcription, Mapping) and isinstance(transcription.get("text"), str):
            text = transcription["text"]
            if text and self.plan.transcribe_input:
                self.conversation.input_transcript(out, text)
        turn = content.get("modelTurn")
        if isinstance(turn, Mapping) and not self.suppress:
            parts = turn.get("parts")
            for part in parts if isinstance(parts, list) else ():
                if not isinstance(part, Mapping):
                    continue
                blob = part.get("inlineData")
                if isinstance(blob, Mapping) and isinstance(blob.get("data"), str):
                    mime = str(blob.get("mimeType", ""))
                    if mime.startswith("audio/") and not self.plan.text_output:
                        self._ensure_response(out).audio(
                            out,
                            self._audio_out.convert(blob["data"], mime, self.plan.output_format),
                        )
                elif (
                    isinstance(part.get("text"), str)
                    and not part.get("thought")
                    and self.plan.text_output
                ):
                    self._ensure_response(out).text(out, part["text"])
        spoken = content.get("outputTranscription")
        text = spoken.get("text") if isinstance(spoken, Mapping) else None
        if isinstance(text, str) and text and not self.suppress:
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

    def _ensure_response(self, out: Outbox) -> ResponseWriter:
        response = self.response
        if response is None or response.closed:
            if not self.plan.manual_activity:
                self.conversation.announce_user_item(out)
            response = self.response = ResponseWriter(
                out,
                conversation_id=self.conversation_id,
                text_output=self.plan.text_output,
                output_format=self.plan.output_format.as_openai(),
                voice=self.plan.voice,
                max_output_tokens=self.session.get("max_output_tokens", "inf"),
            )
            self.input_since_response = False
            self.pending_content = False
        return response

    def close_response(
        self, out: Outbox, status: str, details: object = None, *, with_usage: bool = True
    ) -> None:
        """``response.done`` for the open response, with the turn's usage unless told not to."""
        response = self.response
        if response is None or response.closed:
            return
        usage = map_usage(self._usage) if with_usage and self._usage is not None else None
        if usage is not None:
            self._usage = None
        # Every response.done counts (a tool-call response has no usage of its own).
        out.add_usage(usage_record(usage) if usage is not None else None)
        response.close(out, status, details, usage)
        if response.items:
            self.conversation.last_item = response.items[-1]["id"]
        self._audio_out.reset()

    def _interrupted(self, out: Outbox) -> None:
        if self.response is not None and not self.response.closed and not self.suppress:
            self.close_response(out, "cancelled", {"type": "cancelled", "reason": "turn_detected"})
            self.conversation.finish_user_item(out)
            item = self.conversation.user_turn()
            out.client_json(
                {
                    "type": "input_audio_buffer.speech_started",
                    "event_id": new_id("event"),
                    "audio_start_ms": 0,
                    "item_id": item,
                }
            )
        self.suppress = True  # the rest of this turn was cut off; Gemini ends it with turnComplete

    def _turn_complete(self, out: Outbox, now: float) -> None:
        self.suppress = False
        self.close_response(out, "completed")
        self.conversation.finish_user_item(out)
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
            self.conversation.remember_call(call_id, name)
            args = call.get("args")
            arguments = orjson.dumps(args if isinstance(args, dict) else {}).decode()
            response.function_call(out, call_id, name, arguments)
        # OpenAI ends a response at its function calls; the client answers with outputs.
        self.close_response(out, "completed")
        self.conversation.finish_user_item(out)
        self.suppress = False

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


def _failed(code: str) -> dict[str, object]:
    """``status_details`` of a response that Gemini's connection ended under."""
    return {"type": "failed", "error": {"type": "server_error", "code": code}}


_CLIENT_HANDLERS: Final[dict[str, Handler]] = {
    "session.update": GeminiTranslator._session_update,
    **HANDLERS,
}

__all__ = ["RECONNECT_MARGIN", "GeminiTranslator", "parse_duration"]
