"""Hypothesis: arbitrary interleavings of client events and Gemini messages.

Whatever arrives, the translator never raises, every frame it sends Gemini is
a valid ``LiveClientMessage``, and every response is created once, closed once,
with each delta between its item's added and done.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gemini_helpers import append, gemini, model_audio, pcm
from tests.transcript import check_response_order

_SESSIONS = [
    {"type": "realtime"},
    {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
    {"type": "realtime", "output_modalities": ["text"], "instructions": "x"},
    {
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    },
    {
        "type": "realtime",
        "audio": {"input": {"transcription": {"model": "m"}}},
        "instructions": "changed",
    },
]

client_events = st.one_of(
    st.sampled_from(_SESSIONS).map(lambda s: {"type": "session.update", "session": s}),
    st.integers(0, 64).map(lambda n: append(pcm(n * 2))),
    st.just({"type": "input_audio_buffer.commit"}),
    st.just({"type": "input_audio_buffer.clear"}),
    st.just({"type": "response.create"}),
    st.just({"type": "response.create", "response": {"instructions": "x"}}),
    st.just({"type": "response.cancel"}),
    st.just(
        {
            "type": "conversation.item.truncate",
            "item_id": "i",
            "content_index": 0,
            "audio_end_ms": 10,
        }
    ),
    st.text(max_size=8).map(
        lambda t: {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": t}],
            },
        }
    ),
    st.sampled_from(["c1", "c2", "zz"]).map(
        lambda c: {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": c, "output": "{}"},
        }
    ),
    st.just({"type": "bogus"}),
)

upstream_messages = st.one_of(
    st.just({"setupComplete": {}}),
    st.integers(1, 48).map(lambda n: model_audio(pcm(n))),
    st.text(max_size=6).map(lambda t: {"serverContent": {"outputTranscription": {"text": t}}}),
    st.text(max_size=6).map(lambda t: {"serverContent": {"inputTranscription": {"text": t}}}),
    st.text(max_size=6).map(lambda t: {"serverContent": {"modelTurn": {"parts": [{"text": t}]}}}),
    st.just({"serverContent": {"generationComplete": True}}),
    st.just(
        {
            "serverContent": {"turnComplete": True},
            "usageMetadata": {"promptTokenCount": 3, "responseTokenCount": 2},
        }
    ),
    st.just({"serverContent": {"interrupted": True}}),
    st.sampled_from(["c1", "c2"]).map(
        lambda c: {"toolCall": {"functionCalls": [{"id": c, "name": "f", "args": {"a": 1}}]}}
    ),
    st.just({"toolCallCancellation": {"ids": ["c1"]}}),
    st.text(max_size=4).map(
        lambda h: {"sessionResumptionUpdate": {"newHandle": h, "resumable": True}}
    ),
    st.sampled_from(["0s", "2s", "30s", "bad"]).map(lambda t: {"goAway": {"timeLeft": t}}),
    st.just({"usageMetadata": {"totalTokenCount": "12"}}),
)

steps = st.lists(
    st.one_of(
        client_events.map(lambda e: ("client", e)),
        upstream_messages.map(lambda m: ("upstream", m)),
        st.floats(0.0, 10.0).map(lambda dt: ("time", dt)),
        st.just(("reconnected", None)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.sampled_from([None, 1007, 1011, 1000]))
def test_any_sequence_keeps_the_ga_shape(seq: list[tuple[str, Any]], close: int | None) -> None:
    d = gemini()
    d.start()
    reconnect_pending = False
    for kind, value in seq:
        if kind == "client":
            out = d.client_says(value).outbox
        elif kind == "upstream":
            out = d.upstream_says(value).outbox
        elif kind == "time":
            out = d.advance(value).outbox
        else:
            if not reconnect_pending:
                continue
            out = d.reconnected().outbox
            reconnect_pending = False
        if out.reconnect is not None:
            reconnect_pending = True
    if close is not None:
        d.upstream_closed(close, "bye")
        # After the upstream ends nothing can still be open.
        created = sum(1 for e in d.client if e["type"] == "response.created")
        done = sum(1 for e in d.client if e["type"] == "response.done")
        assert created == done
    check_response_order(d.client)
