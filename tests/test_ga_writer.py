"""The one GA writer (translate/ga/) and the harness's GA check that guards every translator.

The check must have teeth: each drift the translators once had (a content part
typed ``output_audio``, item content typed ``audio``, a role on a call item, a
transcription without usage) is refused. The writer's events are strict GA and
in GA's order whatever a provider feeds it.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtgate.translate.base import Outbox
from rtgate.translate.ga import items
from rtgate.translate.ga.items import ItemChain, client_item
from rtgate.translate.ga.response import ResponseWriter
from rtgate.translate.ga.session import session_event, session_object
from rtgate.translate.ga.usage import Usage
from rtgate.translate.gemini.translator import GeminiTranslator
from tests.gemini_helpers import MODEL, append, gemini, model_audio, pcm
from tests.transcript import Transcript, check_response_order, validate_server_event

PCM = {"type": "audio/pcm", "rate": 24000}


def writer(out: Outbox, modality: Any = "audio", chain: ItemChain | None = None) -> ResponseWriter:
    return ResponseWriter(
        out,
        modality=modality,
        output_format=PCM,
        voice="marin",
        max_output_tokens="inf",
        conversation=chain if chain is not None else ItemChain(),
        conversation_id="conv_1",
    )


def events(out: Outbox) -> list[dict[str, Any]]:
    decoded = [orjson.loads(frame) for frame in out.to_client]
    for event in decoded:
        validate_server_event(event)
    return decoded


def audio_response() -> list[dict[str, Any]]:
    out = Outbox()
    w = writer(out)
    w.audio(out, "AAAA")
    w.transcript(out, "Hi")
    w.close(out, "completed", usage=Usage(input_audio=3, output_audio=5))
    return events(out)


# -- the check has teeth ---------------------------------------------------------------


def test_the_check_accepts_what_the_writer_writes() -> None:
    kinds = [e["type"] for e in audio_response()]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]


def _spoiled(kind: str, spoil: Any) -> dict[str, Any]:
    event = copy.deepcopy(next(e for e in audio_response() if e["type"] == kind))
    spoil(event)
    return event


@pytest.mark.parametrize(
    ("kind", "spoil"),
    [
        # Gemini's drift: the part of content_part.* typed like item content.
        (
            "response.content_part.added",
            lambda e: e["part"].update(type="output_audio"),
        ),
        # Nova's drift: item content typed like a part.
        ("response.output_item.done", lambda e: e["item"]["content"][0].update(type="audio")),
        ("response.done", lambda e: e["response"]["output"][0]["content"][0].update(type="audio")),
        # xAI's drift: a role on a function call item.
        ("conversation.item.added", lambda e: e.update(item={
            **items.function_call_item("i", "c", "f", "{}", "completed"), "role": "assistant"})),
        ("response.content_part.done", lambda e: e["part"].pop("type")),
        ("response.output_audio.delta", lambda e: e.update(output_index="0")),
        ("response.output_audio.delta", lambda e: e.update(outputindex=0)),
        ("response.done", lambda e: e["response"].update(status="done")),
        ("response.created", lambda e: e.update(type="response.begun")),
    ],
)  # fmt: skip
def test_the_check_refuses_drift(kind: str, spoil: Any) -> None:
    with pytest.raises(AssertionError):
        validate_server_event(_spoiled(kind, spoil))


def test_the_check_refuses_a_transcription_without_usage() -> None:
    event = {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e",
        "item_id": "i",
        "content_index": 0,
        "transcript": "hi",
    }
    with pytest.raises(AssertionError):
        validate_server_event(event)
    validate_server_event({**event, "usage": {"type": "duration", "seconds": 0}})


def test_the_session_may_carry_what_openai_reports_and_nothing_else() -> None:
    session = session_object(model="m", voice="marin", session_id="sess_1")
    validate_server_event(session_event("session.created", session))
    assert {"id", "object", "expires_at"} <= set(session)
    with pytest.raises(AssertionError):
        validate_server_event(session_event("session.created", {**session, "voice": "x"}))


# -- the writer ------------------------------------------------------------------------


def test_parts_are_text_or_audio_and_item_content_output_text_or_output_audio() -> None:
    for modality, part, content in (
        ("audio", {"type": "audio", "transcript": "Hi"}, {"type": "output_audio", "transcript": "Hi"}),
        ("text", {"type": "text", "text": "Hi"}, {"type": "output_text", "text": "Hi"}),
    ):  # fmt: skip
        out = Outbox()
        w = writer(out, modality)
        w.text(out, "Hi") if modality == "text" else w.transcript(out, "Hi")
        w.close(out, "completed")
        said = events(out)
        (added,) = [e for e in said if e["type"] == "response.content_part.added"]
        (done,) = [e for e in said if e["type"] == "response.content_part.done"]
        assert added["part"] == {**part, **{k: "" for k in part if k != "type"}}
        assert done["part"] == part
        final = said[-1]["response"]["output"][0]
        assert final["content"] == [content] and final["role"] == "assistant"


def test_indices_count_the_response_items_and_the_chain_names_each_predecessor() -> None:
    out = Outbox()
    chain = ItemChain()
    chain.last = "item_user"
    w = writer(out, chain=chain)
    w.function_call(out, "call_1", "f", '{"a":1}')
    w.audio(out, "AAAA")
    w.close(out, "completed")
    said = events(out)
    call_id, message_id = (i["id"] for i in said[-1]["response"]["output"])
    delta = next(e for e in said if e["type"] == "response.output_audio.delta")
    assert (delta["item_id"], delta["output_index"], delta["content_index"]) == (message_id, 1, 0)
    previous = {
        (e["type"], e["item"]["id"]): e["previous_item_id"]
        for e in said
        if e["type"].startswith("conversation.item.")
    }
    assert previous == {
        ("conversation.item.added", call_id): "item_user",
        ("conversation.item.done", call_id): "item_user",
        ("conversation.item.added", message_id): call_id,
        ("conversation.item.done", message_id): call_id,
    }
    assert chain.last == message_id


def test_response_done_is_sent_once_and_always_counted() -> None:
    out = Outbox()
    w = writer(out)
    w.close(out, "cancelled", {"type": "cancelled", "reason": "client_cancelled"})
    w.close(out, "completed", usage=Usage(output_text=4))
    said = events(out)
    assert [e["type"] for e in said].count("response.done") == 1
    assert said[-1]["response"]["usage"] is None
    assert out.responses_done == 1 and out.usage is None


def test_usage_is_ga_usage_and_its_flat_record() -> None:
    usage = Usage(input_text=2, input_audio=3, cached=1, output_text=4, output_audio=5)
    ga = usage.as_ga()
    assert (ga["input_tokens"], ga["output_tokens"], ga["total_tokens"]) == (5, 9, 14)
    assert usage.record()["input_token_details.cached_tokens"] == 1
    assert usage.record()["output_token_details.audio_tokens"] == 5
    # A provider's own totals win over the sums of what it itemised.
    assert Usage(input_text=2, input=7, total=20).as_ga()["input_tokens"] == 7
    assert Usage(input_text=2, input=7, total=20).as_ga()["total_tokens"] == 20


def test_an_out_of_band_response_stays_out_of_the_conversation() -> None:
    out = Outbox()
    w = ResponseWriter(
        out, modality="text", output_format=PCM, voice="marin", max_output_tokens=5,
        conversation=None, conversation_id=None, metadata={"k": "v"},
    )  # fmt: skip
    w.text(out, "hi")
    w.close(out, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"})
    said = events(out)
    assert not [e for e in said if e["type"].startswith("conversation.")]
    assert said[-1]["response"]["output"][0]["status"] == "incomplete"
    assert said[-1]["response"]["metadata"] == {"k": "v"}


WRITER_CALLS = st.lists(
    st.sampled_from(["audio", "transcript", "text", "audio_done", "call", "finish_message"]),
    max_size=12,
)


@given(
    WRITER_CALLS, st.sampled_from(["audio", "text"]), st.sampled_from(["completed", "cancelled"])
)
def test_any_feeding_gives_strict_ga_in_order(calls: list[str], modality: Any, status: str) -> None:
    out = Outbox()
    w = writer(out, modality)
    for call in calls:
        if call == "call":
            w.function_call(out, "c", "f", "{}")
        elif call == "finish_message":
            w.finish_message(out)
        elif call == "audio_done":
            w.audio_done(out)
        else:
            getattr(w, call)(out, "AAAA")
    w.close(out, status)
    w.audio(out, "AAAA")  # after the end: nothing
    said = events(out)
    check_response_order(said)
    done = said[-1]
    assert done["type"] == "response.done"
    assert [i["id"] for i in done["response"]["output"]] == [
        e["item"]["id"] for e in said if e["type"] == "response.output_item.added"
    ]


# -- items a client created --------------------------------------------------------------


def test_client_items_are_echoed_in_ga_shape() -> None:
    user = client_item(
        {
            "type": "message",
            "role": "user",
            "extra": 1,
            "content": [
                {"type": "text", "text": "a"},
                {"type": "input_audio", "audio": "AAAA"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
            ],
        },
        "item_1",
    )
    assert user == items.message_item(
        "item_1",
        "user",
        "completed",
        [
            {"type": "input_text", "text": "a"},
            {"type": "input_audio", "transcript": None},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
        ],
    )
    assistant = client_item(
        {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "b"}]},
        "item_2",
    )
    assert assistant["content"] == [{"type": "output_text", "text": "b"}]
    call = client_item(
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}, "i"
    )
    assert call["arguments"] == '{"a":1}'
    chain = ItemChain()
    out = Outbox()
    for item in (user, assistant, call):
        chain.added_and_done(out, item)
    events(out)


# -- the translators feed it ---------------------------------------------------------------


def test_a_gemini_response_cancelled_without_usage_still_counts_as_finished() -> None:
    d: Transcript = gemini(GeminiTranslator(model_path=MODEL, model_group="g", session_id="s"))
    d.start()
    d.client_says({"type": "session.update", "session": {"type": "realtime"}})
    d.upstream_says({"setupComplete": {}})
    d.client_says(append(pcm(48)))
    d.upstream_says(model_audio(pcm(48)))
    step = d.client_says({"type": "response.cancel"})
    assert step.types()[-1] == "response.done"
    assert step.outbox.responses_done == 1
