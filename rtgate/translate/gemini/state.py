"""One Gemini Live session's state, and the steps every handler shares.

Pure. :class:`GeminiState` is everything the translator knows about a session:
its :class:`Phase`, the client's session and the setup built from it, input
held back while a setup is under way, the open response, the user's turn, the
resumption handle and the reconnect plan. The client-event handlers
(:mod:`~rtgate.translate.gemini.input`) and Gemini's output
(:mod:`~rtgate.translate.gemini.output`) take this state, never the
translator, so neither imports the other or the translator.

The session's phases::

    CONFIG --first session.update, or setup_wait elapsed--> SETUP_SENT
        (client events other than session.update are held raw, then replayed)
    SETUP_SENT --setupComplete--> LIVE
        (messages for Gemini are held in order, then flushed)
    LIVE --goAway, or a session.update that changes the setup--> RECONNECTING
        (at once when no response is open; otherwise at turnComplete, or at the
        goAway deadline less RECONNECT_MARGIN at the latest)
    RECONNECTING --reconnected: setup with the latest resumption handle--> SETUP_SENT
    RECONNECTING --the redial failed--> LIVE, the old connection carrying on (error event)
    any --the upstream closed--> CLOSED (error event unless 1000/1001; client closed)
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from rtgate.translate.base import Outbox, Reconnect, error_event, new_id
from rtgate.translate.ga.events import server_event
from rtgate.translate.ga.response import ResponseWriter
from rtgate.translate.gemini.audio import ClientAudio
from rtgate.translate.gemini.items import Conversation
from rtgate.translate.gemini.setup import SessionPlan, build_plan, default_session, session_echo
from rtgate.translate.gemini.usage import map_usage

RECONNECT_MARGIN: Final = 3.0
"""Seconds before a ``goAway`` deadline at which rtgate stops waiting for the turn to end."""


class Phase(enum.Enum):
    """Where the session is in its life across connections (see the module docstring)."""

    CONFIG = "config"
    SETUP_SENT = "setup_sent"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


_LIVE: Final = Phase.LIVE  # read per audio frame: a global is cheaper than Enum.attr


def _plan(state: GeminiState) -> SessionPlan:
    return build_plan(state.session, state.model_path)


@attrs.define(eq=False)
class GeminiState:
    """One session translated for Gemini Live."""

    model_path: str
    model_group: str
    session_id: str
    vertex: bool = False
    setup_wait: float = 2.0
    max_buffered_bytes: int = 8 * 1024 * 1024
    max_buffered_frames: int = 2000
    secrets: tuple[str, ...] = ()

    phase: Phase = Phase.CONFIG
    conversation_id: str = attrs.field(factory=lambda: new_id("conv"))
    session: dict[str, Any] = attrs.field(
        default=attrs.Factory(lambda self: default_session(self.model_group), takes_self=True)
    )
    """The GA session the client asked for, merged from its ``session.update`` events."""
    plan: SessionPlan = attrs.field(default=attrs.Factory(_plan, takes_self=True))
    sent_setup: dict[str, Any] | None = None
    """The setup the current connection was opened with (without ``sessionResumption``)."""
    handle: str | None = None
    """Gemini's latest session resumption handle."""
    deadline: float | None = None

    # Input held back: raw client events before the setup exists, then upstream frames until
    # setupComplete. (frame, is_audio) so input_audio_buffer.clear can drop audio.
    raw_queue: list[bytes] = attrs.field(factory=list)
    pending: list[tuple[bytes, bool]] = attrs.field(factory=list)
    buffered_bytes: int = 0
    overflowing: bool = False
    announce_update: bool = False
    """A ``session.updated`` is owed once the new setup is complete."""
    input_sent: bool = False
    """Something reached Gemini that resumption must keep."""
    setup_deadline: float | None = None
    goaway_deadline: float | None = None
    reconnect_wanted: str | None = None
    reconnect_requested: bool = False

    response: ResponseWriter | None = None
    conversation: Conversation = attrs.field(factory=Conversation)
    usage: dict[str, Any] | None = None
    """Gemini's latest ``usageMetadata`` of this turn."""
    audio_out: ClientAudio = attrs.field(factory=ClientAudio)
    suppress: bool = False
    """Drop Gemini's output until this turn ends (interrupted or cancelled)."""
    activity_open: bool = False
    """``activityStart`` sent without its ``activityEnd`` (client-driven turns)."""
    input_since_response: bool = False
    pending_content: bool = False
    """User content items waiting for ``turnComplete``."""

    # -- input held while a setup is under way -------------------------------------------

    def send_upstream(self, out: Outbox, message: bytes, *, is_audio: bool = False) -> None:
        """Send to Gemini now, or hold until the current setup is complete (order kept)."""
        if self.phase is _LIVE:
            out.to_upstream.append(message)
            self.input_sent = True
        elif self.reserve(len(message), out):
            self.pending.append((message, is_audio))

    def drop_held_audio(self) -> None:
        """Forget audio not yet sent to Gemini (held while a setup is under way)."""
        kept: list[tuple[bytes, bool]] = [(f, a) for f, a in self.pending if not a]
        self.pending = kept
        self.buffered_bytes = sum(len(f) for f, _ in kept) + sum(len(f) for f in self.raw_queue)

    def hold_raw(self, frame: bytes, out: Outbox) -> None:
        """Keep a client event until the first setup exists (replayed then)."""
        if self.reserve(len(frame), out):
            self.raw_queue.append(frame)

    def reserve(self, size: int, out: Outbox) -> bool:
        """Room for ``size`` more held bytes? Says so once when there is none."""
        held = len(self.raw_queue) + len(self.pending)
        if self.buffered_bytes + size > self.max_buffered_bytes or held >= self.max_buffered_frames:
            if not self.overflowing:
                self.overflowing = True
                out.client_json(
                    error_event(
                        "input arrived faster than the Gemini session could be set up; rtgate holds at most "
                        f"{self.max_buffered_bytes} bytes and dropped the excess",
                        error_type="server_error",
                        code="input_buffer_full",
                    )
                )
            return False
        self.buffered_bytes += size
        return True

    def flush_pending(self, out: Outbox) -> None:
        """Send everything held for Gemini, in order."""
        if self.pending:
            out.to_upstream.extend(frame for frame, _ in self.pending)
            self.input_sent = True
        self.pending.clear()
        self.buffered_bytes = sum(len(f) for f in self.raw_queue)
        self.overflowing = False

    # -- the setup ---------------------------------------------------------------------

    def send_setup(self, out: Outbox) -> None:
        """The setup for a new connection, resuming the conversation if Gemini offered it."""
        setup = dict(self.plan.setup)
        self.sent_setup = dict(setup)
        setup["sessionResumption"] = {"handle": self.handle} if self.handle else {}
        out.upstream_json({"setup": setup})
        self.phase = Phase.SETUP_SENT

    def setup_complete(self, out: Outbox) -> None:
        if self.phase is not Phase.SETUP_SENT:
            return  # a late answer from a connection being replaced
        self.phase = Phase.LIVE
        if self.announce_update:
            self.announce_update = False
            out.client_json(self.session_event("session.updated"))
        self.flush_pending(out)

    def session_event(self, kind: str) -> dict[str, object]:
        """``session.created`` / ``session.updated`` with the session in effect."""
        return server_event(kind, session=session_echo(self.session, self.plan, self.session_id))

    def session_updated(self, out: Outbox) -> None:
        """``session.updated`` now if live, else once the setup under way completes."""
        if self.phase is Phase.LIVE:
            out.client_json(self.session_event("session.updated"))
        else:
            self.announce_update = True

    # -- responses -----------------------------------------------------------------------

    def open_response(self) -> ResponseWriter | None:
        """The response under way, if there is one."""
        response = self.response
        return response if response is not None and not response.closed else None

    def ensure_response(self, out: Outbox) -> ResponseWriter:
        """The response under way, or a new one (announcing the user's turn first)."""
        response = self.open_response()
        if response is None:
            if not self.plan.manual_activity:
                self.conversation.announce_user_item(out)
            response = self.response = ResponseWriter(
                out,
                modality="text" if self.plan.text_output else "audio",
                output_format=self.plan.output_format.as_openai(),
                voice=self.plan.voice,
                max_output_tokens=self.session.get("max_output_tokens", "inf"),
                conversation=self.conversation.chain,
                conversation_id=self.conversation_id,
            )
            self.input_since_response = False
            self.pending_content = False
        return response

    def close_response(
        self, out: Outbox, status: str, details: object = None, *, with_usage: bool = True
    ) -> None:
        """``response.done`` for the open response, with the turn's usage unless told not to."""
        response = self.open_response()
        if response is None:
            return
        usage = map_usage(self.usage) if with_usage and self.usage is not None else None
        if usage is not None:
            self.usage = None
        response.close(out, status, details, usage)
        self.audio_out.reset()

    # -- reconnects ----------------------------------------------------------------------

    def want_reconnect(
        self, out: Outbox, reason: str, now: float, *, deadline: float | None
    ) -> None:
        """Redial now if no response is open; else after this turn, or at ``deadline``."""
        if self.reconnect_requested:
            return
        if self.open_response() is None:
            self.reconnect_now(out, reason)
            return
        self.reconnect_wanted = reason
        if deadline is not None:
            self.goaway_deadline = deadline
        self.refresh_deadline()

    def reconnect_now(self, out: Outbox, reason: str) -> None:
        self.reconnect_wanted = None
        self.goaway_deadline = None
        self.reconnect_requested = True
        self.phase = Phase.RECONNECTING
        out.reconnect = Reconnect(reason)
        self.refresh_deadline()

    def refresh_deadline(self) -> None:
        candidates = [d for d in (self.setup_deadline, self.goaway_deadline) if d is not None]
        self.deadline = min(candidates) if candidates else None


def failed(code: str) -> dict[str, object]:
    """``status_details`` of a response that Gemini's connection ended under."""
    return {"type": "failed", "error": {"type": "server_error", "code": code}}
