"""The byte-spelled audio delta equals the event the JSON encoder would have written."""

from __future__ import annotations

import base64

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rtgate.translate.base import Outbox
from rtgate.translate.gemini_output import ResponseWriter


def _writer(out: Outbox) -> ResponseWriter:
    return ResponseWriter(
        out,
        conversation_id="conv_1",
        text_output=False,
        output_format={"type": "audio/pcm", "rate": 24000},
        voice="Puck",
        max_output_tokens="inf",
    )


@given(st.binary(min_size=1, max_size=600))
def test_fast_audio_delta_matches_the_encoded_event(pcm: bytes) -> None:
    out = Outbox()
    writer = _writer(out)
    data = base64.b64encode(pcm).decode()
    writer.audio(out, data)  # first chunk: item/part announcements, then the delta
    fast = out.to_client[-1]
    assert isinstance(fast, bytes)
    message = writer._message_item(out)
    out.to_client.clear()
    writer._delta(out, "response.output_audio.delta", message, data)
    slow = out.to_client[-1]
    assert isinstance(slow, bytes)
    fast_event, slow_event = orjson.loads(fast), orjson.loads(slow)
    assert list(fast_event) == list(slow_event)  # same keys, same order
    fast_event.pop("event_id")
    slow_event.pop("event_id")
    assert fast_event == slow_event
    assert fast_event["delta"] == data


def test_non_base64_chunk_takes_the_escaping_path() -> None:
    out = Outbox()
    writer = _writer(out)
    writer.audio(out, 'ab"c\\d')
    event = orjson.loads(out.to_client[-1])
    assert event["delta"] == 'ab"c\\d'
