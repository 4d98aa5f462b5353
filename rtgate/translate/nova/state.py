"""One Nova Sonic session's state: what the client configured, what Nova was told, what is open.

Pure. :class:`NovaState` is everything the Nova translator knows about a
session; the client-event handlers (:mod:`~rtgate.translate.nova.input`), the
Nova-event handlers (:mod:`~rtgate.translate.nova.output`) and the response
sequence (:mod:`~rtgate.translate.nova.response`) take it, never the
translator, so none of them imports another's caller.

The session's phases::

    WAITING (session.created sent, deadline = setup timeout)
        --first session.update, any other typed client event, or the deadline-->
    OPEN (sessionStart, promptStart, SYSTEM text sent; Nova's settings now fixed)
        --first audio append--> STREAMING (one AUDIO container open)
    OPEN | STREAMING --client left--> CLOSING: contentEnd (audio), promptEnd, sessionEnd
    any --the upstream closed--> CLOSED (open response finished; error unless a clean 1000/1001)

and, on the output side, one response at a time::

    idle --FINAL assistant text, assistant audio or a tool use--> responding
    responding --END_TURN of FINAL text, or a tool use--> done pending
        (response.done held up to USAGE_GRACE for the usageEvent that follows;
        sent at once when any other Nova event or the timer comes first)
    responding --barge-in or response.cancel--> suppressing (response cancelled;
        the rest of the turn dropped)
    responding | suppressing --completionEnd or a new USER text block--> idle
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

import attrs

from rtgate.translate.base import Outbox, new_id
from rtgate.translate.ga.items import ItemChain
from rtgate.translate.ga.response import ResponseWriter
from rtgate.translate.nova.setup import (
    SAMPLE_RATES,
    NovaDefaults,
    SessionConfig,
    opening_events,
    send_upstream,
)


class Phase(enum.Enum):
    """Where the Nova stream is (see the module docstring)."""

    WAITING = "waiting"
    OPEN = "open"
    STREAMING = "streaming"
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.define
class Content:
    """A Nova output content block, by ``contentId``."""

    kind: str
    """TEXT, AUDIO or TOOL."""
    role: str
    stage: str
    """FINAL or SPECULATIVE (FINAL when Nova does not say)."""
    text: list[str] = attrs.field(factory=list)
    tool: dict[str, Any] | None = None
    user_item: str | None = None


@attrs.define(eq=False)
class NovaState:
    """One Nova Sonic session (see the module docstring)."""

    model: str
    defaults: NovaDefaults = attrs.field(factory=NovaDefaults)
    config: SessionConfig = attrs.field(
        default=attrs.Factory(
            lambda self: SessionConfig(model=self.model, voice=self.defaults.voice),
            takes_self=True,
        )
    )
    phase: Phase = Phase.WAITING
    session_id: str = attrs.field(factory=lambda: new_id("sess"))
    prompt: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    deadline: float | None = None
    audio_content: str | None = None
    """The open AUDIO container's ``contentName`` (while STREAMING)."""
    audio_prefix: bytes = b""
    """The ``audioInput`` event up to its base64 content, prebuilt for each append."""
    input_rate: int = 24000
    input_ms: float = 0.0
    turn_start_ms: float = 0.0
    contents: dict[str, Content] = attrs.field(factory=dict)
    chain: ItemChain = attrs.field(factory=ItemChain)
    response: ResponseWriter | None = None
    suppress: bool = False
    """Drop assistant output until the interrupted or cancelled turn is over."""
    pending_user_item: str | None = None
    """The id a speech_started / committed already announced for the next user item."""
    usage: dict[str, int] = attrs.field(factory=dict)
    """This turn's token sums (``in_text``, ``in_audio``, ``out_text``, ``out_audio``)."""
    totals: dict[str, int] = attrs.field(factory=dict)
    done_pending: tuple[ResponseWriter, dict[str, object]] | None = None
    """A finished response whose ``response.done`` waits for its usage."""
    now: float = 0.0
    """When the last Nova event arrived (the base of the usage grace deadline)."""

    @property
    def started(self) -> bool:
        """Nova has been told the session's settings (they are fixed from now on)."""
        return self.phase is not Phase.WAITING

    @property
    def conversation_id(self) -> str:
        return "conv_" + self.session_id.removeprefix("sess_")

    def open_stream(self, out: Outbox) -> None:
        """Send what Nova takes once per stream, from the configuration as it is now."""
        self.phase = Phase.OPEN
        self.deadline = None
        send_upstream(
            out, opening_events(self.config, self.defaults, self.prompt, str(uuid.uuid4()))
        )
        self.input_rate = SAMPLE_RATES[self.config.input_format["type"]]
