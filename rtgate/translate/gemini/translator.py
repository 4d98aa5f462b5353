"""Gemini Live (AI Studio and Vertex AI) behind the OpenAI Realtime GA protocol.

Pure translator (no I/O, time arrives as ``now``). :class:`GeminiTranslator`
is the seam the relay drives: it keeps one session's
:class:`~rtgate.translate.gemini.state.GeminiState` (phases, held input,
reconnect plan) across connections, answers ``session.update`` (the one-shot
``setup`` is built from the client's first one, or from defaults after
``setup_wait`` seconds; :mod:`~rtgate.translate.gemini.setup`), dispatches the
other client events to :mod:`~rtgate.translate.gemini.input` and Gemini's
messages to :mod:`~rtgate.translate.gemini.output`, and handles redials and
the end of the upstream.

Mapping reference: the Live API's ``BidiGenerateContent`` messages
(https://ai.google.dev/api/live). Where Gemini has no equivalent of a
client event (truncate, cancel, clear) the client gets the acknowledgement
OpenAI would send and the difference is absorbed locally; client
configuration Gemini cannot honour is reported in an ``error`` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from rtgate.errors import close_reason, scrub
from rtgate.protocol.events import parse_event, sniff_type
from rtgate.translate.base import (
    CloseClient,
    Outbox,
    Translator,
    client_close_code,
    error_event,
    get_path,
)
from rtgate.translate.gemini.input import HANDLERS, append_audio, event_id
from rtgate.translate.gemini.output import on_message, parse_duration
from rtgate.translate.gemini.setup import (
    build_plan,
    changed_setup_fields,
    merge_session,
    parse_format,
)
from rtgate.translate.gemini.state import RECONNECT_MARGIN, GeminiState, Phase, failed
from rtgate.wire import Binary, Frame

_CLOSE_MEANINGS: Final = {
    1007: ("Gemini rejected a request as invalid (1007)", "invalid_request_error", 1008),
    1008: ("Gemini refused the session (1008)", "invalid_request_error", 1008),
    1011: ("Gemini failed internally (1011)", "server_error", 1011),
}
"""Gemini's close codes: what the client is told, the error type, the client's close code."""
_CLOSED: Final = Phase.CLOSED  # read per client frame: a global is cheaper than Enum.attr
_CONFIG: Final = Phase.CONFIG


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
        self.state = GeminiState(
            model_path=model_path,
            model_group=model_group,
            session_id=session_id,
            vertex=vertex,
            setup_wait=setup_wait,
            max_buffered_bytes=max_buffered_bytes,
            max_buffered_frames=max_buffered_frames,
            secrets=secrets,
        )

    @property
    def deadline(self) -> float | None:
        return self.state.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.state.deadline = value

    # -- lifecycle -------------------------------------------------------------------

    def start(self, out: Outbox, now: float) -> None:
        s = self.state
        out.client_json(s.session_event("session.created"))
        s.setup_deadline = now + s.setup_wait
        s.refresh_deadline()

    def on_timer(self, out: Outbox, now: float) -> None:
        s = self.state
        if s.setup_deadline is not None and now >= s.setup_deadline and s.phase is Phase.CONFIG:
            s.setup_deadline = None
            self._send_first_setup(out, now)
        if s.goaway_deadline is not None and now >= s.goaway_deadline:
            s.goaway_deadline = None
            if s.reconnect_wanted is not None and not s.reconnect_requested:
                s.reconnect_now(out, s.reconnect_wanted)
        s.refresh_deadline()

    def on_reconnected(self, out: Outbox, now: float) -> None:
        s = self.state
        s.reconnect_requested = False
        s.goaway_deadline = None
        s.refresh_deadline()
        # The old connection is gone mid-answer; Gemini does not resume a generation.
        s.close_response(out, "failed", failed("upstream_reconnected"))
        s.suppress = False
        s.activity_open = False
        s.send_setup(out)

    def on_reconnect_failed(self, reason: str, out: Outbox, now: float) -> None:
        """The old connection is still in use: carry on with it and say what was lost."""
        s = self.state
        if not s.reconnect_requested or s.phase is Phase.CLOSED:
            return
        s.reconnect_requested = False
        s.phase = Phase.LIVE if s.sent_setup is not None else Phase.CONFIG
        note = (
            "the session.update was not applied"
            if s.announce_update
            else "the session may end soon"
        )
        s.announce_update = False
        out.client_json(
            error_event(
                f"could not reconnect to Gemini Live ({scrub(reason, s.secrets)}); {note}",
                error_type="server_error",
                code="upstream_reconnect_failed",
            )
        )
        s.flush_pending(out)

    def on_upstream_closed(
        self, code: int, reason: str, out: Outbox, now: float, *, error_type: str | None = None
    ) -> None:
        s = self.state
        reason = scrub(reason, s.secrets)
        if s.phase is Phase.CLOSED:
            return
        s.phase = Phase.CLOSED
        s.deadline = None
        s.close_response(out, "failed", failed(f"upstream_{code}"))
        detail = f": {reason}" if reason else ""
        if code in (1000, 1001):
            out.close = CloseClient(code, close_reason(reason, s.secrets))
            return
        if code in _CLOSE_MEANINGS:
            said, kind, client_code = _CLOSE_MEANINGS[code]
            message = said + detail
        else:
            message = f"Gemini closed the session ({code}){detail}"
            kind = "invalid_request_error" if 3000 <= code <= 4999 else "server_error"
            client_code = client_close_code(code)
        out.client_json(
            error_event(message, error_type=kind, code=error_type or f"upstream_{code}")
        )
        out.close = CloseClient(client_code, close_reason(reason or message, s.secrets))

    # -- client -> Gemini ----------------------------------------------------------------

    def on_client(self, frame: Frame, out: Outbox, now: float) -> None:
        s = self.state
        phase = s.phase
        if phase is _CLOSED:
            return
        if isinstance(frame, Binary):
            out.client_json(
                error_event(
                    "binary messages are not part of the Realtime protocol", code="invalid_value"
                )
            )
            return
        kind = sniff_type(frame)
        if phase is _CONFIG and kind != "session.update":
            s.hold_raw(frame, out)
            return
        if kind == "input_audio_buffer.append":
            append_audio(s, frame, out)
            return
        event = parse_event(frame)
        if event is None or not isinstance(kind, str):
            out.client_json(
                error_event("the message is not a JSON object with a type", code="invalid_json")
            )
            return
        if kind == "session.update":
            self._session_update(event, out, now)
            return
        handler = HANDLERS.get(kind)
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
        handler(s, event, out, now)

    # -- session.update and the setup ------------------------------------------------------

    def _session_update(self, event: dict[str, Any], out: Outbox, now: float) -> None:
        s = self.state
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
        merged = merge_session(s.session, session)
        plan = build_plan(merged, s.model_path)
        if plan.ignored:
            out.client_json(
                error_event(
                    "Gemini Live cannot apply: " + "; ".join(plan.ignored),
                    code="unsupported_session_config",
                    param="session",
                )
            )
        if s.phase is Phase.CONFIG:
            s.session, s.plan = merged, plan
            self._send_first_setup(out, now)
            # Answered at once, like OpenAI, so it precedes the acks of later events; a setup
            # Gemini rejects still ends in an error event and a close.
            out.client_json(s.session_event("session.updated"))
            return
        changed = changed_setup_fields(s.sent_setup or {}, plan.setup)
        if not changed:
            s.session, s.plan = merged, plan
            s.session_updated(out)
            return
        if s.input_sent and s.handle is None:
            # A fresh connection would forget the conversation: keep the old setup, apply only
            # what rtgate does locally (audio formats), and say what was not applied.
            local: dict[str, Any] = {}
            for side in ("input", "output"):
                fmt = get_path(session, "audio", side, "format")
                if fmt is not None and parse_format(fmt) is not None:
                    local.setdefault("audio", {})[side] = {"format": fmt}
            s.session = merge_session(s.session, local)
            s.plan = build_plan(s.session, s.model_path)
            out.client_json(
                error_event(
                    "Gemini Live fixes these settings when the session starts and has not yet offered a "
                    "resumption point, so they were not changed: " + ", ".join(changed),
                    code="session_update_not_applied",
                    param="session",
                )
            )
            s.session_updated(out)
            return
        s.session, s.plan = merged, plan
        s.announce_update = True
        s.want_reconnect(out, "session.update changed " + ", ".join(changed), now, deadline=None)

    def _send_first_setup(self, out: Outbox, now: float) -> None:
        s = self.state
        s.setup_deadline = None
        s.send_setup(out)
        raw, s.raw_queue = s.raw_queue, []
        s.buffered_bytes = 0
        s.overflowing = False
        for frame in raw:
            self.on_client(frame, out, now)
        s.refresh_deadline()

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
        on_message(self.state, message, out, now)


__all__ = ["RECONNECT_MARGIN", "GeminiTranslator", "Phase", "parse_duration"]
