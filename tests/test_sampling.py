"""The pure half of event logging: filter, sampling, redaction, records."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rtgate.config.model import EventLogSettings
from rtgate.telemetry import sampling
from rtgate.telemetry.sampling import Redactor, SessionLogStats, TypeSampler
from rtgate.telemetry.tap import SessionInfo, SessionSummary

DEFAULT_TYPES = EventLogSettings().event_types


def _within(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """Binomial count within ``sigmas`` standard deviations of n*p."""
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# -- filter ---------------------------------------------------------------------------------


def test_default_filter_is_litellms_three_types() -> None:
    assert frozenset({"session.created", "response.create", "response.done"}) == DEFAULT_TYPES
    for kind in ("session.created", "response.create", "response.done"):
        assert sampling.type_wanted(DEFAULT_TYPES, kind)
    for kind in ("input_audio_buffer.append", "response.output_audio.delta", "session.update"):
        assert not sampling.type_wanted(DEFAULT_TYPES, kind)


def test_star_filter_takes_every_typed_event_and_nothing_untyped() -> None:
    assert sampling.type_wanted(None, "response.output_audio.delta")
    assert sampling.type_wanted(None, "rate_limits.updated")
    assert not sampling.type_wanted(None, None)


def test_list_filter() -> None:
    wanted = frozenset({"error", "session.update"})
    assert sampling.type_wanted(wanted, "error")
    assert not sampling.type_wanted(wanted, "response.done")


# -- sampling ------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40), st.floats(0, 1))
def test_session_sampling_is_deterministic_and_monotonic_in_rate(
    session_id: str, rate: float
) -> None:
    first = sampling.session_sampled(session_id, rate)
    assert first == sampling.session_sampled(session_id, rate)
    if first:  # a session logged at some rate stays logged at any higher rate
        assert sampling.session_sampled(session_id, min(1.0, rate + 0.1))
    assert sampling.session_sampled(session_id, 1.0)
    assert not sampling.session_sampled(session_id, 0.0)


def test_session_sampling_rate_is_honoured() -> None:
    n = 20_000
    for rate in (0.01, 0.25, 0.5):
        kept = sum(sampling.session_sampled(f"sess_{i}", rate) for i in range(n))
        assert _within(kept, n, rate), (rate, kept)


@given(st.text(min_size=1, max_size=30), st.floats(0.0, 1.0))
def test_type_sampling_is_deterministic_per_session_and_counter(
    session_id: str, rate: float
) -> None:
    rates = {"response.output_audio.delta": rate}
    a, b = TypeSampler(session_id, rates), TypeSampler(session_id, rates)
    kind = "response.output_audio.delta"
    assert [a.keep(kind) for _ in range(50)] == [b.keep(kind) for _ in range(50)]
    # Types without a rate are never sampled away.
    assert all(a.keep("response.done") for _ in range(10))


def test_type_sampling_rates_and_independence_between_sessions() -> None:
    kind = "response.output_audio.delta"
    rates = {kind: 0.01, "input_audio_buffer.append": 0.3}
    n = 50_000
    sampler = TypeSampler("sess_A", rates)
    kept = sum(sampler.keep(kind) for _ in range(n))
    assert _within(kept, n, 0.01)
    other = TypeSampler("sess_A", rates)
    kept_append = sum(other.keep("input_audio_buffer.append") for _ in range(n))
    assert _within(kept_append, n, 0.3)
    # Two sessions pick different events (they are not the same fixed stride).
    pattern_a = [TypeSampler("sess_A", rates).keep(kind) for _ in range(1)]
    picks = {
        tuple(i for i in range(2000) if s.keep(kind))
        for s in (TypeSampler(f"sess_{j}", rates) for j in range(5))
    }
    assert len(picks) == 5
    assert pattern_a == [TypeSampler("sess_A", rates).keep(kind)]


def test_type_sampling_edges() -> None:
    sampler = TypeSampler("s", {"a": 0.0, "b": 1.0})
    assert not any(sampler.keep("a") for _ in range(100))
    assert all(sampler.keep("b") for _ in range(100))


# -- redaction -----------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_decoded_length_without_decoding(raw: bytes) -> None:
    assert sampling.base64_decoded_len(base64.b64encode(raw).decode()) == len(raw)


def _audio(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


def test_audio_payloads_become_their_length() -> None:
    redactor = Redactor.from_settings(False, ())
    append = redactor.redact({"type": "input_audio_buffer.append", "audio": _audio(960)})
    assert append["audio"] == "<audio 960 bytes>"
    delta = redactor.redact({"type": "response.output_audio.delta", "delta": _audio(480)})
    assert delta["delta"] == "<audio 480 bytes>"
    beta_delta = redactor.redact({"type": "response.audio.delta", "delta": _audio(10)})
    assert beta_delta["delta"] == "<audio 10 bytes>"
    item = redactor.redact(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_audio", "audio": _audio(3200), "transcript": "hi"},
                    {"type": "input_image", "image_url": "data:image/png;base64," + _audio(30)},
                ],
            },
        }
    )
    content = item["item"]["content"]
    assert content[0] == {"type": "input_audio", "audio": "<audio 3200 bytes>", "transcript": "hi"}
    assert content[1]["image_url"].startswith("<image ")
    done = redactor.redact(
        {
            "type": "response.done",
            "response": {"output": [{"content": [{"type": "output_audio", "audio": _audio(7)}]}]},
        }
    )
    assert done["response"]["output"][0]["content"][0]["audio"] == "<audio 7 bytes>"


def test_audio_config_objects_and_text_deltas_are_untouched() -> None:
    redactor = Redactor.from_settings(False, ())
    update: dict[str, Any] = {
        "type": "session.update",
        "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}},
    }
    assert redactor.redact(orjson.loads(orjson.dumps(update))) == update
    text = {"type": "response.output_audio_transcript.delta", "delta": "Hello there"}
    assert redactor.redact(dict(text)) == text


def test_log_audio_keeps_audio() -> None:
    audio = _audio(96)
    redactor = Redactor.from_settings(True, ())
    assert redactor.redact({"type": "input_audio_buffer.append", "audio": audio})["audio"] == audio
    delta = redactor.redact({"type": "response.output_audio.delta", "delta": audio})
    assert delta["delta"] == audio


def test_redact_paths() -> None:
    redactor = Redactor.from_settings(
        False, ("session.instructions", "item.content.*.text", "response.output.content.transcript")
    )
    update = redactor.redact(
        {"type": "session.update", "session": {"instructions": "secret plan", "voice": "marin"}}
    )
    assert update["session"] == {"instructions": "<redacted>", "voice": "marin"}
    item = redactor.redact(
        {
            "type": "conversation.item.create",
            "item": {"content": [{"type": "input_text", "text": "my address"}, {"type": "x"}]},
        }
    )
    assert item["item"]["content"] == [{"type": "input_text", "text": "<redacted>"}, {"type": "x"}]
    done = redactor.redact(
        {"type": "response.done", "response": {"output": [{"content": [{"transcript": "t"}]}]}}
    )
    assert done["response"]["output"][0]["content"][0]["transcript"] == "<redacted>"
    # Paths that do not exist in an event change nothing.
    other = {"type": "response.create", "response": {"instructions": "keep"}}
    assert redactor.redact(dict(other)) == other


def test_secrets_are_scrubbed_from_every_string() -> None:
    upstream_secret = "plain-upstream-secret-1234"
    redactor = Redactor.from_settings(False, (), secrets=(upstream_secret,))
    event = redactor.redact(
        {
            "type": "error",
            "error": {
                "message": "Incorrect API key provided: sk-proj-abcdefghijklmnop",
                "param": f"token {upstream_secret}",
                "details": ["Bearer abcdefghijklmnopqrstu"],
            },
        }
    )
    text = orjson.dumps(event).decode()
    assert "sk-proj-abcdefghijklmnop" not in text
    assert upstream_secret not in text
    assert "abcdefghijklmnopqrstu" not in text
    assert event["error"]["message"].startswith("Incorrect API key provided: ")


_KEY_PARTS = [
    "sk-", "sk-proj-", "xai-", "AIza", "AKIA", "ASIA", "ek_", "ya29.", "Bearer ", "bearer\t",
    "api-key=", "API_KEY: ", "apikey:", "key=", "abcdefghijKLMNOP0123456789", "_-.", " ", ",",
]  # fmt: skip


@given(st.lists(st.sampled_from(_KEY_PARTS) | st.text(max_size=8), max_size=8).map("".join))
def test_the_scrub_prefilter_never_skips_a_string_scrub_would_change(text: str) -> None:
    from rtgate.errors import scrub

    if scrub(text) != text:
        assert sampling.may_hold_secret(text)
    assert Redactor().text(text) == scrub(text)


# -- records --------------------------------------------------------------------------------

INFO = SessionInfo(
    session_id="sess_1",
    key_alias="team-a",
    client_addr="127.0.0.1:5555",
    model_group="gpt-realtime",
    deployment_id="dep-1",
    provider="openai",
    started_at=1000.0,
)


def test_event_record_fields() -> None:
    fields = sampling.session_fields(INFO)
    record = sampling.event_record(
        fields, "client", {"type": "response.create", "event_id": "evt_1"}, 1001.5
    )
    assert record == {
        "record": "event",
        "ts": 1001.5,
        "session_id": "sess_1",
        "key_alias": "team-a",
        "client_addr": "127.0.0.1:5555",
        "model_group": "gpt-realtime",
        "deployment_id": "dep-1",
        "provider": "openai",
        "direction": "client",
        "type": "response.create",
        "event_id": "evt_1",
        "event": {"type": "response.create", "event_id": "evt_1"},
    }
    assert orjson.loads(sampling.encode(record)) == record


def test_session_record_carries_usage_and_scrubs_reason() -> None:
    summary = SessionSummary(
        info=INFO,
        ended_at=1010.0,
        duration=10.0,
        close_code=1011,
        close_reason="upstream said key=sk-abcdefghijkl is bad",
        closed_by="upstream",
        frames_from_client=12,
        frames_to_client=40,
        bytes_from_client=1234,
        bytes_to_client=5678,
        usage={"input_tokens": 30, "output_tokens": 12, "total_tokens": 42},
        responses=2,
    )
    record = sampling.session_record(summary, SessionLogStats(sampled=True, events_logged=3))
    assert record["record"] == "session"
    assert record["usage"] == {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
    assert record["duration"] == 10.0
    assert record["close_code"] == 1011
    assert record["closed_by"] == "upstream"
    assert record["frames_to_client"] == 40
    assert record["events_logged"] == 3
    assert "sk-abcdefghijkl" not in record["close_reason"]
