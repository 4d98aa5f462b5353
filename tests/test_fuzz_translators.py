"""Hypothesis over every translator: arbitrary event sequences with malformed fields and bytes.

Whatever the client and the upstream send, in whatever order, a translator
never raises; every event a translating provider (Gemini, Vertex, Nova, the
mock) sends the client is strict GA by the openai SDK's own types (the
transcript harness checks each), and every response it announces is closed at
most once, after it was created; once the session ends (either side) no
response is left open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtgate.mockmodel.translator import MockModel
from rtgate.translate.base import Translator
from rtgate.translate.gemini.translator import GeminiTranslator
from rtgate.translate.nova.translator import NovaTranslator
from rtgate.translate.xai import XaiTranslator
from rtgate.wire import Binary, Frame
from tests.transcript import Transcript

TRANSLATORS: dict[str, Callable[[], Translator]] = {
    "openai": Translator,
    "xai": XaiTranslator,
    "mock": lambda: MockModel(model="fuzz"),
    "gemini": lambda: GeminiTranslator(
        model_path="models/gemini-live", model_group="g", session_id="sess_fuzz"
    ),
    "vertex": lambda: GeminiTranslator(
        model_path="projects/p/locations/l/publishers/google/models/m",
        model_group="g",
        session_id="sess_fuzz",
        vertex=True,
    ),
    "nova": lambda: NovaTranslator("amazon.nova-sonic-v1:0"),
}

CLIENT_TYPES = [
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
    "input_audio_buffer.clear", "conversation.item.create", "conversation.item.delete",
    "conversation.item.truncate", "conversation.item.retrieve", "response.create",
    "response.cancel", "output_audio_buffer.clear", "transcription_session.update", "bogus",
]  # fmt: skip
UPSTREAM_TYPES = [
    "session.created", "session.updated", "response.created", "response.done",
    "response.output_item.added", "response.output_item.done", "response.content_part.added",
    "response.content_part.done", "response.output_audio.delta", "response.output_text.delta",
    "response.output_audio_transcript.delta", "response.function_call_arguments.done",
    "conversation.item.added", "conversation.created", "error", "ping", "rate_limits.updated",
]  # fmt: skip
KEYS = ["type", "session", "audio", "item", "response", "delta", "event_id", "item_id",
        "response_id", "output_index", "content_index", "call_id", "name", "arguments",
        "turn_detection", "format", "rate", "content", "role", "usage", "status",
        "instructions", "tools", "output_modalities", "voice", "text", "transcript"]  # fmt: skip
GEMINI_KEYS = ["setupComplete", "serverContent", "modelTurn", "parts", "inlineData", "data",
               "mimeType", "text", "turnComplete", "generationComplete", "interrupted",
               "inputTranscription", "outputTranscription", "toolCall", "functionCalls",
               "id", "name", "args", "toolCallCancellation", "ids", "goAway", "timeLeft",
               "sessionResumptionUpdate", "newHandle", "resumable", "usageMetadata",
               "promptTokenCount", "responseTokenCount", "totalTokenCount"]  # fmt: skip
NOVA_KEYS = ["event", "completionStart", "contentStart", "textOutput", "audioOutput",
             "toolUse", "contentEnd", "completionEnd", "usageEvent", "content", "role",
             "type", "additionalModelFields", "stopReason", "promptName", "contentName",
             "completionId", "toolUseId", "toolName", "generationStage", "details",
             "totalInputTokens", "totalOutputTokens", "sessionId"]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["", "AAAA", "UklGRg==", "audio/pcm", "server_vad", "none", "user",
                     "assistant", "message", "function_call", "SPECULATIVE", "FINAL", "END_TURN",
                     "INTERRUPTED", "AUDIO", "TEXT", "TOOL", "ASSISTANT", "USER",
                     "{\"interrupted\": true}", "{\"generationStage\":\"FINAL\"}", "resp_1",
                     "item_1", "call_1"]),
)  # fmt: skip


def _json(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _events(types: list[str], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda kind, body: {**body, "type": kind} if kind is not None else body,
        st.none() | st.sampled_from(types) | st.text(max_size=6),
        st.dictionaries(st.sampled_from(keys), _json(keys), max_size=5),
    )


def _frames(events: st.SearchStrategy[Any]) -> st.SearchStrategy[Frame]:
    encoded = events.map(orjson.dumps)
    return st.one_of(
        *[encoded] * 8,  # mostly well-formed, so sessions get somewhere
        _json(KEYS).map(orjson.dumps),  # arrays, scalars, objects without a type
        st.binary(max_size=40),  # not JSON, maybe not UTF-8
        st.binary(max_size=40).map(Binary),
    )


def _ga_upstream_templates() -> list[dict[str, Any]]:
    """A real GA event sequence (the mock model's answer to text and to audio)."""
    model = Transcript(MockModel(model="fuzz", reply_audio_ms=60))
    model.start()
    for event in (
        {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "hi"}]}},
        {"type": "response.create"},
        {"type": "response.create", "response": {"output_modalities": ["text"]}},
    ):  # fmt: skip
        model.client_says(event)
    templates = list(model.client)
    templates.append({"type": "conversation.created", "conversation": {"id": "conv_1"}})
    templates.append({"type": "ping"})
    return templates


CLIENT_TEMPLATES: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"type": "realtime"}},
    {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
     "audio": {"input": {"turn_detection": None, "format": {"type": "audio/pcmu"}},
               "output": {"format": {"type": "audio/pcma"}, "voice": "marin"}},
     "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}},
    {"type": "input_audio_buffer.append", "audio": "AAAAAAAAAAAAAAAA"},
    {"type": "input_audio_buffer.append", "audio": "AAAA" * 200},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
     "content": [{"type": "input_text", "text": "hello"}]}},
    {"type": "conversation.item.create", "item": {"type": "function_call_output",
     "call_id": "call_1", "output": "{}"}},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "system",
     "content": [{"type": "input_text", "text": "be brief"}]}},
    {"type": "response.create"},
    {"type": "response.create", "response": {"instructions": "x", "output_modalities": ["text"]}},
    {"type": "response.cancel"},
    {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
     "audio_end_ms": 10},
    {"type": "conversation.item.delete", "item_id": "item_1"},
    {"type": "output_audio_buffer.clear"},
]  # fmt: skip
GEMINI_TEMPLATES: list[dict[str, Any]] = [
    {"setupComplete": {}},
    {"serverContent": {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAAAAAAA"}}]}}},
    {"serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}}},
    {"serverContent": {"outputTranscription": {"text": "hi "}}},
    {"serverContent": {"inputTranscription": {"text": "hello"}}},
    {"serverContent": {"generationComplete": True}},
    {"serverContent": {"turnComplete": True}},
    {"serverContent": {"interrupted": True}},
    {"toolCall": {"functionCalls": [{"id": "c1", "name": "f", "args": {"a": 1}}]}},
    {"toolCallCancellation": {"ids": ["c1"]}},
    {"goAway": {"timeLeft": "5s"}},
    {"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}},
    {"usageMetadata": {"promptTokenCount": 3, "responseTokenCount": 4, "totalTokenCount": 7}},
]  # fmt: skip


def _nova(name: str, **body: Any) -> dict[str, Any]:
    return {"event": {name: body}}


NOVA_TEMPLATES: list[dict[str, Any]] = [
    _nova("completionStart", promptName="p", completionId="c"),
    _nova("contentStart", contentId="spec", type="TEXT", role="ASSISTANT",
          additionalModelFields='{"generationStage":"SPECULATIVE"}'),
    _nova("contentStart", contentId="final", type="TEXT", role="ASSISTANT",
          additionalModelFields='{"generationStage":"FINAL"}'),
    _nova("contentStart", contentId="u", type="TEXT", role="USER"),
    _nova("contentStart", contentId="aud", type="AUDIO", role="ASSISTANT"),
    _nova("contentStart", contentId="tool", type="TOOL", role="TOOL"),
    _nova("textOutput", contentId="spec", role="ASSISTANT", content="Hello."),
    _nova("textOutput", contentId="final", role="ASSISTANT", content="Hello."),
    _nova("textOutput", contentId="u", role="USER", content="hi"),
    _nova("textOutput", contentId="spec", role="ASSISTANT", content='{ "interrupted" : true }'),
    _nova("audioOutput", contentId="aud", content="AAAAAAAA"),
    _nova("toolUse", contentId="tool", toolUseId="t1", toolName="f", content='{"a":1}'),
    _nova("contentEnd", contentId="spec", type="TEXT", stopReason="PARTIAL_TURN"),
    _nova("contentEnd", contentId="final", type="TEXT", stopReason="END_TURN"),
    _nova("contentEnd", contentId="aud", type="AUDIO", stopReason="END_TURN"),
    _nova("contentEnd", contentId="aud", type="AUDIO", stopReason="INTERRUPTED"),
    _nova("contentEnd", contentId="tool", type="TOOL", stopReason="TOOL_USE"),
    _nova("completionEnd", stopReason="END_TURN"),
    _nova("usageEvent", details={"delta": {"input": {"speechTokens": 1, "textTokens": 2},
          "output": {"speechTokens": 3, "textTokens": 4}}}, totalTokens=10),
]  # fmt: skip


def _mutated(templates: list[dict[str, Any]], keys: list[str]) -> st.SearchStrategy[Any]:
    """A template as is, or with one field (top level or one down) replaced or removed."""

    def mutate(event: dict[str, Any], how: int, pick: int, value: Any) -> dict[str, Any]:
        event = orjson.loads(orjson.dumps(event))  # a deep copy
        target = event
        inner = [k for k, v in event.items() if isinstance(v, dict) and v]
        if inner and pick % 2:
            target = event[inner[pick % len(inner)]]
        names = list(target)
        if how <= 0 or not names:
            return event
        name = names[pick % len(names)]
        if how == 1:
            del target[name]
        else:
            target[name] = value
        return event

    return st.builds(
        mutate, st.sampled_from(templates), st.integers(-4, 2), st.integers(0, 50), _json(keys)
    )


GA_UPSTREAM = _ga_upstream_templates()
client_frames = _frames(
    st.one_of(*[_mutated(CLIENT_TEMPLATES, KEYS)] * 4, _events(CLIENT_TYPES, KEYS))
)
_ga_frames = _frames(st.one_of(*[_mutated(GA_UPSTREAM, KEYS)] * 4, _events(UPSTREAM_TYPES, KEYS)))
_gemini_frames = _frames(_mutated(GEMINI_TEMPLATES, GEMINI_KEYS))
upstream_frames = {
    "openai": _ga_frames,
    "xai": _ga_frames,
    "mock": _ga_frames,
    "gemini": _gemini_frames,
    "vertex": _gemini_frames,
    "nova": _frames(_mutated(NOVA_TEMPLATES, NOVA_KEYS)),
}

Step = tuple[str, Any]


def _c(event: dict[str, Any]) -> Step:
    return ("client", orjson.dumps(event))


def _u(event: dict[str, Any]) -> Step:
    return ("upstream", orjson.dumps(event))


_GA_TURN = [_u(e) for e in GA_UPSTREAM[:12]]
_GEMINI_TURN = [
    _c(CLIENT_TEMPLATES[0]), _u(GEMINI_TEMPLATES[0]), _c(CLIENT_TEMPLATES[3]),
    _c(CLIENT_TEMPLATES[4]), _c(CLIENT_TEMPLATES[9]), _u(GEMINI_TEMPLATES[4]),
    _u(GEMINI_TEMPLATES[1]), _u(GEMINI_TEMPLATES[3]), _u(GEMINI_TEMPLATES[8]),
]  # fmt: skip
PREFIXES: dict[str, list[Step]] = {
    "openai": _GA_TURN,
    "xai": [_u({"type": "conversation.created", "conversation": {"id": "c"}}), *_GA_TURN],
    "mock": [_c(CLIENT_TEMPLATES[6]), _c(CLIENT_TEMPLATES[9]), _c(CLIENT_TEMPLATES[3])],
    "gemini": _GEMINI_TURN,
    "vertex": _GEMINI_TURN,
    "nova": [_c(CLIENT_TEMPLATES[0]), _c(CLIENT_TEMPLATES[3]), *[_u(e) for e in NOVA_TEMPLATES[:3]],
             _u(NOVA_TEMPLATES[6]), _u(NOVA_TEMPLATES[12]), _u(NOVA_TEMPLATES[4]),
             _u(NOVA_TEMPLATES[10])],
}  # fmt: skip


def _steps(name: str) -> st.SearchStrategy[list[Step]]:
    """A realistic start cut anywhere, then anything, then an ending."""
    client = client_frames.map(lambda f: ("client", f))
    upstream = upstream_frames[name].map(lambda f: ("upstream", f))
    step = st.one_of(
        client, client, upstream, upstream, upstream,
        st.floats(0, 3).map(lambda dt: ("time", dt)),
        st.floats(0, 60).map(lambda dt: ("time", dt)) | st.just(("reconnected", None)),
    )  # fmt: skip
    ending = st.sampled_from(
        [("upstream_closed", 1000), ("upstream_closed", 1011), ("upstream_closed", 4001),
         ("client_closed", None)]
    )  # fmt: skip
    prefix = PREFIXES[name]
    return st.tuples(st.integers(0, len(prefix)), st.lists(step, max_size=30), ending).map(
        lambda t: [*prefix[: t[0]], *t[1], t[2]]
    )


def _run(make: Callable[[], Translator], steps: list[Step]) -> list[dict[str, Any]]:
    """Play ``steps`` through the harness; the JSON events the client got.

    ``time`` steps fire the timer when the deadline has come, as the relay does. A translator that writes its own GA events has every one checked against the SDK's
    types by the harness; a passthrough relays the fuzzed upstream's garbage as it came.
    """
    passthrough = make in (Translator, XaiTranslator)
    session = Transcript(
        make(),
        check_client=not passthrough,
        # A passthrough forwards the client's frames as they are; the others send JSON.
        check_upstream=(lambda frame: frame) if passthrough else None,
    )
    session.start()
    for kind, value in steps:
        if kind == "client":
            session.client_says(value)
        elif kind == "upstream":
            session.upstream_says(value)
        elif kind == "time":
            session.advance(value)
        elif kind == "reconnected":
            session.reconnected()
        elif kind == "upstream_closed":
            session.upstream_closed(value, "fuzz")
        else:
            session.client_closed()
    if not passthrough:
        return session.client
    events: list[dict[str, Any]] = []
    for frame in session.raw_client:
        if isinstance(frame, Binary):
            continue
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError:
            continue  # relayed verbatim, as the upstream sent it
        if isinstance(event, dict):
            events.append(event)
    return events


def _check_responses(events: list[dict[str, Any]], *, ended: bool) -> None:
    """Each response id: created once, done at most once and after created."""
    created: dict[str, int] = {}
    done: dict[str, int] = {}
    for event in events:
        kind = event.get("type")
        response = event.get("response")
        rid = response.get("id") if isinstance(response, dict) else None
        if not isinstance(rid, str):
            continue
        if kind == "response.created":
            created[rid] = created.get(rid, 0) + 1
            assert created[rid] == 1, f"{rid} created twice"
        elif kind == "response.done":
            assert rid in created, f"{rid} done before created"
            done[rid] = done.get(rid, 0) + 1
            assert done[rid] == 1, f"{rid} done twice"
    if ended:
        assert set(done) == set(created), f"left open: {set(created) - set(done)}"


def _fuzz(name: str) -> Callable[[list[Step]], None]:
    make = TRANSLATORS[name]
    generated = name in ("gemini", "vertex", "nova", "mock")

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_steps(name))
    def run(steps: list[Step]) -> None:
        events = _run(make, steps)
        for event in events:
            if generated:
                assert isinstance(event.get("type"), str), event
        if generated:  # passthroughs relay the provider's own lifecycle, right or wrong
            _check_responses(events, ended=steps[-1][0] == "upstream_closed")

    return run


test_fuzz_openai_passthrough = _fuzz("openai")
test_fuzz_xai = _fuzz("xai")
test_fuzz_mock_model = _fuzz("mock")
test_fuzz_gemini = _fuzz("gemini")
test_fuzz_vertex = _fuzz("vertex")
test_fuzz_nova = _fuzz("nova")


_AUDIO_SESSION = (
    b'"type":"realtime","output_modalities":["text"],"audio":{"input":{"turn_detection":null,'
    b'"format":{"type":"audio/pcmu"}},"output":{"format":{"type":"audio/pcma"},"voice":"marin"}}'
)


@pytest.mark.parametrize("name", ["gemini", "vertex", "nova", "mock"])
@pytest.mark.parametrize(
    "tools", [b"[{}]", b"[null]", b"true", b'[{"name":"f","description":5,"parameters":1}]']
)
def test_malformed_tools_never_reach_the_reported_session(name: str, tools: bytes) -> None:
    """Found by the fuzzer: a tool without a type or name, a null tool, ``tools: true`` and
    ill-typed fields were echoed in ``session.updated`` (or raised). Every event stays
    valid against the SDK's types; a named function keeps only its well-typed fields."""
    update = b'{"type":"session.update","session":{' + _AUDIO_SESSION + b',"tools":' + tools + b"}}"
    events = _run(TRANSLATORS[name], [("client", update), ("upstream_closed", 1000)])
    for event in events:
        if event.get("type") == "session.updated":
            for tool in event["session"].get("tools", []):
                assert tool["type"] == "function" and isinstance(tool["name"], str)
                assert set(tool) <= {"type", "name", "description", "parameters"}
