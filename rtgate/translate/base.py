"""The translator seam: pure, synchronous, per-session protocol logic.

A :class:`Translator` sits between the client (always OpenAI Realtime GA after
the beta bridge) and one upstream. The relay feeds it what arrives and carries
out what it appends to an :class:`Outbox`; it never awaits, never reads a clock
(time comes in as ``now``) and never touches a socket, so it is tested with
plain function calls.

Frames are WebSocket messages: ``bytes`` is a *text* message (UTF-8 JSON, as
received or as ``orjson.dumps`` produces it, so passthrough never decodes);
:class:`rtgate.wire.Binary` wraps a binary message. For non-WebSocket upstreams (Bedrock)
the upstream transport delivers and takes the provider's event JSON as
``bytes`` in the same way.

Life of a session, as the relay drives it::

    t = provider.translator(deployment, ctx)
    t.start(out, now)                 # once, after the upstream is connected
    t.on_client(frame, out, now)      # each client message
    t.on_upstream(frame, out, now)    # each upstream message
    t.on_timer(out, now)              # when now >= t.deadline
    t.on_reconnected(out, now)        # after the relay honoured out.reconnect
    t.on_reconnect_failed(reason, out, now)  # ...or could not: the old upstream carries on
    t.on_upstream_closed(code, reason, out, now, error_type=...)
    t.on_client_closed(out, now)      # last chance to say goodbye upstream
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import Any, Final

import attrs
import orjson

from rtgate.protocol.events import parse_event
from rtgate.wire import Frame


@attrs.frozen(slots=True)
class CloseClient:
    """End the client's WebSocket with this close code and reason."""

    code: int
    reason: str = ""


@attrs.frozen(slots=True)
class Reconnect:
    """Dial the same deployment again (for example before a Gemini ``goAway``).

    The relay keeps the client connected, dials, swaps the new upstream in, calls
    :meth:`Translator.on_reconnected` and closes the old upstream. Until then
    frames for the upstream keep going to the old connection.
    """

    reason: str = ""


@attrs.define(slots=True)
class Outbox:
    """What one or more translator calls ask the relay to do, in order per direction."""

    to_client: list[Frame] = attrs.field(factory=list)
    to_upstream: list[Frame] = attrs.field(factory=list)
    close: CloseClient | None = None
    """Set once: close the client after sending ``to_client`` (and the upstream too)."""
    reconnect: Reconnect | None = None
    usage: dict[str, int] | None = None
    """Token usage of the responses finished in this batch, summed (see :meth:`add_usage`)."""
    responses_done: int = 0
    """How many responses finished in this batch."""

    def client_json(self, event: dict[str, object]) -> None:
        """Queue one JSON event for the client."""
        self.to_client.append(orjson.dumps(event))

    def upstream_json(self, message: dict[str, object]) -> None:
        """Queue one JSON message for the upstream."""
        self.to_upstream.append(orjson.dumps(message))

    def add_usage(self, usage: dict[str, int] | None) -> None:
        """Record one finished response and its flattened usage (several may end in one batch)."""
        self.responses_done += 1
        if not usage:
            return
        if self.usage is None:
            self.usage = dict(usage)
        else:
            total = self.usage
            for key, value in usage.items():
                total[key] = total.get(key, 0) + value

    def clear(self) -> None:
        self.to_client.clear()
        self.to_upstream.clear()
        self.close = None
        self.reconnect = None
        self.usage = None
        self.responses_done = 0


_ID_PREFIX: Final = os.urandom(4).hex()
_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    """A process-unique id in OpenAI's style (``event_…``, ``resp_…``, ``item_…``)."""
    return f"{prefix}_{_ID_PREFIX}{next(_counter):012x}"


def error_event(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    event_id: str | None = None,
    param: str | None = None,
) -> dict[str, object]:
    """An OpenAI-style ``error`` server event (GA and beta share the shape)."""
    error: dict[str, object] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    if event_id is not None:
        error["event_id"] = event_id
    return {"type": "error", "event_id": new_id("event"), "error": error}


def invalid_audio_error() -> dict[str, object]:
    """The ``error`` event for an append whose ``audio`` is missing or not base64."""
    return error_event(
        "input_audio_buffer.append needs base64 'audio'", code="invalid_value", param="audio"
    )


def get_path(mapping: object, *path: str) -> Any:
    """``mapping[path[0]][path[1]]...``, or None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


_RESPONSE_DONE: Final = b'"response.done"'


def flatten_usage(usage: dict[str, object], prefix: str = "") -> dict[str, int]:
    """``{"input_token_details": {"audio_tokens": 3}}`` -> ``{"input_token_details.audio_tokens": 3}``."""
    flat: dict[str, int] = {}
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            flat[prefix + key] = value
        elif isinstance(value, dict):
            flat.update(flatten_usage(value, f"{prefix}{key}."))
    return flat


def usage_from_response_done(frame: bytes) -> dict[str, int] | None:
    """Flattened integer usage of a ``response.done`` event, or None."""
    event = parse_event(frame)
    if event is None or event.get("type") != "response.done":
        return None
    response = event.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    return flatten_usage(usage) if isinstance(usage, dict) else {}


# Close codes a client may see verbatim: normal/going away and the application range.
_PASSTHROUGH_CODES: Final = frozenset({1000, 1001})


def client_close_code(upstream_code: int) -> int:
    """Close code for the client when the upstream closed with ``upstream_code``.

    1000/1001 and the application range 3000-4999 pass through; anything else
    (abnormal end, protocol errors, internal errors) becomes 1011.
    """
    if upstream_code in _PASSTHROUGH_CODES or 3000 <= upstream_code <= 4999:
        return upstream_code
    return 1011


class Translator:
    """Base class: every hook has a sensible default so a subclass adds only what differs.

    Subclasses must stay pure and synchronous. ``deadline`` is the absolute time
    (same clock as ``now``) at which :meth:`on_timer` should run, or None.
    """

    deadline: float | None = None

    def start(self, out: Outbox, now: float) -> None:
        """The upstream is connected; emit any synthetic or initial messages."""

    def on_client(self, frame: Frame, out: Outbox, now: float) -> None:
        """A client message (GA protocol)."""
        out.to_upstream.append(frame)

    def on_upstream(self, frame: Frame, out: Outbox, now: float) -> None:
        """An upstream message. Default: relay it, noting usage from ``response.done``."""
        if type(frame) is bytes and frame.find(_RESPONSE_DONE, 0, 64) >= 0:
            out.add_usage(usage_from_response_done(frame))
        out.to_client.append(frame)

    def on_timer(self, out: Outbox, now: float) -> None:
        """``now`` reached :attr:`deadline`."""
        self.deadline = None

    def on_reconnected(self, out: Outbox, now: float) -> None:
        """A requested :class:`Reconnect` completed; queue the new upstream's first frames."""

    def on_reconnect_failed(self, reason: str, out: Outbox, now: float) -> None:
        """A requested :class:`Reconnect` could not be dialed; the old upstream is still open.

        Default: a translator that cannot carry on with the old connection ends the
        session as if the upstream had failed (1011).
        """
        self.on_upstream_closed(1011, f"reconnect failed: {reason}", out, now)

    def on_upstream_closed(
        self, code: int, reason: str, out: Outbox, now: float, *, error_type: str | None = None
    ) -> None:
        """The upstream ended. Default: pass normal closes through, else ``error`` + close."""
        client_code = client_close_code(code)
        if client_code not in _PASSTHROUGH_CODES:
            kind = "invalid_request_error" if 3000 <= code <= 4999 else "server_error"
            detail = f": {reason}" if reason else ""
            out.client_json(
                error_event(
                    f"upstream closed the session ({code}){detail}",
                    error_type=kind,
                    code=error_type or f"upstream_{code}",
                )
            )
        out.close = CloseClient(client_code, reason)

    def on_client_closed(self, out: Outbox, now: float) -> None:
        """The client left; frames queued here are sent upstream before it is closed."""
