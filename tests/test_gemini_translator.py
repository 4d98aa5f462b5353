"""Transcript tests of the Gemini translator: client events in, Gemini frames out, and back."""

from __future__ import annotations

import base64

import pytest

from rtgate.translate import audio
from rtgate.translate.base import CloseClient
from rtgate.translate.gemini.translator import GeminiTranslator, parse_duration
from tests.gemini_helpers import (
    MODEL,
    append,
    b64,
    gemini,
    model_audio,
    pcm,
)
from tests.transcript import Transcript, check_response_order

SESSION = {
    "type": "realtime",
    "instructions": "Be brief.",
    "output_modalities": ["audio"],
    "audio": {
        "input": {
            "transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": {
                "type": "server_vad",
                "silence_duration_ms": 700,
                "prefix_padding_ms": 200,
            },
        },
        "output": {"voice": "alloy"},
    },
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": ["integer", "null"]}},
                "required": ["city"],
                "additionalProperties": False,
            },
        }
    ],
    "max_output_tokens": 512,
}


def live_driver(session: dict[str, object] | None = None) -> Transcript:
    d = gemini()
    d.start()
    d.client_says({"type": "session.update", "session": session or SESSION})
    d.upstream_says({"setupComplete": {}})
    d.take()
    return d


def test_start_announces_session_and_waits_for_configuration() -> None:
    d = gemini()
    d.start()
    assert d.types() == ["session.created"]
    session = d.client[0]["session"]
    assert session["type"] == "realtime" and session["model"] == "gem"
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert d.upstream == []
    assert d.t.deadline == pytest.approx(102.0)


def test_first_session_update_builds_the_one_setup() -> None:
    d = gemini()
    d.start()
    d.take()
    d.client_says({"type": "session.update", "session": SESSION})
    client, upstream = d.take()
    assert len(upstream) == 1
    setup = upstream[0]["setup"]
    assert setup["model"] == MODEL
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert (
        setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
        == "Zephyr"
    )
    assert setup["generationConfig"]["maxOutputTokens"] == 512
    assert setup["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    declaration = setup["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert declaration["parameters"]["type"] == "OBJECT"
    assert declaration["parameters"]["properties"]["days"] == {"type": "INTEGER", "nullable": True}
    vad = setup["realtimeInputConfig"]["automaticActivityDetection"]
    assert vad == {"disabled": False, "silenceDurationMs": 700, "prefixPaddingMs": 200}
    assert setup["inputAudioTranscription"] == {} and setup["outputAudioTranscription"] == {}
    assert setup["sessionResumption"] == {}
    assert d.t.deadline is None
    assert [e["type"] for e in client] == ["session.updated"]
    d.upstream_says({"setupComplete": {}})
    assert d.client == []
    echoed = client[0]["session"]
    assert echoed["instructions"] == "Be brief." and echoed["audio"]["output"]["voice"] == "alloy"


def test_without_session_update_the_default_setup_goes_after_the_wait() -> None:
    d = gemini()
    d.start()
    d.client_says(append(pcm(480)))
    assert d.upstream == []
    d.advance_to(101.0)
    assert d.upstream == []
    d.advance_to(102.5)
    assert [next(iter(m)) for m in d.upstream] == ["setup"]
    assert d.upstream[0]["setup"]["generationConfig"]["speechConfig"]["voiceConfig"][
        "prebuiltVoiceConfig"
    ]
    d.take()
    d.upstream_says({"setupComplete": {}})
    client, upstream = d.take()
    assert client == []  # no session.updated: the client never asked for a change
    assert upstream[0]["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=24000"


def test_audio_before_setup_complete_is_held_and_flushed_in_order() -> None:
    d = gemini()
    d.start()
    chunks = [pcm(240, v) for v in (1, 2, 3)]
    d.client_says(append(chunks[0]))
    d.client_says({"type": "session.update", "session": SESSION})
    d.client_says(append(chunks[1]))
    d.client_says(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    )
    d.client_says(append(chunks[2]))
    assert [next(iter(m)) for m in d.upstream] == ["setup"]
    d.take()
    d.upstream_says({"setupComplete": {}})
    _, upstream = d.take()
    kinds = [next(iter(m)) for m in upstream]
    assert kinds == ["realtimeInput", "realtimeInput", "clientContent", "realtimeInput"]
    sent = [
        base64.b64decode(m["realtimeInput"]["audio"]["data"])
        for m in upstream
        if "realtimeInput" in m
    ]
    assert sent == chunks
    assert upstream[2]["clientContent"] == {
        "turns": [{"role": "user", "parts": [{"text": "hi"}]}],
        "turnComplete": False,
    }


def test_held_input_is_bounded_and_overflow_is_reported_once() -> None:
    t = GeminiTranslator(model_path=MODEL, model_group="g", session_id="s", max_buffered_bytes=3000)
    d = gemini(t)
    d.start()
    d.take()
    for _ in range(5):
        d.client_says(append(pcm(480)))
    errors = [e for e in d.client if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "input_buffer_full"


def test_g711_input_is_decoded_and_labelled_8khz() -> None:
    session = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    d = live_driver(session)
    ulaw = audio.pcm16_to_ulaw(pcm(160, 3000))
    d.client_says({"type": "input_audio_buffer.append", "audio": b64(ulaw)})
    blob = d.upstream[0]["realtimeInput"]["audio"]
    assert blob["mimeType"] == "audio/pcm;rate=8000"
    assert base64.b64decode(blob["data"]) == audio.ulaw_to_pcm16(ulaw)


def test_g711_output_is_resampled_and_encoded() -> None:
    session = {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcma"}}}}
    d = live_driver(session)
    d.upstream_says(model_audio(pcm(2400, 2000)))
    delta = next(e for e in d.client if e["type"] == "response.output_audio.delta")
    alaw = base64.b64decode(delta["delta"])
    assert abs(len(alaw) - 800) <= 2  # 2400 samples at 24 kHz -> 800 at 8 kHz, one byte each
    assert (
        abs(int.from_bytes(audio.alaw_to_pcm16(alaw)[800:802], "little", signed=True) - 2000) < 200
    )


def test_a_spoken_turn_becomes_the_full_ga_sequence() -> None:
    d = live_driver()
    d.client_says(append(pcm(480)))
    d.take()
    d.upstream_says({"serverContent": {"inputTranscription": {"text": "what's the "}}})
    d.upstream_says({"serverContent": {"inputTranscription": {"text": "weather"}}})
    d.upstream_says(model_audio(pcm(480)))
    d.upstream_says({"serverContent": {"outputTranscription": {"text": "Sunny."}}})
    d.upstream_says(model_audio(pcm(480)))
    d.upstream_says({"serverContent": {"generationComplete": True}})
    d.upstream_says(
        {
            "serverContent": {"turnComplete": True},
            "usageMetadata": {
                "promptTokenCount": 100,
                "responseTokenCount": 40,
                "totalTokenCount": 140,
                "promptTokensDetails": [
                    {"modality": "AUDIO", "tokenCount": 90},
                    {"modality": "TEXT", "tokenCount": 10},
                ],
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 40}],
            },
        }
    )
    assert d.types() == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    check_response_order(d.client)
    user_item = d.client[0]["item_id"]
    assert d.client[2]["item_id"] == user_item
    assert (
        d.client[-1]["transcript"] == "what's the weather" and d.client[-1]["item_id"] == user_item
    )
    done = d.client[-2]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Sunny."}]
    assert done["usage"]["input_tokens"] == 100 and done["usage"]["output_tokens"] == 40
    assert done["usage"]["input_token_details"]["audio_tokens"] == 90
    assert done["usage"]["output_token_details"]["audio_tokens"] == 40
    audio_delta = d.client[9]
    assert base64.b64decode(audio_delta["delta"]) == pcm(480)  # 24 kHz PCM passes through
    usage = d.outboxes[-1].usage
    assert (
        usage is not None
        and usage["total_tokens"] == 140
        and usage["input_token_details.audio_tokens"] == 90
    )


def test_vertex_usage_field_names_and_standalone_usage_frame() -> None:
    d = live_driver()
    d.upstream_says(model_audio(pcm(48)))
    d.upstream_says(
        {
            "usageMetadata": {
                "promptTokenCount": 7,
                "candidatesTokenCount": 5,
                "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}],
                "thoughtsTokenCount": 2,
            }
        }
    )
    d.upstream_says({"serverContent": {"turnComplete": True}})
    usage = d.client[-1]["response"]["usage"]
    assert usage["output_tokens"] == 7 and usage["total_tokens"] == 14
    assert usage["output_token_details"] == {"text_tokens": 2, "audio_tokens": 5}


def test_text_modality_streams_output_text() -> None:
    d = live_driver({"type": "realtime", "output_modalities": ["text"]})
    assert "speechConfig" not in d.t.state.plan.setup["generationConfig"]
    d.upstream_says(
        {
            "serverContent": {
                "modelTurn": {"parts": [{"text": "thinking", "thought": True}, {"text": "Hel"}]}
            }
        }
    )
    d.upstream_says({"serverContent": {"modelTurn": {"parts": [{"text": "lo"}]}}})
    d.upstream_says({"serverContent": {"turnComplete": True}})
    kinds = d.types()
    assert kinds.count("response.output_text.delta") == 2
    text_done = next(e for e in d.client if e["type"] == "response.output_text.done")
    assert text_done["text"] == "Hello"
    check_response_order(d.client)


def test_tool_call_round_trip_keeps_the_name() -> None:
    d = live_driver()
    d.upstream_says(
        {
            "toolCall": {
                "functionCalls": [{"id": "fc_1", "name": "get_weather", "args": {"city": "Oslo"}}]
            }
        }
    )
    client, _ = d.take()
    kinds = [e["type"] for e in client]
    assert kinds[0] == "response.created" and kinds[-1] == "response.done"
    done_args = next(e for e in client if e["type"] == "response.function_call_arguments.done")
    assert done_args["call_id"] == "fc_1" and done_args["name"] == "get_weather"
    assert done_args["arguments"] == '{"city":"Oslo"}'
    assert client[-1]["response"]["output"][0]["type"] == "function_call"
    check_response_order(client)
    d.upstream_says(
        {"serverContent": {"turnComplete": True}}
    )  # Gemini's bare turn end: nothing to say
    assert d.client == []
    d.client_says(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "fc_1", "output": '"sunny"'},
        }
    )
    response = d.upstream[0]["toolResponse"]["functionResponses"][0]
    assert response == {"id": "fc_1", "name": "get_weather", "response": {"output": "sunny"}}
    assert [e["type"] for e in d.client] == ["conversation.item.added", "conversation.item.done"]
    d.take()
    d.client_says({"type": "response.create"})
    assert d.upstream == []  # Gemini continues after a tool response by itself
    d.client_says(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "nope", "output": "{}"},
        }
    )
    assert d.client[-1]["type"] == "error"


def test_interruption_cancels_the_response_and_signals_speech() -> None:
    d = live_driver()
    d.upstream_says(model_audio(pcm(48)))
    d.upstream_says({"serverContent": {"interrupted": True}})
    d.upstream_says(model_audio(pcm(48)))  # late audio of the cut-off turn is dropped
    d.upstream_says({"serverContent": {"turnComplete": True}})
    kinds = d.types()
    done = next(e for e in d.client if e["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert "input_audio_buffer.speech_started" in kinds
    assert kinds.count("response.created") == 1 and kinds.count("response.done") == 1
    check_response_order(d.client)


def test_client_cancel_closes_now_and_suppresses_the_rest_of_the_turn() -> None:
    d = live_driver()
    d.client_says({"type": "response.cancel"})
    assert d.client[-1]["error"]["code"] == "response_cancel_not_active"
    d.take()
    d.upstream_says(model_audio(pcm(48)))
    d.client_says({"type": "response.cancel"})
    done = d.client[-1]
    assert (
        done["type"] == "response.done"
        and done["response"]["status_details"]["reason"] == "client_cancelled"
    )
    d.take()
    d.upstream_says(model_audio(pcm(48)))
    d.upstream_says({"serverContent": {"turnComplete": True}})
    assert d.client == []
    d.upstream_says(model_audio(pcm(48)))
    assert d.types()[0] == "response.created"


def test_manual_turns_use_activity_markers() -> None:
    d = live_driver({"type": "realtime", "audio": {"input": {"turn_detection": None}}})
    assert d.t.state.plan.setup["realtimeInputConfig"] == {
        "automaticActivityDetection": {"disabled": True}
    }
    d.client_says({"type": "input_audio_buffer.commit"})
    assert d.client[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
    d.take()
    d.client_says(append(pcm(48)))
    d.client_says(append(pcm(48)))
    d.client_says({"type": "input_audio_buffer.commit"})
    kinds = [next(iter(m["realtimeInput"])) for m in d.upstream]
    assert kinds == ["activityStart", "audio", "audio", "activityEnd"]
    assert [e["type"] for e in d.client] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    d.take()
    d.client_says({"type": "response.create"})
    assert d.upstream == [{"clientContent": {"turnComplete": True}}] or d.upstream == []


def test_text_item_then_response_create_completes_the_turn() -> None:
    d = live_driver()
    d.client_says(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hello"}],
            },
        }
    )
    d.client_says({"type": "response.create"})
    assert d.upstream[-1] == {"clientContent": {"turnComplete": True}}
    d.take()
    d.upstream_says(model_audio(pcm(48)))
    d.client_says({"type": "response.create"})
    assert d.client[-1]["error"]["code"] == "conversation_already_has_active_response"


def test_unhonourable_configuration_is_reported_not_dropped() -> None:
    d = gemini()
    d.start()
    d.client_says(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "tool_choice": "required",
                "audio": {
                    "input": {"noise_reduction": {"type": "near_field"}},
                    "output": {"speed": 1.5},
                },
                "tools": [{"type": "mcp", "server_label": "x"}],
            },
        }
    )
    error = next(e for e in d.client if e["type"] == "error")
    message = error["error"]["message"]
    for fragment in ("tool_choice=required", "noise_reduction", "audio.output.speed", "tools[0]"):
        assert fragment in message


def test_truncate_and_clear_are_acknowledged_locally() -> None:
    d = live_driver()
    d.client_says(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_x",
            "content_index": 0,
            "audio_end_ms": 1500,
        }
    )
    d.client_says({"type": "input_audio_buffer.clear"})
    assert d.types() == ["conversation.item.truncated", "input_audio_buffer.cleared"]
    assert d.client[0]["audio_end_ms"] == 1500
    assert d.upstream == []


def test_goaway_when_idle_reconnects_with_the_latest_handle() -> None:
    d = live_driver()
    d.upstream_says({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}})
    d.upstream_says({"sessionResumptionUpdate": {"newHandle": "h-busy", "resumable": False}})
    out = d.upstream_says({"goAway": {"timeLeft": "30s"}})
    assert out.reconnect is not None
    d.client_says(append(pcm(48, 7)))  # held: must reach the new connection, not the dying one
    assert d.upstream == []
    d.reconnected()
    assert d.upstream[0]["setup"]["sessionResumption"] == {"handle": "h1"}
    d.take()
    d.upstream_says({"setupComplete": {}})
    client, upstream = d.take()
    assert client == []  # transparent for the client
    assert base64.b64decode(upstream[0]["realtimeInput"]["audio"]["data"]) == pcm(48, 7)


def test_goaway_mid_turn_waits_for_the_turn_or_the_deadline() -> None:
    d = live_driver()
    d.upstream_says({"sessionResumptionUpdate": {"newHandle": "h1"}})
    d.upstream_says(model_audio(pcm(48)))
    out = d.upstream_says({"goAway": {"timeLeft": "10s"}})
    assert out.reconnect is None and d.t.deadline == pytest.approx(107.0)
    out = d.upstream_says({"serverContent": {"turnComplete": True}})
    assert out.reconnect is not None
    d.take()
    # Second case: the turn never ends before the deadline.
    d2 = live_driver()
    d2.upstream_says(model_audio(pcm(48)))
    d2.upstream_says({"goAway": {"timeLeft": "5s"}})
    out = d2.advance_to(102.5)
    assert out.reconnect is not None
    d2.reconnected()
    done = next(e for e in d2.client if e["type"] == "response.done")
    assert done["response"]["status"] == "failed"
    check_response_order(d2.client)


def test_later_session_update_reconnects_with_the_new_setup() -> None:
    d = live_driver()
    d.client_says(append(pcm(48)))
    d.upstream_says({"sessionResumptionUpdate": {"newHandle": "h2"}})
    d.take()
    out = d.client_says({"type": "session.update", "session": {"instructions": "Be verbose."}})
    assert out.reconnect is not None and "systemInstruction" in out.reconnect.reason
    d.reconnected()
    setup = d.upstream[0]["setup"]
    assert setup["systemInstruction"]["parts"][0]["text"] == "Be verbose."
    assert setup["sessionResumption"] == {"handle": "h2"}
    d.upstream_says({"setupComplete": {}})
    assert d.types() == ["session.updated"]


def test_later_session_update_without_handle_is_refused_with_an_error() -> None:
    d = live_driver()
    d.client_says(append(pcm(48)))
    d.take()
    out = d.client_says(
        {
            "type": "session.update",
            "session": {
                "instructions": "New",
                "audio": {"output": {"format": {"type": "audio/pcmu"}}},
            },
        }
    )
    assert out.reconnect is None
    kinds = d.types()
    assert kinds == ["error", "session.updated"]
    assert "systemInstruction" in d.client[0]["error"]["message"]
    echoed = d.client[1]["session"]
    assert echoed["instructions"] == "Be brief." and echoed["audio"]["output"]["format"] == {
        "type": "audio/pcmu"
    }


def test_session_update_changing_only_local_settings_needs_no_reconnect() -> None:
    d = live_driver()
    out = d.client_says(
        {
            "type": "session.update",
            "session": {"audio": {"input": {"format": {"type": "audio/pcma"}}}},
        }
    )
    assert out.reconnect is None and d.types() == ["session.updated"]


@pytest.mark.parametrize(
    ("code", "client_code", "kind"),
    [
        (1007, 1008, "invalid_request_error"),
        (1008, 1008, "invalid_request_error"),
        (1011, 1011, "server_error"),
    ],
)
def test_upstream_close_codes_become_an_error_then_a_close(
    code: int, client_code: int, kind: str
) -> None:
    d = live_driver()
    d.upstream_says(model_audio(pcm(48)))
    out = d.upstream_closed(
        code, "Request contains an invalid argument. key=AIzaSyFAKEFAKEFAKEFAKE"
    )
    error = next(e for e in d.client if e["type"] == "error")
    assert error["error"]["type"] == kind and error["error"]["code"] == f"upstream_{code}"
    assert "AIza" not in error["error"]["message"]
    assert out.close == CloseClient(client_code, out.close.reason if out.close else "")
    assert out.close is not None and "AIza" not in out.close.reason
    assert [e["response"]["status"] for e in d.client if e["type"] == "response.done"] == ["failed"]


def test_failed_reconnect_keeps_the_old_connection() -> None:
    d = live_driver()
    d.upstream_says({"sessionResumptionUpdate": {"newHandle": "h"}})
    d.upstream_says({"goAway": {"timeLeft": "20s"}})
    d.client_says(append(pcm(48)))
    d.take()
    out = d.reconnect_failed("refused")
    assert out.close is None
    assert d.client[0]["error"]["code"] == "upstream_reconnect_failed"
    assert "refused" in d.client[0]["error"]["message"]
    assert "realtimeInput" in d.upstream[0]
    # The old connection carries on: its later end is an ordinary close.
    assert d.upstream_closed(1000, "bye").close == CloseClient(1000, "bye")


def test_a_reconnect_failure_nobody_asked_for_changes_nothing() -> None:
    d = live_driver()
    step = d.reconnect_failed("refused")
    assert step.client == [] and step.close is None


def test_parse_duration() -> None:
    assert parse_duration("9.5s") == 9.5
    assert parse_duration({"seconds": 3, "nanos": 500000000}) == 3.5
    assert parse_duration("bogus") == 0.0


def test_text_frames_and_unknown_events_do_not_break_the_session() -> None:
    d = live_driver()
    d.upstream_says(
        {"serverContent": {"modelTurn": {"parts": [{"text": "ignored in audio mode"}]}}},
        binary=False,
    )
    d.upstream_says({"somethingNew": {}})
    d.client_says({"type": "conversation.item.delete", "item_id": "x"})
    d.client_says({"type": "no.such.event"})
    assert [e["type"] for e in d.client] == ["error", "error"]
