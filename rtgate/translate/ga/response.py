"""One GA response as the client sees it, whatever model produced it.

:class:`ResponseWriter` mints the response and item ids and guarantees the GA
shape and order: ``response.created`` first; each assistant message announced
with ``response.output_item.added``, ``conversation.item.added`` (when the
response is in the conversation) and ``response.content_part.added`` before
its deltas, and closed with the ``.done`` events after them; function calls as
whole items; ``response.done`` exactly once, with the usage. Output indices
count the response's items; every message has one content part (index 0).

A provider's translator only feeds it what its model said: :meth:`audio`
(base64 already in the client's format), :meth:`transcript`, :meth:`text`,
:meth:`audio_done`, :meth:`function_call`, then :meth:`close` (or
:meth:`finish` now and :meth:`done` when the usage has arrived).
"""

from __future__ import annotations

from typing import Any

import orjson

from rtgate.translate.base import Outbox, new_id
from rtgate.translate.ga.events import emit, server_event
from rtgate.translate.ga.items import (
    ItemChain,
    ItemStatus,
    Modality,
    assistant_content,
    function_call_item,
    message_item,
    stream_part,
)
from rtgate.translate.ga.usage import Usage


class _Message:
    """The open assistant message: its place in the response and what it said so far."""

    __slots__ = ("audio_done", "id", "output_index", "pieces")

    def __init__(self, item_id: str, output_index: int) -> None:
        self.id = item_id
        self.output_index = output_index
        self.pieces: list[str] = []
        """The transcript (audio) or the text, in deltas."""
        self.audio_done = False

    def part_fields(self) -> dict[str, object]:
        """Where this message's one content part is, as every part event names it."""
        return {"item_id": self.id, "output_index": self.output_index, "content_index": 0}


class ResponseWriter:
    """One response; every method appends GA events to an :class:`Outbox`.

    ``conversation`` is the session's :class:`ItemChain`, or None for an
    out-of-band response (``conversation: "none"``), whose items the
    conversation never sees.
    """

    def __init__(
        self,
        out: Outbox,
        *,
        modality: Modality,
        output_format: object,
        voice: object,
        max_output_tokens: object,
        conversation: ItemChain | None,
        conversation_id: str | None,
        metadata: object = None,
    ) -> None:
        self.id = new_id("resp")
        self.modality: Modality = modality
        self.output_format = output_format
        self.voice = voice
        self.max_output_tokens = max_output_tokens
        self.conversation = conversation
        self.conversation_id = conversation_id
        self.metadata = metadata
        self.items: list[dict[str, Any]] = []
        self._message: _Message | None = None
        self.closed = False
        """Finished: no more output (``response.done`` may still wait for its usage)."""
        self._done = False
        emit(out, "response.created", response=self.body("in_progress"))

    def body(
        self, status: str, status_details: object = None, usage: object = None
    ) -> dict[str, object]:
        """The GA ``response`` object as it stands."""
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": status_details,
            "output": self.items,
            "conversation_id": self.conversation_id,
            "output_modalities": [self.modality],
            "max_output_tokens": self.max_output_tokens,
            "audio": {"output": {"format": self.output_format, "voice": self.voice}},
            "usage": usage,
            "metadata": self.metadata,
        }

    def _emit(self, out: Outbox, kind: str, **fields: object) -> None:
        out.client_json(server_event(kind, response_id=self.id, **fields))

    def open_message(self, out: Outbox) -> _Message:
        """The assistant message being said, announced now if there is none (or its audio ended)."""
        message = self._message
        if message is not None and not message.audio_done:
            return message
        if message is not None:
            self.finish_message(out)
        message = self._message = _Message(new_id("item"), len(self.items))
        item = message_item(message.id, "assistant", "in_progress", [])
        self.items.append(item)
        self._emit(out, "response.output_item.added", output_index=message.output_index, item=item)
        if self.conversation is not None:
            self.conversation.added(out, item)
        self._emit(
            out,
            "response.content_part.added",
            **message.part_fields(),
            part=stream_part(self.modality, ""),
        )
        return message

    # -- model output ----------------------------------------------------------------

    def audio(self, out: Outbox, data: str) -> None:
        """A base64 audio chunk, already in the client's output format (audio responses only)."""
        if self.modality != "audio" or self.closed:
            return
        message = self._message
        if message is None or message.audio_done:
            message = self.open_message(out)
        # Per audio frame: one dict literal and orjson, no helper calls. (A bytes template
        # with a base64 check measured slower: the check alone costs more than the encoder.)
        out.to_client.append(
            orjson.dumps(
                {
                    "type": "response.output_audio.delta",
                    "event_id": new_id("event"),
                    "response_id": self.id,
                    "item_id": message.id,
                    "output_index": message.output_index,
                    "content_index": 0,
                    "delta": data,
                }
            )
        )

    def transcript(self, out: Outbox, text: str) -> None:
        """Words of the spoken answer (audio responses only)."""
        if self.modality != "audio" or self.closed:
            return
        message = self._message
        if message is None:
            message = self.open_message(out)
        message.pieces.append(text)
        self._emit(
            out, "response.output_audio_transcript.delta", **message.part_fields(), delta=text
        )

    def text(self, out: Outbox, text: str) -> None:
        """Words of a text answer (text responses only)."""
        if self.modality != "text" or self.closed:
            return
        message = self.open_message(out)
        message.pieces.append(text)
        self._emit(out, "response.output_text.delta", **message.part_fields(), delta=text)

    def audio_done(self, out: Outbox) -> None:
        """The model finished speaking: the audio ends; late transcript may still come."""
        message = self._message
        if message is not None and self.modality == "audio" and not message.audio_done:
            message.audio_done = True
            self._emit(out, "response.output_audio.done", **message.part_fields())

    def finish_message(self, out: Outbox, status: ItemStatus = "completed") -> None:
        """Close the open message (its part, its item) if there is one."""
        message = self._message
        if message is None:
            return
        self._message = None
        common = message.part_fields()
        said = "".join(message.pieces)
        if self.modality == "audio":
            if not message.audio_done:
                self._emit(out, "response.output_audio.done", **common)
            self._emit(out, "response.output_audio_transcript.done", **common, transcript=said)
        else:
            self._emit(out, "response.output_text.done", **common, text=said)
        self._emit(
            out, "response.content_part.done", **common, part=stream_part(self.modality, said)
        )
        item = self.items[message.output_index]
        item["status"] = status
        item["content"] = [assistant_content(self.modality, said)]
        self._emit(out, "response.output_item.done", output_index=message.output_index, item=item)
        if self.conversation is not None:
            self.conversation.done(out, item)

    def function_call(self, out: Outbox, call_id: str, name: str, arguments: str) -> None:
        """One complete function call as a GA ``function_call`` item."""
        if self.closed:
            return
        self.finish_message(out)
        item_id = new_id("item")
        index = len(self.items)
        item = function_call_item(item_id, call_id, name, "", "in_progress")
        self.items.append(item)
        self._emit(out, "response.output_item.added", output_index=index, item=item)
        if self.conversation is not None:
            self.conversation.added(out, item)
        common = {"item_id": item_id, "output_index": index, "call_id": call_id}
        self._emit(out, "response.function_call_arguments.delta", **common, delta=arguments)
        self._emit(
            out, "response.function_call_arguments.done", **common, name=name, arguments=arguments
        )
        item["status"] = "completed"
        item["arguments"] = arguments
        self._emit(out, "response.output_item.done", output_index=index, item=item)
        if self.conversation is not None:
            self.conversation.done(out, item)

    # -- the end -----------------------------------------------------------------------

    def finish(self, out: Outbox, status: str, status_details: object = None) -> dict[str, object]:
        """No more output: close any open item; the ``response`` for :meth:`done`."""
        if not self.closed:
            self.finish_message(out, "completed" if status == "completed" else "incomplete")
            self.closed = True
        return self.body(status, status_details)

    def done(self, out: Outbox, response: dict[str, object], usage: Usage | None) -> None:
        """``response.done`` (once) with ``usage``, counted in :attr:`Outbox.responses_done`."""
        if self._done:
            return
        self._done = True
        response["usage"] = usage.as_ga() if usage is not None else None
        emit(out, "response.done", response=response)
        out.add_usage(usage.record() if usage is not None else None)

    def close(
        self, out: Outbox, status: str, status_details: object = None, usage: Usage | None = None
    ) -> None:
        """:meth:`finish` and :meth:`done` at once."""
        self.done(out, self.finish(out, status, status_details), usage)
