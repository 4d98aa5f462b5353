"""BetaBridge: beta client <-> GA upstream translation, checked against the SDK types."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeClientEvent as GaClientEvent

from rtgate.protocol.beta import BetaBridge, session_to_beta, session_to_ga

GA_CLIENT = pydantic.TypeAdapter(GaClientEvent)
BETA_SERVER = pydantic.TypeAdapter(BetaServerEvent)
PCM = {"type": "audio/pcm", "rate": 24000}


def to_ga(event: dict[str, Any], bridge: BetaBridge | None = None) -> dict[str, Any]:
    frame = (bridge or BetaBridge()).client_to_ga(orjson.dumps(event))
    assert frame is not None
    result: dict[str, Any] = orjson.loads(frame)
    return result


def to_beta(event: dict[str, Any], bridge: BetaBridge | None = None) -> dict[str, Any] | None:
    frame = (bridge or BetaBridge()).server_to_beta(orjson.dumps(event))
    return None if frame is None else orjson.loads(frame)


# -- client -> GA --------------------------------------------------------------

CLIENT_CASES = [
    pytest.param(
        {
            "type": "session.update",
            "session": {
                "modalities": ["text", "audio"],
                "instructions": "Be brief.",
                "voice": "alloy",
                "input_audio_format": "pcm16",
                "output_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                "input_audio_noise_reduction": {"type": "near_field"},
                "max_response_output_tokens": 200,
                "speed": 1.1,
                "temperature": 0.7,
                "tools": [{"type": "function", "name": "f", "parameters": {}}],
                "tool_choice": "auto",
            },
        },
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["audio"],
                "instructions": "Be brief.",
                "max_output_tokens": 200,
                "tools": [{"type": "function", "name": "f", "parameters": {}}],
                "tool_choice": "auto",
                "audio": {
                    "input": {
                        "format": PCM,
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                        "noise_reduction": {"type": "near_field"},
                    },
                    "output": {"voice": "alloy", "format": {"type": "audio/pcmu"}, "speed": 1.1},
                },
            },
        },
        id="session.update flat to nested",
    ),
    pytest.param(
        {"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}},
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["text"],
                "audio": {"input": {"turn_detection": None}},
            },
        },
        id="text only, manual turns",
    ),
    pytest.param(
        {
            "type": "transcription_session.update",
            "event_id": "ev1",
            "session": {
                "input_audio_format": "g711_alaw",
                "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": None,
                "modalities": ["text"],
                "include": ["item.input_audio_transcription.logprobs"],
            },
        },
        {
            "type": "session.update",
            "event_id": "ev1",
            "session": {
                "type": "transcription",
                "include": ["item.input_audio_transcription.logprobs"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcma"},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": None,
                    }
                },
            },
        },
        id="transcription_session.update",
    ),
    pytest.param(
        {
            "type": "response.create",
            "response": {
                "modalities": ["text", "audio"],
                "voice": "verse",
                "output_audio_format": "pcm16",
                "temperature": 0.9,
                "max_response_output_tokens": "inf",
                "conversation": "none",
                "input": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "text", "text": "earlier"}],
                    }
                ],
            },
        },
        {
            "type": "response.create",
            "response": {
                "output_modalities": ["audio"],
                "max_output_tokens": "inf",
                "conversation": "none",
                "input": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "earlier"}],
                    }
                ],
                "audio": {"output": {"voice": "verse", "format": PCM}},
            },
        },
        id="response.create",
    ),
    pytest.param(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "hi"}, {"type": "audio", "transcript": "x"}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "hi"},
                    {"type": "output_audio", "transcript": "x"},
                ],
            },
        },
        id="assistant content part types",
    ),
    pytest.param(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "text", "text": "q"}]},
        },
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "q"}],
            },
        },
        id="beta 'text' on a user message",
    ),
]


@pytest.mark.parametrize(("beta", "ga"), CLIENT_CASES)
def test_client_events_become_ga(beta: dict[str, Any], ga: dict[str, Any]) -> None:
    result = to_ga(beta)
    assert result == ga
    GA_CLIENT.validate_python(result)


def test_seed_client_response_create_is_valid_ga() -> None:
    seed = b'{"type":"response.create","response":{"modalities":["text"],"instructions":"Please assist the user."}}'
    frame = BetaBridge().client_to_ga(seed)
    assert frame is not None
    event = orjson.loads(frame)
    assert event == {
        "type": "response.create",
        "response": {"output_modalities": ["text"], "instructions": "Please assist the user."},
    }
    GA_CLIENT.validate_python(event)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"input_audio_buffer.append","audio":"AAAA"}',
        b'{"type":"input_audio_buffer.commit"}',
        b'{"type":"response.cancel"}',
        b'{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"c","output":"{}"}}',
        b"not json at all",
        b'{"type":"session.update","session":"nonsense"}',
    ],
)
def test_client_frames_needing_no_change_pass_as_the_same_object(frame: bytes) -> None:
    assert BetaBridge().client_to_ga(frame) is frame


def test_audio_append_is_never_decoded() -> None:
    # Invalid JSON after a valid prefix: any decode would fail or change the bytes.
    frame = b'{"type":"input_audio_buffer.append","audio":"AAAA' + b"\xff" * 10
    assert BetaBridge().client_to_ga(frame) is frame


# -- GA -> client -------------------------------------------------------------

ITEM = {
    "id": "item_1",
    "object": "realtime.item",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_audio", "transcript": "hello"}],
}
BETA_ITEM = {**ITEM, "content": [{"type": "audio", "transcript": "hello"}]}
IDS = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}

SERVER_CASES = [
    pytest.param(
        {"type": "response.output_text.delta", "event_id": "e", **IDS, "delta": "hi"},
        {"type": "response.text.delta", "event_id": "e", **IDS, "delta": "hi"},
        id="text delta",
    ),
    pytest.param(
        {"type": "response.output_text.done", "event_id": "e", **IDS, "text": "hi"},
        {"type": "response.text.done", "event_id": "e", **IDS, "text": "hi"},
        id="text done",
    ),
    pytest.param(
        {"type": "response.output_audio.done", "event_id": "e", **IDS},
        {"type": "response.audio.done", "event_id": "e", **IDS},
        id="audio done",
    ),
    pytest.param(
        {"type": "response.output_audio_transcript.delta", "event_id": "e", **IDS, "delta": "x"},
        {"type": "response.audio_transcript.delta", "event_id": "e", **IDS, "delta": "x"},
        id="transcript delta",
    ),
    pytest.param(
        {
            "type": "response.output_audio_transcript.done",
            "event_id": "e",
            **IDS,
            "transcript": "x",
        },
        {"type": "response.audio_transcript.done", "event_id": "e", **IDS, "transcript": "x"},
        id="transcript done",
    ),
    pytest.param(
        {
            "type": "conversation.item.added",
            "event_id": "e",
            "previous_item_id": None,
            "item": ITEM,
        },
        {
            "type": "conversation.item.created",
            "event_id": "e",
            "previous_item_id": None,
            "item": BETA_ITEM,
        },
        id="item added becomes created",
    ),
    pytest.param(
        {
            "type": "response.output_item.done",
            "event_id": "e",
            "response_id": "r",
            "output_index": 0,
            "item": ITEM,
        },
        {
            "type": "response.output_item.done",
            "event_id": "e",
            "response_id": "r",
            "output_index": 0,
            "item": BETA_ITEM,
        },
        id="output item parts",
    ),
    pytest.param(
        {
            "type": "response.content_part.done",
            "event_id": "e",
            **IDS,
            "part": {"type": "output_text", "text": "t"},
        },
        {
            "type": "response.content_part.done",
            "event_id": "e",
            **IDS,
            "part": {"type": "text", "text": "t"},
        },
        id="content part type",
    ),
    pytest.param(
        {
            "type": "response.done",
            "event_id": "e",
            "response": {
                "id": "resp_1",
                "object": "realtime.response",
                "status": "completed",
                "output": [ITEM],
                "output_modalities": ["audio"],
                "audio": {"output": {"format": PCM, "voice": "marin"}},
                "max_output_tokens": "inf",
                "usage": {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2},
            },
        },
        {
            "type": "response.done",
            "event_id": "e",
            "response": {
                "id": "resp_1",
                "object": "realtime.response",
                "status": "completed",
                "output": [BETA_ITEM],
                "modalities": ["text", "audio"],
                "voice": "marin",
                "output_audio_format": "pcm16",
                "max_output_tokens": "inf",
                "usage": {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2},
            },
        },
        id="response.done",
    ),
    pytest.param(
        {
            "type": "session.created",
            "event_id": "e",
            "session": {
                "type": "realtime",
                "object": "realtime.session",
                "id": "sess_1",
                "model": "gpt-realtime",
                "output_modalities": ["audio"],
                "instructions": "hi",
                "max_output_tokens": "inf",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": None,
                        "noise_reduction": None,
                        "turn_detection": {"type": "server_vad", "threshold": 0.5},
                    },
                    "output": {"format": PCM, "voice": "marin", "speed": 1.0},
                },
            },
        },
        {
            "type": "session.created",
            "event_id": "e",
            "session": {
                "object": "realtime.session",
                "id": "sess_1",
                "model": "gpt-realtime",
                "modalities": ["text", "audio"],
                "instructions": "hi",
                "max_response_output_tokens": "inf",
                "input_audio_format": "g711_ulaw",
                "input_audio_transcription": None,
                "input_audio_noise_reduction": None,
                "turn_detection": {"type": "server_vad", "threshold": 0.5},
                "output_audio_format": "pcm16",
                "voice": "marin",
                "speed": 1.0,
            },
        },
        id="session.created nested to flat",
    ),
    pytest.param(
        {
            "type": "session.updated",
            "event_id": "e",
            "session": {
                "type": "transcription",
                "audio": {"input": {"format": PCM, "transcription": {"model": "whisper-1"}}},
            },
        },
        {
            "type": "transcription_session.updated",
            "event_id": "e",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "whisper-1"},
            },
        },
        id="transcription session.updated",
    ),
]


@pytest.mark.parametrize(("ga", "beta"), SERVER_CASES)
def test_server_events_become_beta(ga: dict[str, Any], beta: dict[str, Any]) -> None:
    assert to_beta(ga) == beta
    if beta["type"] != "transcription_session.updated":  # the SDK wants a client_secret there
        BETA_SERVER.validate_python(beta)


def test_conversation_item_done_is_dropped() -> None:
    done = {"type": "conversation.item.done", "event_id": "e", "item": ITEM}
    assert to_beta(done) is None


def test_audio_delta_is_renamed_without_decoding() -> None:
    bridge = BetaBridge()
    tail = b',"response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"AAAA"}'
    frame = b'{"type":"response.output_audio.delta"' + tail
    assert bridge.server_to_beta(frame) == b'{"type":"response.audio.delta"' + tail
    # Proof that no decode happens: garbage after the prefix survives untouched.
    broken = b'{"type":"response.output_audio.delta",\xff\xfe'
    assert bridge.server_to_beta(broken) == b'{"type":"response.audio.delta",\xff\xfe'
    spaced = b'{"type": "response.output_audio.delta", "delta": "AAAA"}'
    assert bridge.server_to_beta(spaced) == b'{"type": "response.audio.delta", "delta": "AAAA"}'


def test_audio_delta_with_type_not_first_is_decoded_and_renamed() -> None:
    frame = b'{"delta":"AAAA","type":"response.output_audio.delta"}'
    result = BetaBridge().server_to_beta(frame)
    assert result is not None
    assert orjson.loads(result) == {"delta": "AAAA", "type": "response.audio.delta"}


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"response.audio.delta","delta":"AAAA"}',  # legacy beta names from upstream
        b'{"type":"response.audio_transcript.delta","delta":"a"}',
        b'{"type":"response.text.delta","delta":"a"}',
        b'{"type":"conversation.item.created","item":{"type":"function_call","name":"f"}}',
        b'{"type":"error","error":{"type":"invalid_request_error","message":"m"}}',
        b'{"type":"input_audio_buffer.speech_started","audio_start_ms":1,"item_id":"i"}',
        b'{"type":"response.output_item.added","item":{"type":"message","role":"assistant","content":[]}}',
        b"[1,2,3]",
    ],
)
def test_server_frames_needing_no_change_pass_as_the_same_object(frame: bytes) -> None:
    assert BetaBridge().server_to_beta(frame) is frame


def test_temperature_set_by_the_client_is_reported_back() -> None:
    bridge = BetaBridge()
    ga = to_ga({"type": "session.update", "session": {"temperature": 0.6, "voice": "ash"}}, bridge)
    assert "temperature" not in ga["session"]
    updated = to_beta(
        {"type": "session.updated", "event_id": "e", "session": ga["session"]}, bridge
    )
    assert updated is not None
    assert updated["session"] == {"temperature": 0.6, "voice": "ash"}


# -- properties -----------------------------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KNOWN_TYPES = [
    "session.update",
    "transcription_session.update",
    "response.create",
    "conversation.item.create",
    "session.created",
    "session.updated",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.created",
    "response.output_item.added",
    "response.content_part.done",
    "response.created",
    "response.done",
    "response.output_audio.delta",
    "response.output_text.done",
]
FIELD_NAMES = [
    "session",
    "response",
    "item",
    "part",
    "audio",
    "content",
    "output",
    "input",
    "modalities",
]


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"type": draw(st.sampled_from(KNOWN_TYPES) | st.text(max_size=10))}
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=4)):
        event[name] = draw(
            json_value | st.dictionaries(st.sampled_from(FIELD_NAMES), json_value, max_size=4)
        )
    return event


@settings(max_examples=300, deadline=None)
@given(event=events() | st.dictionaries(st.text(max_size=8), json_value, max_size=5))
def test_arbitrary_json_objects_never_raise(event: dict[str, Any]) -> None:
    frame = orjson.dumps(event)
    bridge = BetaBridge()
    for result in (bridge.client_to_ga(frame), bridge.server_to_beta(frame)):
        if result is not None:
            orjson.loads(result)


voices = st.sampled_from(["alloy", "ash", "verse", "marin"])
beta_formats = st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw"])
turn_detection = st.none() | st.fixed_dictionaries(
    {"type": st.sampled_from(["server_vad", "semantic_vad"])},
    optional={"threshold": st.floats(0, 1), "silence_duration_ms": st.integers(0, 2000)},
)
beta_sessions = st.fixed_dictionaries(
    {},
    optional={
        "modalities": st.sampled_from([["text"], ["text", "audio"]]),
        "instructions": st.text(max_size=20),
        "voice": voices,
        "input_audio_format": beta_formats,
        "output_audio_format": beta_formats,
        "input_audio_transcription": st.none()
        | st.fixed_dictionaries({"model": st.just("whisper-1")}),
        "input_audio_noise_reduction": st.none()
        | st.fixed_dictionaries({"type": st.just("far_field")}),
        "turn_detection": turn_detection,
        "max_response_output_tokens": st.integers(1, 4096) | st.just("inf"),
        "speed": st.floats(0.25, 1.5),
        "temperature": st.floats(0.6, 1.2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
    },
)


@settings(max_examples=200, deadline=None)
@given(session=beta_sessions)
def test_beta_session_survives_a_round_trip_through_ga(session: dict[str, Any]) -> None:
    bridge = BetaBridge()
    ga = to_ga({"type": "session.update", "session": copy.deepcopy(session)}, bridge)
    GA_CLIENT.validate_python(ga)
    echoed = to_beta({"type": "session.updated", "event_id": "e", "session": ga["session"]}, bridge)
    assert echoed is not None
    assert echoed["session"] == session
    BETA_SERVER.validate_python(echoed)


ga_formats = st.sampled_from([PCM, {"type": "audio/pcmu"}, {"type": "audio/pcma"}])
ga_sessions = st.fixed_dictionaries(
    {"type": st.just("realtime")},
    optional={
        "output_modalities": st.sampled_from([["text"], ["audio"]]),
        "model": st.just("gpt-realtime"),
        "max_output_tokens": st.integers(1, 4096),
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {"format": ga_formats}, optional={"turn_detection": turn_detection}
                ),
                "output": st.fixed_dictionaries({"voice": voices}, optional={"format": ga_formats}),
            },
        ).filter(bool),
    },
)


@settings(max_examples=200, deadline=None)
@given(session=ga_sessions)
def test_ga_session_survives_a_round_trip_through_beta(session: dict[str, Any]) -> None:
    assert session_to_ga(session_to_beta(copy.deepcopy(session))) == session


@settings(max_examples=200, deadline=None)
@given(
    frame=st.binary(max_size=64)
    | st.sampled_from(KNOWN_TYPES).map(lambda t: b'{"type":"' + t.encode())
)
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    bridge = BetaBridge()
    bridge.client_to_ga(frame)
    bridge.server_to_beta(frame)
