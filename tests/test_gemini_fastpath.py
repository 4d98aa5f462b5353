"""Byte-level audio fast paths agree with the JSON they skip.

Out: an audio delta carries the chunk as the provider gave it, escaped by the
JSON encoder when it is not plain base64. In: the ``audio`` sliced out of an append equals what a parse
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
from tests.transcript import validate_server_event


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


@given(st.binary(min_size=1, max_size=600) | st.text(max_size=40))
def test_an_audio_delta_carries_the_chunk_as_given(chunk: bytes | str) -> None:
    """Base64 or not (it came from the provider as is), the delta is GA with that chunk."""
    out = Outbox()
    writer = _writer(out)
    data = base64.b64encode(chunk).decode() if isinstance(chunk, bytes) else chunk
    writer.audio(out, data)  # first chunk: item/part announcements, then the delta
    writer.audio(out, data)
    first, second = (orjson.loads(frame) for frame in out.to_client[-2:])
    for event in (first, second):
        validate_server_event(event)
        assert event["delta"] == data
        assert (event["response_id"], event["output_index"], event["content_index"]) == (
            writer.id,
            0,
            0,
        )
    assert first["item_id"] == second["item_id"] == writer.items[0]["id"]
    assert first["event_id"] != second["event_id"]


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
