"""OpenAI Realtime GA <-> Amazon Nova Sonic events: the pure translator for Bedrock sessions.

Owns the whole session mapping (Nova's events:
https://docs.aws.amazon.com/nova/latest/userguide/input-events.html and output-events.html) through
:class:`NovaTranslator`: the session's lifecycle and state, and the dispatch
of client events (handlers in :mod:`~rtgate.translate.nova.input`) and Nova
events (handlers in :mod:`~rtgate.translate.nova.output`, the GA response
sequence they build in :mod:`~rtgate.translate.nova.response`); the session
configuration and the Nova events that open a stream live in
:mod:`~rtgate.translate.nova.setup`. Frames to and from the upstream are
Nova's JSON events (``{"event": {name: {...}}}``) as ``bytes``;
``rtgate.aws.h2stream`` does the event-stream framing and signing.

The session's states::

    waiting (session.created sent, deadline = setup timeout)
        --first session.update, any other typed client event, or the deadline-->
    open (sessionStart, promptStart, SYSTEM text sent; Nova's settings now fixed)
        --first audio append--> streaming (one AUDIO container open)
    open | streaming --client left--> closing: contentEnd (audio), promptEnd, sessionEnd
    any --the upstream closed--> closed (open response finished; error unless a clean 1000/1001)

and, on the output side, one response at a time::

    idle --FINAL assistant text, assistant audio or a tool use--> responding
    responding --END_TURN of FINAL text, or a tool use--> done pending
        (response.done held up to USAGE_GRACE for the usageEvent that follows;
        sent at once when any other Nova event or the timer comes first)
    responding --barge-in or response.cancel--> suppressing (response cancelled;
        the rest of the turn dropped)
    responding | suppressing --completionEnd or a new USER text block--> idle

Shape of a session:

* ``start`` answers ``session.created`` at once (Nova says nothing until it
  hears something) and arms :attr:`deadline`: if no ``session.update``
  arrives in time, or the client sends content first, the stream is opened
  with defaults.
* The stream opens with ``sessionStart``, ``promptStart`` (24 kHz PCM16 output
  so audio passes through; 8 kHz for G.711 clients, re-encoded here; voice;
  tools) and the instructions as SYSTEM text. Nova takes this once per
  stream, so a later ``session.update`` that changes it is reported, not
  silently dropped.
* Client audio goes into one AUDIO content container, opened on the first
  append, one ``audioInput`` per append (PCM16 base64 passes through
  untouched; G.711 is decoded and declared at 8 kHz).
* Nova's output becomes the GA response sequence with rtgate-minted ids. The
  assistant transcript comes from the FINAL text stream only (what was
  actually spoken; SPECULATIVE text is a preview and would duplicate it).
  Barge-in (``{"interrupted": true}`` text or an INTERRUPTED stop) becomes
  ``input_audio_buffer.speech_started`` plus a cancelled ``response.done``,
  and the rest of the interrupted turn is dropped. Tool use becomes a
  function call item, and usage from ``usageEvent`` deltas lands in
  ``response.done`` (and :attr:`Outbox.usage`).
* When the client leaves: ``contentEnd`` (audio), ``promptEnd``,
  ``sessionEnd``; the link then sends the empty signed frame and END_STREAM.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from rtgate.protocol.events import sniff_type
from rtgate.translate.base import CloseClient, Outbox, Translator, error_event, new_id
from rtgate.translate.nova import input as nova_input
from rtgate.translate.nova import output as nova_output
from rtgate.translate.nova.output import Content
from rtgate.translate.nova.response import USAGE_GRACE, Response, finish_response, flush_done
from rtgate.translate.nova.setup import (
    SAMPLE_RATES,
    NovaDefaults,
    SessionConfig,
    nova_event,
    opening_events,
    send_session,
    send_upstream,
)
from rtgate.wire import Binary, Frame

__all__ = ["USAGE_GRACE", "NovaDefaults", "NovaTranslator"]


class NovaTranslator(Translator):
    """One Nova Sonic session (see module docstring)."""

    def __init__(self, model: str, defaults: NovaDefaults | None = None) -> None:
        self.defaults = defaults or NovaDefaults()
        self.config = SessionConfig(model=model, voice=self.defaults.voice)
        self.session_id = new_id("sess")
        self.prompt = str(uuid.uuid4())
        self.started = False
        self.closed_upstream = False
        self.audio_content: str | None = None
        """The open AUDIO container's ``contentName``."""
        self.audio_prefix = b""
        """The ``audioInput`` event up to its base64 content, prebuilt for each append."""
        self.input_rate = 24000
        self.input_ms = 0.0
        self.turn_start_ms = 0.0
        self.contents: dict[str, Content] = {}
        self.response: Response | None = None
        self.suppress = False
        """Drop assistant output until the interrupted or cancelled turn is over."""
        self.pending_user_item: str | None = None
        """The id a speech_started / committed already announced for the next user item."""
        self.last_item: str | None = None
        self.usage: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.done_pending: dict[str, Any] | None = None
        """A finished response whose ``response.done`` waits for its usage."""
        self.now = 0.0
        """When the last Nova event arrived (the base of the usage grace deadline)."""

    # -- lifecycle hooks --------------------------------------------------------

    def start(self, out: Outbox, now: float) -> None:
        send_session(out, "session.created", self.config, self.session_id)
        self.deadline = now + self.defaults.setup_timeout

    def on_timer(self, out: Outbox, now: float) -> None:
        self.deadline = None
        if not self.started:
            self.open_stream(out)
        flush_done(self, out)

    def on_client_closed(self, out: Outbox, now: float) -> None:
        flush_done(self, out)
        if not self.started or self.closed_upstream:
            return
        self.closed_upstream = True
        if self.audio_content is not None:
            out.upstream_json(
                nova_event(
                    "contentEnd", {"promptName": self.prompt, "contentName": self.audio_content}
                )
            )
            self.audio_content = None
        out.upstream_json(nova_event("promptEnd", {"promptName": self.prompt}))
        out.upstream_json(nova_event("sessionEnd", {}))

    def on_upstream_closed(
        self, code: int, reason: str, out: Outbox, now: float, *, error_type: str | None = None
    ) -> None:
        flush_done(self, out)
        if error_type is None and code in (1000, 1001):
            finish_response(self, out, "completed")
            out.close = CloseClient(1000, reason)
            return
        kind = "invalid_request_error" if code == 1008 else "server_error"
        message = reason or f"Bedrock closed the stream ({code})"
        finish_response(self, out, "failed", error={"type": kind, "code": error_type})
        out.client_json(
            error_event(message, error_type=kind, code=error_type or f"upstream_{code}")
        )
        # 1008 (validation), 1013 (throttled, try again later) and 1011 are meaningful to clients.
        client_code = code if code in (1008, 1011, 1013) else 1011
        out.close = CloseClient(client_code, message)

    def open_stream(self, out: Outbox) -> None:
        """Send what Nova takes once per stream, from the configuration as it is now."""
        self.started = True
        self.deadline = None
        send_upstream(
            out, opening_events(self.config, self.defaults, self.prompt, str(uuid.uuid4()))
        )
        self.input_rate = SAMPLE_RATES[self.config.input_format["type"]]

    # -- client -> Nova ---------------------------------------------------------

    def on_client(self, frame: Frame, out: Outbox, now: float) -> None:
        if isinstance(frame, Binary):
            out.client_json(error_event("binary messages are not part of the Realtime protocol"))
            return
        if sniff_type(frame) == "input_audio_buffer.append":
            nova_input.append_audio(self, frame, out)  # the hot path: no JSON parse
            return
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError:
            out.client_json(error_event("the message is not valid JSON", code="invalid_json"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            out.client_json(error_event("the event has no type", code="invalid_event"))
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if event["type"] == "session.update":
            nova_input.session_update(self, event, out, event_id)
            return
        if not self.started:
            self.open_stream(out)
        handler = nova_input.HANDLERS.get(event["type"], nova_input.unsupported)
        handler(self, event, out, event_id)

    # -- Nova -> client ---------------------------------------------------------

    def on_upstream(self, frame: Frame, out: Outbox, now: float) -> None:
        raw = frame.data if isinstance(frame, Binary) else frame
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        event = message.get("event") if isinstance(message, dict) else None
        if not isinstance(event, dict) or len(event) != 1:
            return
        ((name, body),) = event.items()
        if not isinstance(body, dict):
            return
        self.now = now
        # A held response.done goes out before anything else Nova says, but after usage.
        if name != "usageEvent":
            flush_done(self, out)
        handler = nova_output.HANDLERS.get(name)
        if handler is not None:
            handler(self, body, out)
        if name == "usageEvent":
            flush_done(self, out)
