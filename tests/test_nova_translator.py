"""The Nova Sonic translator as transcripts: client events and Nova events in, both sides out."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rtgate.translate.audio import pcm16_to_ulaw
from rtgate.translate.nova.translator import USAGE_GRACE, NovaDefaults, NovaTranslator
from tests.transcript import Step, Transcript

MODEL = "amazon.nova-sonic-v1:0"


def session(model: str = MODEL, defaults: NovaDefaults | None = None) -> Transcript:
    """A started Nova session (``session.created`` already said)."""
    s = Transcript(NovaTranslator(model, defaults))
    s.start()
    return s


def nova(s: Transcript, name: str, **body: Any) -> Step:
    """Nova sends one output event ``{"event": {name: body}}``."""
    return s.upstream_says({"event": {name: body}})


def names(s: Transcript) -> list[str]:
    """The names of the Nova input events sent so far."""
    return [next(iter(e["event"])) for e in s.upstream]


def content(
    s: Transcript, kind: str, role: str, stage: str | None, texts: list[str], stop: str, cid: str
) -> None:
    fields = (
        {"additionalModelFields": orjson.dumps({"generationStage": stage}).decode()}
        if stage
        else {}
    )
    nova(s, "contentStart", contentId=cid, type=kind, role=role, **fields)
    for text in texts:
        nova(s, "textOutput", contentId=cid, role=role, content=text)
    nova(s, "contentEnd", contentId=cid, type=kind, stopReason=stop)


def append(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


def assistant_turn(s: Transcript, text: str = "Hello there.", chunks: int = 2) -> None:
    content(s, "TEXT", "ASSISTANT", "SPECULATIVE", [text], "PARTIAL_TURN", "spec")
    nova(s, "contentStart", contentId="aud", type="AUDIO", role="ASSISTANT")
    for _ in range(chunks):
        nova(s, "audioOutput", contentId="aud", content="AAAA")
    nova(s, "contentEnd", contentId="aud", type="AUDIO", stopReason="END_TURN")
    content(s, "TEXT", "ASSISTANT", "FINAL", [text], "END_TURN", "final")


def usage(s: Transcript, speech_in: int, text_in: int, speech_out: int, text_out: int) -> None:
    delta = {
        "input": {"speechTokens": speech_in, "textTokens": text_in},
        "output": {"speechTokens": speech_out, "textTokens": text_out},
    }
    nova(s, "usageEvent", details={"delta": delta, "total": delta}, totalTokens=1)


def test_session_created_at_once_and_first_update_opens_the_stream() -> None:
    s = session()
    assert s.types() == ["session.created"]
    assert s.upstream == []
    s.client_says(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "You are terse.",
                "max_output_tokens": 300,
                "audio": {"output": {"voice": "echo"}},
                "tools": [
                    {
                        "type": "function",
                        "name": "weather",
                        "description": "Weather for a city",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    }
                ],
            },
        }
    )
    assert names(s) == ["sessionStart", "promptStart", "contentStart", "textInput", "contentEnd"]
    start = s.upstream[0]["event"]["sessionStart"]
    assert start["inferenceConfiguration"]["maxTokens"] == 300
    prompt = s.upstream[1]["event"]["promptStart"]
    assert prompt["audioOutputConfiguration"]["voiceId"] == "matthew"
    assert prompt["audioOutputConfiguration"]["sampleRateHertz"] == 24000
    [tool] = prompt["toolConfiguration"]["tools"]
    assert tool["toolSpec"]["name"] == "weather"
    assert orjson.loads(tool["toolSpec"]["inputSchema"]["json"])["properties"]["city"] == {
        "type": "string"
    }
    system = s.upstream[2]["event"]["contentStart"]
    assert (system["role"], system["type"], system["interactive"]) == ("SYSTEM", "TEXT", False)
    assert s.upstream[3]["event"]["textInput"]["content"] == "You are terse."
    assert {
        e["event"][n].get("promptName") for e, n in zip(s.upstream[1:], names(s)[1:], strict=True)
    } == {prompt["promptName"]}
    updated = s.client[-1]
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["output"]["voice"] == "echo"
    assert s.t.deadline is None


def test_without_session_update_the_timer_starts_with_defaults() -> None:
    s = session(defaults=NovaDefaults(voice="amy", setup_timeout=1.0))
    s.advance(0.5)
    assert s.upstream == []
    s.advance(0.6)
    assert names(s) == ["sessionStart", "promptStart"]
    assert s.upstream[1]["event"]["promptStart"]["audioOutputConfiguration"]["voiceId"] == "amy"


def test_audio_opens_one_container_and_passes_pcm_base64_untouched() -> None:
    s = session()
    pcm = bytes(range(256)) * 30
    s.client_says(append(pcm))
    s.client_says(append(pcm))
    assert names(s) == ["sessionStart", "promptStart", "contentStart", "audioInput", "audioInput"]
    config = s.upstream[2]["event"]["contentStart"]["audioInputConfiguration"]
    assert config["sampleRateHertz"] == 24000
    content_name = s.upstream[2]["event"]["contentStart"]["contentName"]
    for event in s.upstream[3:]:
        assert event["event"]["audioInput"]["contentName"] == content_name
        assert base64.b64decode(event["event"]["audioInput"]["content"]) == pcm


def test_every_json_spelling_of_an_append_sends_the_same_audio() -> None:
    """Compact and spaced appends take the slicing fast path; an escaped one is parsed."""
    pcm = b"\xff\xfb" * 240  # base64 "//v/+//7...": a "/" that JSON may escape as "\/"
    b64 = base64.b64encode(pcm).decode()
    frames = [
        b'{"type":"input_audio_buffer.append","audio":"%s"}' % b64.encode(),
        b'{"type": "input_audio_buffer.append", "audio": "%s"}' % b64.encode(),
        b'{"audio":"%s","type":"input_audio_buffer.append"}' % b64.replace("/", "\\/").encode(),
    ]
    s = session()
    for frame in frames:
        s.client_says(frame)
    sent = [e["event"]["audioInput"]["content"] for e in s.upstream if "audioInput" in e["event"]]
    assert sent == [b64] * 3
    assert s.t.state.input_ms == 3 * len(pcm) / 48  # 24 kHz PCM16: 48 bytes a millisecond
    assert "error" not in s.types()


def test_an_append_that_is_not_base64_is_refused_not_spliced_upstream() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 10))
    s.upstream.clear()
    s.take_types()
    # Parsed (the escapes defeat the slice), the audio holds a quote that would end
    # the JSON string of the audioInput and let the client write Nova fields.
    s.client_says(b'{"type":"input_audio_buffer.append","audio":"AAAA\\",\\"promptName\\":\\"x"}')
    s.client_says({"type": "input_audio_buffer.append", "audio": "AAA"})  # not whole groups
    s.client_says({"type": "input_audio_buffer.append"})
    s.client_says({"type": "input_audio_buffer.append", "audio": 12})
    assert s.upstream == []
    assert [(e["type"], e["error"]["code"]) for e in s.client] == [("error", "invalid_value")] * 4


def test_clear_and_truncate_are_acknowledged_locally() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 10))
    s.upstream.clear()
    s.take_types()
    s.client_says({"type": "input_audio_buffer.clear"})
    s.client_says(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_1",
            "content_index": 0,
            "audio_end_ms": 120,
        }
    )
    assert s.upstream == []
    assert s.types() == ["input_audio_buffer.cleared", "conversation.item.truncated"]
    truncated = s.client[1]
    assert (truncated["item_id"], truncated["audio_end_ms"]) == ("item_1", 120)


def test_g711_input_is_decoded_and_declared_at_8khz_and_output_reencoded() -> None:
    s = session()
    s.client_says(
        {
            "type": "session.update",
            "session": {
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcmu"}},
                }
            },
        }
    )
    pcm = b"\x00\x10" * 80
    s.client_says(append(pcm16_to_ulaw(pcm)))
    assert (
        s.upstream[1]["event"]["promptStart"]["audioOutputConfiguration"]["sampleRateHertz"] == 8000
    )
    audio_start = next(
        e for e in s.upstream if e["event"].get("contentStart", {}).get("type") == "AUDIO"
    )
    assert (
        audio_start["event"]["contentStart"]["audioInputConfiguration"]["sampleRateHertz"] == 8000
    )
    sent = base64.b64decode(s.upstream[-1]["event"]["audioInput"]["content"])
    assert len(sent) == len(pcm)  # 16-bit linear again
    nova(s, "contentStart", contentId="aud", type="AUDIO", role="ASSISTANT")
    nova(s, "audioOutput", contentId="aud", content=base64.b64encode(b"\x00\x00" * 160).decode())
    delta = next(e for e in s.client if e["type"] == "response.output_audio.delta")
    assert len(base64.b64decode(delta["delta"])) == 160  # one byte per G.711 sample


def test_a_spoken_turn_becomes_the_full_ga_sequence_with_one_transcript() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 2400))  # 50 ms
    s.take_types()
    nova(s, "completionStart", completionId="c1")
    content(s, "TEXT", "USER", "FINAL", ["what's up"], "END_TURN", "user1")
    usage(s, 10, 0, 0, 0)
    assert s.take_types() == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assistant_turn(s, "Not much.")
    kinds = s.types()
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
    ]
    assert kinds.count("response.output_audio_transcript.delta") == 1  # FINAL only, not SPECULATIVE
    usage(s, 0, 0, 30, 5)
    done = s.client[-1]
    assert done["type"] == "response.done"
    response = done["response"]
    assert response["status"] == "completed"
    assert response["output"][0]["content"] == [{"type": "output_audio", "transcript": "Not much."}]
    assert response["usage"]["input_tokens"] == 10
    assert response["usage"]["output_token_details"] == {"text_tokens": 5, "audio_tokens": 30}
    assert s.usage[-1]["total_tokens"] == 45
    ids = {e.get("response_id") for e in s.client if "response_id" in e}
    assert ids == {response["id"]}


def test_response_done_waits_briefly_for_usage_then_goes_without() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 100))
    assistant_turn(s)
    assert "response.done" not in s.types()
    s.advance(USAGE_GRACE + 0.01)
    assert s.types()[-1] == "response.done"


def test_barge_in_cancels_the_response_and_drops_the_rest_of_the_turn() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 100))
    nova(s, "contentStart", contentId="aud", type="AUDIO", role="ASSISTANT")
    nova(s, "audioOutput", contentId="aud", content="AAAA")
    s.take_types()
    content(s, "TEXT", "ASSISTANT", "FINAL", ['{ "interrupted" : true }'], "INTERRUPTED", "int")
    kinds = s.take_types()
    assert kinds[0] == "input_audio_buffer.speech_started"
    assert kinds[-1] == "response.done"
    assert "response.output_audio_transcript.delta" not in kinds
    nova(s, "audioOutput", contentId="aud", content="AAAA")  # late audio of the interrupted turn
    assert s.take_types() == []
    content(s, "TEXT", "USER", "FINAL", ["wait"], "END_TURN", "u2")
    kinds = s.take_types()
    assert "input_audio_buffer.speech_started" not in kinds  # already announced at barge-in
    assert kinds[0] == "input_audio_buffer.speech_stopped"
    assistant_turn(s, "Sure.")
    assert "response.created" in s.types()


def test_cancelled_response_reports_barge_in_reason() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 100))
    nova(s, "contentStart", contentId="aud", type="AUDIO", role="ASSISTANT")
    nova(s, "audioOutput", contentId="aud", content="AAAA")
    nova(s, "contentEnd", contentId="aud", type="AUDIO", stopReason="INTERRUPTED")
    done = s.client[-1]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["response"]["output"][0]["status"] == "incomplete"


def test_tool_use_becomes_a_function_call_and_the_output_goes_back_as_tool_content() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 100))
    s.take_types()
    nova(s, "contentStart", contentId="tool", type="TOOL", role="TOOL")
    nova(
        s,
        "toolUse",
        contentId="tool",
        toolName="weather",
        toolUseId="tu-1",
        content='{"city":"Oslo"}',
    )
    nova(s, "contentEnd", contentId="tool", type="TOOL", stopReason="TOOL_USE")
    s.advance(USAGE_GRACE + 0.01)
    kinds = s.types()
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    args = s.client[4]
    assert (args["call_id"], args["name"], args["arguments"]) == (
        "tu-1",
        "weather",
        '{"city":"Oslo"}',
    )
    assert s.client[-1]["response"]["output"][0]["type"] == "function_call"
    s.upstream.clear()
    s.client_says(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "tu-1", "output": '{"temp":3}'},
        }
    )
    assert names(s) == ["contentStart", "toolResult", "contentEnd"]
    start = s.upstream[0]["event"]["contentStart"]
    assert start["toolResultInputConfiguration"]["toolUseId"] == "tu-1"
    assert (start["type"], start["role"]) == ("TOOL", "TOOL")
    assert s.upstream[1]["event"]["toolResult"]["content"] == '{"temp":3}'


def test_text_history_before_audio_and_refusal_after_on_v1() -> None:
    s = session()
    s.client_says({"type": "session.update", "session": {"instructions": "hi"}})
    s.upstream.clear()
    s.client_says(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "I like tea"}],
            },
        }
    )
    assert names(s) == ["contentStart", "textInput", "contentEnd"]
    assert s.upstream[0]["event"]["contentStart"]["role"] == "USER"
    assert s.types()[-2:] == ["conversation.item.added", "conversation.item.done"]
    s.client_says(append(b"\x01\x00" * 10))
    s.upstream.clear()
    s.client_says(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "more"}],
            },
        }
    )
    assert s.upstream == []
    assert s.client[-1]["type"] == "error"


def test_nova2_takes_typed_text_mid_session_as_interactive_input() -> None:
    s = session("amazon.nova-2-sonic-v1:0")
    s.client_says(append(b"\x01\x00" * 10))
    s.upstream.clear()
    s.client_says(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "typed"}],
            },
        }
    )
    assert s.upstream[0]["event"]["contentStart"]["interactive"] is True


def test_a_later_session_update_that_changes_nova_settings_is_reported() -> None:
    s = session()
    s.client_says({"type": "session.update", "session": {"instructions": "one"}})
    s.take_types()
    s.client_says({"type": "session.update", "session": {"instructions": "one"}})
    assert s.take_types() == ["session.updated"]
    s.client_says({"type": "session.update", "session": {"instructions": "two"}})
    kinds = s.types()
    assert kinds == ["error", "session.updated"]
    assert s.client[-1]["session"]["instructions"] == "one"


def test_client_leaving_closes_content_prompt_and_session_in_order() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 10))
    s.upstream.clear()
    s.client_closed()
    assert names(s) == ["contentEnd", "promptEnd", "sessionEnd"]
    s.client_closed()
    assert len(s.upstream) == 3


def test_throttling_surfaces_as_error_and_1013() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 10))
    nova(s, "contentStart", contentId="aud", type="AUDIO", role="ASSISTANT")
    nova(s, "audioOutput", contentId="aud", content="AAAA")
    s.upstream_closed(1013, "Too many requests", "ThrottlingException")
    error = next(e for e in s.client if e["type"] == "error")
    assert error["error"]["code"] == "ThrottlingException"
    failed = next(e for e in s.client if e["type"] == "response.done")
    assert failed["response"]["status"] == "failed"
    assert s.closed == (1013, "Too many requests")


def test_validation_closes_with_1008() -> None:
    s = session()
    s.upstream_closed(1008, "bad voice", "ValidationException")
    assert s.closed == (1008, "bad voice")
    assert s.client[-1]["error"]["type"] == "invalid_request_error"


def test_response_cancel_is_local() -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 10))
    nova(s, "contentStart", contentId="aud", type="AUDIO", role="ASSISTANT")
    nova(s, "audioOutput", contentId="aud", content="AAAA")
    s.upstream.clear()
    s.client_says({"type": "response.cancel"})
    assert s.upstream == []
    assert s.client[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    s.take_types()
    nova(s, "audioOutput", contentId="aud", content="AAAA")
    assert s.client == []


nova_names = st.sampled_from(
    [
        "completionStart",
        "contentStart",
        "textOutput",
        "audioOutput",
        "toolUse",
        "contentEnd",
        "usageEvent",
        "completionEnd",
        "other",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "contentId": st.sampled_from(["a", "b", 3]),
        "type": st.sampled_from(["TEXT", "AUDIO", "TOOL", 1]),
        "role": st.sampled_from(["USER", "ASSISTANT", "TOOL"]),
        "content": st.sampled_from(["AAAA", '{ "interrupted" : true }', "hi", 5]),
        "stopReason": st.sampled_from(["END_TURN", "PARTIAL_TURN", "INTERRUPTED", "TOOL_USE"]),
        "additionalModelFields": st.sampled_from(
            ['{"generationStage":"FINAL"}', '{"generationStage":"SPECULATIVE"}', 7]
        ),
        "details": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(nova_names, bodies), max_size=25), st.booleans())
def test_any_nova_event_sequence_keeps_the_ga_stream_well_formed(
    events: list[tuple[str, dict[str, Any]]], barge: bool
) -> None:
    s = session()
    s.client_says(append(b"\x01\x00" * 10))
    for name, body in events:
        nova(s, name, **body)
        if barge:
            s.advance(0.1)
    s.upstream_closed(1000, "")
    open_responses: set[str] = set()
    for event in s.client:
        if event["type"] == "response.created":
            assert not open_responses, "one response at a time"
            open_responses.add(event["response"]["id"])
        elif event["type"] == "response.done":
            open_responses.discard(event["response"]["id"])
        elif "response_id" in event:
            assert event["response_id"] in open_responses
    assert not open_responses
    assert s.closed is not None
