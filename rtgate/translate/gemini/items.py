"""The conversation's items as the client sees them, for the Gemini translator.

Pure. Gemini Live has no conversation items: rtgate mints the OpenAI ones. This
module owns the *user's* turn as one ``input_audio`` item (created with the
first audio or transcript of a turn, announced with ``input_audio_buffer.committed``
and ``conversation.item.added``/``done`` when the turn is committed or Gemini
starts answering, its input transcript streamed and completed), the
``previous_item_id`` chain, the echo of items the client creates, and the
ledger of function calls waiting for the client's output.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from rtgate.translate.base import Outbox, new_id

MAX_CALL_NAMES: Final = 1024
"""Function calls remembered for their outputs (oldest forgotten first)."""


class Conversation:
    """The user item being built, the last item of the conversation, and open calls."""

    def __init__(self) -> None:
        self.user_item: str | None = None
        self.user_announced = False
        self.user_transcript: list[str] = []
        self.last_item: str | None = None
        self.audio_since_commit = False
        self.call_names: OrderedDict[str, str] = OrderedDict()
        self.cancelled_calls: set[str] = set()

    # -- the user's turn -------------------------------------------------------------

    def user_turn(self) -> str:
        """The id of the user item of this turn (minted on first use)."""
        if self.user_item is None:
            self.user_item = new_id("item")
            self.user_announced = False
            self.user_transcript = []
        return self.user_item

    def announce_user_item(self, out: Outbox) -> None:
        """``input_audio_buffer.committed`` and the item's added/done, once per item."""
        item_id = self.user_item
        if item_id is None or self.user_announced:
            return
        self.user_announced = True
        out.client_json(
            {
                "type": "input_audio_buffer.committed",
                "event_id": new_id("event"),
                "previous_item_id": self.last_item,
                "item_id": item_id,
            }
        )
        self._added_and_done(
            out,
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        )

    def input_transcript(self, out: Outbox, text: str) -> None:
        item_id = self.user_turn()
        self.user_transcript.append(text)
        out.client_json(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "event_id": new_id("event"),
                "item_id": item_id,
                "content_index": 0,
                "delta": text,
            }
        )

    def finish_user_item(self, out: Outbox) -> None:
        """Complete the transcript; forget the item unless audio still awaits its commit."""
        item_id = self.user_item
        if item_id is None:
            return
        if self.user_transcript:
            out.client_json(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": new_id("event"),
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": "".join(self.user_transcript),
                    "usage": {"type": "duration", "seconds": 0},
                }
            )
            self.user_transcript = []
        if self.user_announced or not self.audio_since_commit:
            self.user_item = None
            self.user_announced = False

    def drop_unannounced(self) -> None:
        """``input_audio_buffer.clear``: a user item nobody has seen yet is gone."""
        if self.user_item is not None and not self.user_announced:
            self.user_item = None
            self.user_transcript = []

    # -- items -----------------------------------------------------------------------

    def item_added(self, out: Outbox, item: Mapping[str, Any]) -> None:
        """Echo a complete item (``added`` then ``done``) and make it the last one."""
        echoed = dict(item)
        echoed.setdefault("id", new_id("item"))
        echoed["object"] = "realtime.item"
        echoed.setdefault("status", "completed")
        self._added_and_done(out, echoed)

    def _added_and_done(self, out: Outbox, item: dict[str, Any]) -> None:
        for kind in ("conversation.item.added", "conversation.item.done"):
            out.client_json(
                {
                    "type": kind,
                    "event_id": new_id("event"),
                    "previous_item_id": self.last_item,
                    "item": item,
                }
            )
        self.last_item = str(item["id"])

    def remember_call(self, call_id: str, name: str) -> None:
        """A call from Gemini: its name is needed again when the client answers it."""
        self.call_names[call_id] = name
        while len(self.call_names) > MAX_CALL_NAMES:
            self.call_names.popitem(last=False)
