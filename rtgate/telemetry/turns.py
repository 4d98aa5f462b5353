"""Response turns, noticed on the frames a session sends its client without looking at audio.

A turn runs from its anchor (the end of the user's speech, a commit, or else
``response.created``) through the response's first ``response.output_audio.delta``
to ``response.done``. The watch reads GA event types with a bounded byte search
(the first :data:`WINDOW` bytes of a frame) and only while no response is
streaming audio: from the first audio delta of a response until its
``response.done`` (which the translator already counts, see
``Outbox.responses_done``) it looks at nothing, so an audio delta costs one
attribute check per batch and is never searched. ``response.done`` itself is
parsed once per response, at its end, for the response id, status, function
calls and usage.

Pure: time comes in from the caller (``clock`` is called only when an event is
found), and finished turns go to the ``on_turn`` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import attrs

from rtgate.protocol.events import parse_event
from rtgate.wire import Frame

WINDOW: Final = 128
"""Bytes of a frame searched for its type (``event_id`` may come before ``type``)."""

_CREATED: Final = b'"response.created"'
_AUDIO: Final = b'"response.output_audio.delta"'
_DONE: Final = b'"response.done"'
_ANCHORS: Final = (
    (b'"input_audio_buffer.speech_stopped"', "speech_stopped"),
    (b'"input_audio_buffer.committed"', "committed"),
)
_SPEECH_STARTED: Final = b'"input_audio_buffer.speech_started"'

_IDLE, _AWAITING_AUDIO, _STREAMING = 0, 1, 2


@attrs.define(slots=True)
class Turn:
    """One finished response, with the times (the caller's clock) that matter to a listener."""

    anchor: float
    """When the turn started: the end of the user's speech, the commit, or ``response.created``."""
    started_by: str
    """``speech_stopped``, ``committed``, ``response.created`` or ``response.done`` (nothing seen)."""
    done: float
    created: float | None = None
    first_audio: float | None = None
    response_id: str | None = None
    status: str | None = None
    function_calls: tuple[str, ...] = ()
    """Names of the functions the response called, in order."""
    usage: dict[str, int] = attrs.field(factory=dict)
    """``input_tokens``, ``output_tokens``, ``total_tokens`` of this response (when reported)."""

    @property
    def time_to_first_audio(self) -> float | None:
        return None if self.first_audio is None else self.first_audio - self.anchor

    @property
    def time_to_done(self) -> float:
        return self.done - self.anchor


class TurnWatch:
    """Per session: feed it outgoing client batches while :attr:`scanning`, and the batches
    in which responses finished; it calls ``on_turn`` once per finished response."""

    __slots__ = (
        "_anchor",
        "_anchor_kind",
        "_created",
        "_first_audio",
        "_state",
        "on_turn",
        "scanning",
    )

    def __init__(self, on_turn: Callable[[Turn], None]) -> None:
        self.on_turn = on_turn
        self.scanning = True
        """False while a response streams audio: the caller then skips :meth:`outgoing`."""
        self._state = _IDLE
        self._anchor: float | None = None
        self._anchor_kind = ""
        self._created: float | None = None
        self._first_audio: float | None = None

    def outgoing(self, frames: Sequence[Frame], clock: Callable[[], float]) -> None:
        """A batch about to be sent to the client (GA events)."""
        for frame in frames:
            if type(frame) is not bytes:
                continue
            if self._state == _AWAITING_AUDIO:
                if frame.find(_AUDIO, 0, WINDOW) >= 0:
                    self._first_audio = clock()
                    self._state = _STREAMING
                    self.scanning = False
                    return
            elif frame.find(_CREATED, 0, WINDOW) >= 0:
                self._created = clock()
                if self._anchor is None:
                    self._anchor, self._anchor_kind = self._created, "response.created"
                self._state = _AWAITING_AUDIO
            elif frame.find(_AUDIO, 0, WINDOW) >= 0:
                # Audio of a response whose start was not seen: its first audio is unknown,
                # and the watch stops looking until that response's end.
                self._state = _STREAMING
                self.scanning = False
                return
            else:
                self._idle_event(frame, clock)

    def _idle_event(self, frame: bytes, clock: Callable[[], float]) -> None:
        if frame.find(_SPEECH_STARTED, 0, WINDOW) >= 0:
            self._anchor = None  # the user speaks again: the turn starts when they stop
            return
        if self._anchor is not None:
            return
        for needle, kind in _ANCHORS:
            if frame.find(needle, 0, WINDOW) >= 0:
                self._anchor, self._anchor_kind = clock(), kind
                return

    def finished(self, frames: Sequence[Frame], now: float) -> None:
        """A batch in which the translator counted finished responses (already sent)."""
        for frame in frames:
            if type(frame) is bytes and frame.find(_DONE, 0, WINDOW) >= 0:
                self._finish(frame, now)

    def _finish(self, frame: bytes, now: float) -> None:
        anchor, kind = self._anchor, self._anchor_kind
        if anchor is None:
            anchor, kind = (
                (self._created, "response.created") if self._created else (now, "response.done")
            )
        turn = Turn(
            anchor=anchor,
            started_by=kind,
            done=now,
            created=self._created,
            first_audio=self._first_audio,
        )
        _describe(turn, frame)
        self._state = _IDLE
        self.scanning = True
        self._anchor = self._created = self._first_audio = None
        self._anchor_kind = ""
        self.on_turn(turn)


def _describe(turn: Turn, frame: bytes) -> None:
    """Fill in what ``response.done`` says about the response (parsed once, at its end)."""
    event = parse_event(frame)
    response = event.get("response") if event is not None else None
    if not isinstance(response, dict):
        return
    if isinstance(response.get("id"), str):
        turn.response_id = response["id"]
    if isinstance(response.get("status"), str):
        turn.status = response["status"]
    output = response.get("output")
    if isinstance(output, list):
        turn.function_calls = tuple(
            str(item.get("name"))
            for item in output
            if isinstance(item, dict) and item.get("type") == "function_call"
        )
    usage = response.get("usage")
    if isinstance(usage, dict):
        turn.usage = {
            k: v
            for k in ("input_tokens", "output_tokens", "total_tokens")
            if isinstance(v := usage.get(k), int) and not isinstance(v, bool)
        }
