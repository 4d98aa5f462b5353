"""Byte-level audio fast paths agree with the JSON they skip.

Out: the byte-spelled audio delta equals the event the JSON encoder would
have written. In: the ``audio`` sliced out of an append equals what a parse
reads, or the slice declines and the translator parses instead.
"""

from __future__ import annotations

import base64

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rtgate.protocol.events import audio_field
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


_APPEND_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@given(
    audio=st.one_of(
        st.binary(max_size=90).map(lambda b: base64.b64encode(b).decode()), _APPEND_TEXT
    ),
    event_id=_APPEND_TEXT,
    spaced=st.booleans(),
)
def test_sliced_append_audio_is_what_a_parse_reads(audio: str, event_id: str, spaced: bool) -> None:
    event = {"type": "input_audio_buffer.append", "event_id": event_id, "audio": audio}
    frame = orjson.dumps(event)
    if spaced:  # Python's json.dumps spelling: a space after every colon and comma
        frame = frame.replace(b'":"', b'": "').replace(b'","', b'", "')
    sliced = audio_field(frame)
    if sliced is None:  # only escapes send the translator to the parser
        assert "\\" in orjson.dumps(audio).decode()
    else:
        assert sliced.decode() == orjson.loads(frame)["audio"]


def test_slice_declines_without_an_audio_string() -> None:
    assert audio_field(b'{"type":"input_audio_buffer.append","audio":null}') is None
    assert audio_field(b'{"type":"input_audio_buffer.append","audio":"AAAA') is None
