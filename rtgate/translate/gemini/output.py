"""The OpenAI GA server-event sequence for one response, built from Gemini's output.

Pure. Gemini has no response or item ids; :class:`ResponseWriter` mints them
and guarantees the GA shape: ``response.created`` first, every item and content
part ``added`` before its deltas and ``done`` after them, ``response.done``
exactly once. It also maps Gemini ``usageMetadata`` (AI Studio and Vertex field
names) onto GA ``usage``, and turns Gemini's audio (PCM16, 24 kHz) into the
client's output format with :class:`ClientAudio`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

from rtgate.translate import audio
from rtgate.translate.base import Outbox, flatten_usage, new_id
from rtgate.translate.gemini.setup import OUTPUT_RATE, PCM24, AudioFormat

_RATE: Final = re.compile(r"rate=(\d+)")
_BASE64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_AUDIO_DELTA: Final = (
    b'{"type":"response.output_audio.delta","event_id":"%s","response_id":"%s",'
    b'"item_id":"%s","output_index":%d,"content_index":0,"delta":"%s"}'
)
_G711_RATE: Final = 8000


class _MessageItem:
    __slots__ = ("audio_done", "audio_seen", "id", "kind", "output_index", "text", "transcript")

    def __init__(self, item_id: str, output_index: int, kind: str) -> None:
        self.id = item_id
        self.output_index = output_index
        self.kind = kind  # "output_audio" | "output_text"
        self.transcript: list[str] = []
        self.text: list[str] = []
        self.audio_seen = False
        self.audio_done = False

    def part_fields(self) -> dict[str, object]:
        """Where this item's one content part is, as every part event names it."""
        return {"item_id": self.id, "output_index": self.output_index, "content_index": 0}


class ResponseWriter:
    """One open response; every method appends GA events to an :class:`Outbox`."""

    def __init__(
        self,
        out: Outbox,
        *,
        conversation_id: str,
        text_output: bool,
        output_format: dict[str, object],
        voice: str,
        max_output_tokens: object,
    ) -> None:
        self.id = new_id("resp")
        self.conversation_id = conversation_id
        self.text_output = text_output
        self.output_format = output_format
        self.voice = voice
        self.max_output_tokens = max_output_tokens
        self.items: list[dict[str, Any]] = []
        self._message: _MessageItem | None = None
        self.closed = False
        out.client_json(
            {
                "type": "response.created",
                "event_id": new_id("event"),
                "response": self._body("in_progress"),
            }
        )

    # -- building blocks -----------------------------------------------------------

    def _body(
        self, status: str, status_details: object = None, usage: object = None
    ) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": status_details,
            "output": self.items,
            "conversation_id": self.conversation_id,
            "output_modalities": ["text"] if self.text_output else ["audio"],
            "max_output_tokens": self.max_output_tokens,
            "audio": {"output": {"format": self.output_format, "voice": self.voice}},
            "usage": usage,
            "metadata": None,
        }

    def _event(self, kind: str, **fields: object) -> dict[str, object]:
        return {"type": kind, "event_id": new_id("event"), "response_id": self.id, **fields}

    def _message_item(self, out: Outbox) -> _MessageItem:
        message = self._message
        if message is None or message.audio_done:
            if message is not None:
                self.finish_message(out)
            kind = "output_text" if self.text_output else "output_audio"
            message = _MessageItem(new_id("item"), len(self.items), kind)
            self._message = message
            item = {
                "id": message.id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            out.client_json(
                self._event(
                    "response.output_item.added", output_index=message.output_index, item=item
                )
            )
            out.client_json(
                {"type": "conversation.item.added", "event_id": new_id("event"), "item": item}
            )
            part: dict[str, object] = (
                {"type": kind, "transcript": ""}
                if kind == "output_audio"
                else {"type": kind, "text": ""}
            )
            out.client_json(
                self._event("response.content_part.added", **message.part_fields(), part=part)
            )
            self.items.append(item)
        return message

    def _delta(self, out: Outbox, kind: str, message: _MessageItem, delta: str) -> None:
        out.client_json(self._event(kind, **message.part_fields(), delta=delta))

    # -- model output ----------------------------------------------------------------

    def audio(self, out: Outbox, data: str) -> None:
        """A base64 audio chunk, already in the client's output format."""
        message = self._message_item(out)
        if message.kind != "output_audio":
            return
        message.audio_seen = True
        raw = data.encode("ascii", "replace")
        if raw.translate(None, _BASE64_ALPHABET):
            # Not plain base64 (it came from Gemini as is): let the encoder escape it.
            self._delta(out, "response.output_audio.delta", message, data)
            return
        # The hot path: the event spelled out as bytes, no dict and no JSON encoder
        # (ids are ours and base64 needs no escaping).
        out.to_client.append(
            _AUDIO_DELTA
            % (
                new_id("event").encode(),
                self.id.encode(),
                message.id.encode(),
                message.output_index,
                raw,
            )
        )

    def transcript(self, out: Outbox, text: str) -> None:
        message = self._message
        if message is None or message.kind != "output_audio":
            message = self._message_item(out)
        if message.kind == "output_audio":
            message.transcript.append(text)
            self._delta(out, "response.output_audio_transcript.delta", message, text)

    def text(self, out: Outbox, text: str) -> None:
        message = self._message_item(out)
        if message.kind == "output_text":
            message.text.append(text)
            self._delta(out, "response.output_text.delta", message, text)

    def generation_complete(self, out: Outbox) -> None:
        """Gemini finished generating: audio ends; late transcript may still come."""
        message = self._message
        if message is not None and message.kind == "output_audio" and not message.audio_done:
            message.audio_done = True
            out.client_json(self._event("response.output_audio.done", **message.part_fields()))

    def finish_message(self, out: Outbox, status: str = "completed") -> None:
        """Close the open message item (its part, its item) if there is one."""
        message = self._message
        if message is None:
            return
        self._message = None
        common = message.part_fields()
        if message.kind == "output_audio":
            if not message.audio_done:
                out.client_json(self._event("response.output_audio.done", **common))
            transcript = "".join(message.transcript)
            out.client_json(
                self._event(
                    "response.output_audio_transcript.done", transcript=transcript, **common
                )
            )
            part: dict[str, object] = {"type": "output_audio", "transcript": transcript}
        else:
            text = "".join(message.text)
            out.client_json(self._event("response.output_text.done", text=text, **common))
            part = {"type": "output_text", "text": text}
        out.client_json(self._event("response.content_part.done", part=part, **common))
        item = self.items[message.output_index]
        item["status"] = status
        item["content"] = [part]
        out.client_json(
            self._event("response.output_item.done", output_index=message.output_index, item=item)
        )
        out.client_json(
            {"type": "conversation.item.done", "event_id": new_id("event"), "item": item}
        )

    def function_call(self, out: Outbox, call_id: str, name: str, arguments: str) -> None:
        """One complete Gemini function call as a GA function_call item."""
        self.finish_message(out)
        item_id = new_id("item")
        index = len(self.items)
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        self.items.append(item)
        out.client_json(
            self._event("response.output_item.added", output_index=index, item=dict(item))
        )
        out.client_json(
            {"type": "conversation.item.added", "event_id": new_id("event"), "item": dict(item)}
        )
        common = {"item_id": item_id, "output_index": index, "call_id": call_id}
        out.client_json(
            self._event("response.function_call_arguments.delta", delta=arguments, **common)
        )
        out.client_json(
            self._event(
                "response.function_call_arguments.done", arguments=arguments, name=name, **common
            )
        )
        item["status"] = "completed"
        item["arguments"] = arguments
        out.client_json(self._event("response.output_item.done", output_index=index, item=item))
        out.client_json(
            {"type": "conversation.item.done", "event_id": new_id("event"), "item": item}
        )

    def close(
        self,
        out: Outbox,
        status: str,
        status_details: object = None,
        usage: Mapping[str, object] | None = None,
    ) -> None:
        """``response.done``: once; closes any open item first."""
        if self.closed:
            return
        self.finish_message(out, "completed" if status == "completed" else "incomplete")
        self.closed = True
        out.client_json(
            {
                "type": "response.done",
                "event_id": new_id("event"),
                "response": self._body(
                    status, status_details, dict(usage) if usage is not None else None
                ),
            }
        )


class ClientAudio:
    """Gemini's output audio in the client's output format, chunk by chunk."""

    __slots__ = ("_resampler",)

    def __init__(self) -> None:
        self._resampler: audio.Resampler | None = None

    def convert(self, data: str, mime: str, fmt: AudioFormat) -> str:
        """One base64 chunk of ``mime`` audio as base64 in ``fmt`` ("" if it is not base64)."""
        match = _RATE.search(mime)
        rate = int(match.group(1)) if match else OUTPUT_RATE
        if fmt == PCM24 and rate == OUTPUT_RATE:
            return data  # the common case: passes through untouched
        target = fmt.rate if fmt.encoding == "pcm" else _G711_RATE
        resampler = self._resampler
        if resampler is None or resampler.from_rate != rate or resampler.to_rate != target:
            resampler = self._resampler = audio.Resampler(rate, target)
        try:
            pcm = resampler.convert(base64.b64decode(data))
        except (binascii.Error, ValueError):
            return ""
        if fmt.encoding == "pcmu":
            pcm = audio.pcm16_to_ulaw(pcm)
        elif fmt.encoding == "pcma":
            pcm = audio.pcm16_to_alaw(pcm)
        return base64.b64encode(pcm).decode()

    def reset(self) -> None:
        """A response ended: the next chunk starts a new utterance."""
        if self._resampler is not None:
            self._resampler.reset()


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)  # proto-JSON may render int64 as a string
    return 0


def _by_modality(details: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    if isinstance(details, list):
        for entry in details:
            if isinstance(entry, Mapping):
                modality = str(entry.get("modality", "")).upper()
                counts[modality] = counts.get(modality, 0) + _int(entry.get("tokenCount"))
    return counts


def map_usage(meta: Mapping[str, Any]) -> dict[str, Any]:
    """GA ``usage`` from Gemini ``usageMetadata`` (AI Studio ``response*``, Vertex ``candidates*``).

    Tool-use prompt tokens count as input and thinking tokens as (text) output:
    both are billed that way.
    """
    tool_prompt = _int(meta.get("toolUsePromptTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    input_tokens = _int(meta.get("promptTokenCount")) + tool_prompt
    response_count = meta.get("responseTokenCount", meta.get("candidatesTokenCount"))
    output_tokens = _int(response_count) + thoughts
    total = _int(meta.get("totalTokenCount")) or input_tokens + output_tokens
    prompt = _by_modality(meta.get("promptTokensDetails"))
    tool_details = _by_modality(meta.get("toolUsePromptTokensDetails"))
    for modality, count in tool_details.items():
        prompt[modality] = prompt.get(modality, 0) + count
    cached = _by_modality(meta.get("cacheTokensDetails"))
    response = _by_modality(meta.get("responseTokensDetails", meta.get("candidatesTokensDetails")))
    image = prompt.get("IMAGE", 0) + prompt.get("VIDEO", 0)
    output_text = response.get("TEXT", 0) + thoughts
    return {
        "total_tokens": total,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": prompt.get("TEXT", 0) + prompt.get("DOCUMENT", 0),
            "audio_tokens": prompt.get("AUDIO", 0),
            "image_tokens": image,
            "cached_tokens": _int(meta.get("cachedContentTokenCount")),
            "cached_tokens_details": {
                "text_tokens": cached.get("TEXT", 0),
                "audio_tokens": cached.get("AUDIO", 0),
                "image_tokens": cached.get("IMAGE", 0) + cached.get("VIDEO", 0),
            },
        },
        "output_token_details": {
            "text_tokens": output_text,
            "audio_tokens": response.get("AUDIO", 0),
        },
    }


def usage_record(usage: Mapping[str, Any]) -> dict[str, int]:
    """Flat counters for :attr:`Outbox.usage`, keyed like every provider's
    (``input_token_details.audio_tokens``: :func:`rtgate.translate.base.flatten_usage`)."""
    return flatten_usage(dict(usage))
