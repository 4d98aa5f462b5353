"""The user's side of the conversation as the client sees it, for the Gemini translator.

Pure. Gemini Live has no conversation items: rtgate mints the OpenAI ones. This
module owns the *user's* turn as one ``input_audio`` item (created with the
first audio or transcript of a turn, announced with ``input_audio_buffer.committed``
and ``conversation.item.added``/``done`` when the turn is committed or Gemini
starts answering, its input transcript streamed and completed), the echo of
items the client creates, and the ledger of function calls waiting for the
client's output. The order of all items is the session's :class:`ItemChain`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from rtgate.translate.base import Outbox, new_id
from rtgate.translate.ga import items as ga_items
from rtgate.translate.ga.events import emit
from rtgate.translate.ga.items import ItemChain

MAX_CALL_NAMES: Final = 1024
"""Function calls remembered for their outputs (oldest forgotten first)."""


class Conversation:
    """The user item being built, the conversation's order, and open calls."""

    def __init__(self) -> None:
        self.chain = ItemChain()
        self.user_item: str | None = None
        self.user_announced = False
        self.user_transcript: list[str] = []
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
        emit(out, "input_audio_buffer.committed", previous_item_id=self.chain.last, item_id=item_id)
        self.chain.added_and_done(out, ga_items.user_audio_item(item_id, "completed", None))

    def input_transcript(self, out: Outbox, text: str) -> None:
        item_id = self.user_turn()
        self.user_transcript.append(text)
        ga_items.transcription_delta(out, item_id, text)

    def finish_user_item(self, out: Outbox) -> None:
        """Complete the transcript; forget the item unless audio still awaits its commit."""
        item_id = self.user_item
        if item_id is None:
            return
        if self.user_transcript:
            # Gemini reports no transcription duration; GA requires a usage: zero seconds.
            ga_items.transcription_completed(out, item_id, "".join(self.user_transcript), 0)
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
        """Echo a complete item the client created (``added`` then ``done``)."""
        given = item.get("id")
        item_id = given if isinstance(given, str) and given else new_id("item")
        self.chain.added_and_done(out, ga_items.client_item(item, item_id))

    def remember_call(self, call_id: str, name: str) -> None:
        """A call from Gemini: its name is needed again when the client answers it."""
        self.call_names[call_id] = name
        while len(self.call_names) > MAX_CALL_NAMES:
            self.call_names.popitem(last=False)
