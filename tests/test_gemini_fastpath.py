"""Byte-level audio fast paths agree with the JSON they skip.

Out: the byte-spelled audio delta equals the event the JSON encoder would
have written. In: the ``audio`` sliced out of an append equals what a parse
reads, or the slice declines and the translator parses instead; what reaches
the translators (``appended_audio``) is the parsed value either way, and only
strict base64 passes ``is_base64`` to be spliced into an upstream message.
"""

from __future__ import annotations

import base64
import binascii

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rtgate.protocol.events import appended_audio, audio_field, is_base64
from rtgate.translate.base import Outbox
from rtgate.translate.ga.items import ItemChain
from rtgate.translate.ga.response import ResponseWriter


def _writer(out: Outbox) -> ResponseWriter:
    return ResponseWriter(
        out,
        modality="audio",
        output_format={"type": "audio/pcm", "rate": 24000},
        voice="Puck",
        max_output_tokens="inf",
        conversation=ItemChain(),
        conversation_id="conv_1",
    )


@given(st.binary(min_size=1, max_size=600))
def test_fast_audio_delta_matches_the_encoded_event(pcm: bytes) -> None:
    out = Outbox()
    writer = _writer(out)
    data = base64.b64encode(pcm).decode()
    writer.audio(out, data)  # first chunk: item/part announcements, then the delta
    fast = out.to_client[-1]
    assert isinstance(fast, bytes)
    out.to_client.clear()
    writer.audio(out, data + "\n")  # not plain base64: the JSON encoder writes this one
    slow = out.to_client[-1]
    assert isinstance(slow, bytes)
    fast_event, slow_event = orjson.loads(fast), orjson.loads(slow)
    assert list(fast_event) == list(slow_event)  # same keys, same order
    fast_event.pop("event_id")
    slow_event.pop("event_id")
    assert slow_event.pop("delta") == data + "\n"
    assert fast_event.pop("delta") == data
    assert fast_event == slow_event


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


@given(
    audio=st.one_of(
        st.binary(max_size=90).map(lambda b: base64.b64encode(b).decode()), _APPEND_TEXT
    ),
    escaped=st.booleans(),
)
def test_appended_audio_is_the_parsed_audio_however_it_is_spelled(
    audio: str, escaped: bool
) -> None:
    """Sliced or parsed, the translators get what the JSON says."""
    frame = orjson.dumps({"type": "input_audio_buffer.append", "audio": audio})
    if escaped:  # JSON may escape "/" (as some serialisers do): the slice must decline
        frame = frame.replace(b"/", b"\\/")
    assert appended_audio(frame) == audio.encode()


def test_appended_audio_is_none_without_an_audio_string() -> None:
    for frame in (
        b'{"type":"input_audio_buffer.append"}',
        b'{"type":"input_audio_buffer.append","audio":null}',
        b'{"type":"input_audio_buffer.append","audio":[1]}',
        b"not json",
    ):
        assert appended_audio(frame) is None, frame


@given(st.binary(max_size=64))
def test_is_base64_accepts_exactly_strict_padded_base64(data: bytes) -> None:
    """What is spliced into an upstream JSON string: strict base64 and nothing else."""
    try:
        binascii.a2b_base64(data, strict_mode=True)
        strict = len(data) % 4 == 0
    except binascii.Error:
        strict = False
    assert is_base64(data) == strict


@given(st.binary(max_size=64))
def test_is_base64_accepts_every_encoding(raw: bytes) -> None:
    assert is_base64(base64.b64encode(raw))
