"""XaiTranslator: each xAI quirk normalised; conforming frames untouched."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtgate.translate.xai import XaiTranslator, full_usage
from rtgate.wire import Binary
from tests.transcript import Transcript, validate_server_event

IDS = {"response_id": "resp_1", "item_id": "item_1"}


def xai(*events: dict[str, Any] | bytes, translator: XaiTranslator | None = None) -> Transcript:
    """A transcript of an xAI session in which the upstream said ``events`` in turn."""
    x = Transcript(translator or XaiTranslator(), relays_upstream=True)
    for event in events:
        x.upstream_says(event)
    return x


def test_ping_is_dropped() -> None:
    x = xai({"type": "ping", "event_id": "e"}, b'{"type": "ping"}')
    assert x.raw_client == []


@pytest.mark.parametrize(
    ("kind", "extra", "needs_content_index"),
    [
        ("response.output_audio.delta", {"delta": "AAAA"}, True),
        ("response.output_audio_transcript.delta", {"delta": "hi"}, True),
        ("response.output_text.delta", {"delta": "hi"}, True),
        ("response.output_audio.done", {}, True),
        ("response.output_text.done", {"text": "hi"}, True),
        ("response.function_call_arguments.delta", {"call_id": "c", "delta": "{"}, False),
        (
            "response.function_call_arguments.done",
            {"call_id": "c", "arguments": "{}", "name": "f"},
            False,
        ),
        (
            "response.output_item.added",
            {"item": {"type": "message", "role": "assistant", "content": []}},
            False,
        ),
    ],
)
def test_missing_indices_are_filled_with_zero(
    kind: str, extra: dict[str, Any], needs_content_index: bool
) -> None:
    ids = dict(IDS) if kind != "response.output_item.added" else {"response_id": "resp_1"}
    (event,) = xai({"type": kind, "event_id": "e", **ids, **extra}).client
    assert event["output_index"] == 0
    assert ("content_index" in event) == needs_content_index
    if needs_content_index:
        assert event["content_index"] == 0


def test_present_indices_are_kept() -> None:
    event = {
        "type": "response.output_text.done",
        "event_id": "e",
        **IDS,
        "output_index": 2,
        "text": "t",
    }
    (result,) = xai(event).client
    assert result["output_index"] == 2
    assert result["content_index"] == 0


def test_content_part_done_is_backfilled_from_added_and_the_transcript() -> None:
    x = xai(
        {
            "type": "response.content_part.added",
            "event_id": "a",
            **IDS,
            "part": {"type": "audio", "transcript": ""},
        },
        {
            "type": "response.output_audio_transcript.done",
            "event_id": "b",
            **IDS,
            "transcript": "Hello there",
        },
        {"type": "response.content_part.done", "event_id": "c", **IDS},
    )
    done = x.client[-1]
    assert done["part"] == {"type": "audio", "transcript": "Hello there"}
    assert (done["output_index"], done["content_index"]) == (0, 0)


def test_text_part_is_backfilled_with_its_text() -> None:
    x = xai(
        {"type": "response.output_text.done", "event_id": "b", **IDS, "text": "Hi"},
        {"type": "response.content_part.done", "event_id": "c", **IDS},
    )
    assert x.client[-1]["part"] == {"type": "text", "text": "Hi"}


def test_content_part_done_without_history_gets_an_empty_audio_part() -> None:
    (done,) = xai({"type": "response.content_part.done", "event_id": "c", **IDS}).client
    assert done["part"] == {"type": "audio", "transcript": ""}


def test_content_part_added_without_part_gets_one() -> None:
    (added,) = xai({"type": "response.content_part.added", "event_id": "c", **IDS}).client
    assert added["part"]["type"] == "audio"


@pytest.mark.parametrize("kind", ["response.created", "response.done"])
def test_empty_usage_becomes_zero_filled_ga_usage(kind: str) -> None:
    event = {
        "type": kind,
        "event_id": "e",
        "response": {"id": "resp_1", "status": "completed", "usage": {}},
    }
    (result,) = xai(event).client
    usage = result["response"]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] == usage["output_tokens"] == 0
    assert usage["input_token_details"]["cached_tokens_details"] == {
        "text_tokens": 0,
        "audio_tokens": 0,
        "image_tokens": 0,
    }
    assert usage["output_token_details"] == {"text_tokens": 0, "audio_tokens": 0}


def test_partial_usage_is_completed_and_reported() -> None:
    event = {
        "type": "response.done",
        "event_id": "e",
        "response": {
            "id": "resp_1",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "input_token_details": {"audio_tokens": 7},
            },
        },
    }
    out = xai().upstream_says(event)
    (result,) = out.client
    usage = result["response"]["usage"]
    assert usage["total_tokens"] == 15
    assert usage["input_token_details"]["audio_tokens"] == 7
    assert usage["input_token_details"]["text_tokens"] == 0
    assert out.usage is not None
    assert out.usage["input_tokens"] == 10
    assert out.usage["output_tokens"] == 5
    assert out.usage["total_tokens"] == 15
    assert out.usage["input_token_details.audio_tokens"] == 7


def test_complete_usage_is_reported_and_the_frame_kept() -> None:
    usage = full_usage({"input_tokens": 3, "output_tokens": 4})
    frame = orjson.dumps(
        {"type": "response.done", "event_id": "e", "response": {"id": "r", "usage": usage}}
    )
    out = xai().upstream_says(frame)
    assert out.outbox.to_client[0] is frame
    assert out.usage is not None and out.usage["total_tokens"] == 7


def test_response_done_without_usage_reports_zero() -> None:
    out = xai().upstream_says({"type": "response.done", "event_id": "e", "response": {"id": "r"}})
    assert out.usage is not None and out.usage["total_tokens"] == 0
    assert out.client[0]["response"]["usage"]["output_tokens"] == 0


@pytest.mark.parametrize(
    "kind", ["conversation.item.added", "conversation.item.done", "response.output_item.done"]
)
def test_tool_role_on_function_calls_is_dropped(kind: str) -> None:
    item = {
        "id": "item_1",
        "type": "function_call",
        "role": "tool",
        "name": "f",
        "arguments": "{}",
        "call_id": "c",
    }
    event: dict[str, Any] = {"type": kind, "event_id": "e", "item": item}
    if kind.startswith("response."):
        event.update(response_id="r", output_index=0)
    (result,) = xai(event).client
    assert "role" not in result["item"]  # GA call items have none (the harness checks GA)


def test_tool_role_inside_response_done_output_is_dropped() -> None:
    item = {"id": "item_1", "type": "function_call", "role": "tool", "name": "f", "arguments": "{}"}
    event = {
        "type": "response.done",
        "event_id": "e",
        "response": {"id": "r", "output": [item], "usage": {}},
    }
    (result,) = xai(event).client
    assert "role" not in result["response"]["output"][0]


def test_conversation_created_first_gets_a_synthetic_session_created() -> None:
    translator = XaiTranslator(model="grok-voice-latest")
    greeting = orjson.dumps(
        {"type": "conversation.created", "event_id": "e", "conversation": {"id": "conv_1"}}
    )
    x = xai(translator=translator)
    out = x.upstream_says(greeting)
    assert len(out.outbox.to_client) == 2
    created = out.client[0]
    assert created["type"] == "session.created"
    assert created["session"]["type"] == "realtime"
    assert created["session"]["model"] == "grok-voice-latest"
    assert out.outbox.to_client[1] is greeting
    # A real session.created after that is news, not a second creation.
    later = x.upstream_says(
        {"type": "session.created", "event_id": "s", "session": {"type": "realtime"}}
    )
    assert later.client[0]["type"] == "session.updated"
    again = x.upstream_says({"type": "conversation.created", "event_id": "c"})
    assert len(again.outbox.to_client) == 1


def test_session_created_first_means_nothing_is_synthesised() -> None:
    translator = XaiTranslator()
    first = orjson.dumps(
        {"type": "session.created", "event_id": "s", "session": {"type": "realtime"}}
    )
    greeting = orjson.dumps({"type": "conversation.created", "event_id": "c"})
    x = xai(first, greeting, translator=translator)
    assert x.raw_client == [first, greeting]
    assert x.raw_client[0] is first


CONFORMING = [
    {
        "type": "response.output_audio.delta",
        "event_id": "e",
        **IDS,
        "output_index": 0,
        "content_index": 0,
        "delta": "AAAA",
    },
    {
        "type": "response.output_audio_transcript.delta",
        "event_id": "e",
        **IDS,
        "output_index": 0,
        "content_index": 0,
        "delta": "x",
    },
    {
        "type": "response.output_text.delta",
        "event_id": "e",
        **IDS,
        "output_index": 1,
        "content_index": 0,
        "delta": "y",
    },
    {
        "type": "response.function_call_arguments.delta",
        "event_id": "e",
        **IDS,
        "output_index": 0,
        "call_id": "c",
        "delta": "{",
    },
    {
        "type": "response.content_part.done",
        "event_id": "e",
        **IDS,
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "audio", "transcript": "t"},
    },
    {
        "type": "response.output_item.added",
        "event_id": "e",
        "response_id": "r",
        "output_index": 0,
        "item": {"type": "message", "role": "assistant", "content": []},
    },
    {
        "type": "conversation.item.added",
        "event_id": "e",
        "item": {"type": "message", "role": "user", "content": []},
    },
    {
        "type": "input_audio_buffer.speech_started",
        "event_id": "e",
        "audio_start_ms": 10,
        "item_id": "i",
    },
    {"type": "error", "event_id": "e", "error": {"type": "invalid_request_error", "message": "m"}},
    {"type": "response.created", "event_id": "e", "response": {"id": "r", "usage": None}},
]


@pytest.mark.parametrize("event", CONFORMING, ids=[e["type"] for e in CONFORMING])
def test_conforming_frames_pass_as_identical_objects(event: dict[str, Any]) -> None:
    frame = orjson.dumps(event)
    x = xai(frame)
    assert len(x.raw_client) == 1
    assert x.raw_client[0] is frame


def test_conforming_audio_delta_is_not_decoded() -> None:
    # Not valid JSON past the keys: a decode would fail, the byte check does not care.
    frame = (
        b'{"type":"response.output_audio.delta","output_index":0,"content_index":0,"delta":"\xff'
    )
    x = xai(frame)
    assert x.raw_client[0] is frame


def test_binary_frames_and_client_frames_pass_untouched() -> None:
    x = xai()
    binary = Binary(b"\x00\x01")
    x.upstream_says(binary)
    client = b'{"type":"session.update","session":{"type":"realtime"}}'
    step = x.client_says(client)
    assert x.raw_client == [binary]
    assert step.outbox.to_upstream[0] is client


def test_a_whole_xai_response_is_accepted_by_the_sdk() -> None:
    """A response as xAI sends it (quirks and all) comes out as strict GA."""
    translator = XaiTranslator()
    fc = {
        "id": "item_2",
        "type": "function_call",
        "role": "tool",
        "name": "lookup",
        "call_id": "c1",
        "arguments": "",
    }
    x = xai(
        {"type": "conversation.created", "event_id": "e0", "conversation": {"id": "conv_1"}},
        {"type": "ping", "event_id": "e1"},
        {
            "type": "response.created",
            "event_id": "e2",
            "response": {"id": "resp_1", "status": "in_progress", "usage": {}},
        },
        {
            "type": "response.output_item.added",
            "event_id": "e3",
            "response_id": "resp_1",
            "item": {"id": "item_1", "type": "message", "role": "assistant", "content": []},
        },
        {
            "type": "response.content_part.added",
            "event_id": "e4",
            **IDS,
            "part": {"type": "audio", "transcript": ""},
        },
        {"type": "response.output_audio.delta", "event_id": "e5", **IDS, "delta": "AAAA"},
        {"type": "response.output_audio_transcript.delta", "event_id": "e6", **IDS, "delta": "Hi"},
        {"type": "response.output_audio.done", "event_id": "e7", **IDS},
        {
            "type": "response.output_audio_transcript.done",
            "event_id": "e8",
            **IDS,
            "transcript": "Hi",
        },
        {"type": "response.content_part.done", "event_id": "e9", **IDS},
        {"type": "conversation.item.added", "event_id": "e10", "item": fc},
        {
            "type": "response.function_call_arguments.delta",
            "event_id": "e11",
            "response_id": "resp_1",
            "item_id": "item_2",
            "call_id": "c1",
            "delta": "{}",
        },
        {
            "type": "response.function_call_arguments.done",
            "event_id": "e12",
            "response_id": "resp_1",
            "item_id": "item_2",
            "call_id": "c1",
            "name": "lookup",
            "arguments": "{}",
        },
        {
            "type": "response.done",
            "event_id": "e13",
            "response": {"id": "resp_1", "status": "completed", "output": [fc], "usage": {}},
        },
        translator=translator,
    )
    # Strict GA for every event, relayed as xAI said it or repaired.
    events = [orjson.loads(f) for f in x.raw_client if isinstance(f, bytes)]
    for event in events:
        validate_server_event(event)
    assert [e["type"] for e in events][:2] == ["session.created", "conversation.created"]
    assert "ping" not in [e["type"] for e in events]
    assert x.usage[-1]["total_tokens"] == 0
    assert translator._parts == {}


json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
TYPES = [
    "ping",
    "conversation.created",
    "session.created",
    "response.created",
    "response.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.done",
    "response.output_audio_transcript.done",
    "response.output_audio.delta",
    "conversation.item.added",
    "response.output_item.done",
]
FIELDS = [
    "response",
    "item",
    "part",
    "usage",
    "output",
    "response_id",
    "item_id",
    "content_index",
    "role",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(TYPES)}).flatmap(
            lambda base: st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=4).map(
                lambda extra: {**extra, **base}
            )
        )
        | st.binary(max_size=20),
        max_size=8,
    )
)
def test_arbitrary_upstream_events_never_raise(events: list[dict[str, Any] | bytes]) -> None:
    # xAI's own garbage is relayed as it came (repaired where xAI is known to err).
    x = Transcript(XaiTranslator(), check_client=False)
    for event in events:
        x.upstream_says(event)
    for frame in x.raw_client:
        assert isinstance(frame, bytes)
