"""The turn watch, the drop report and the trace switches in the config: plain function calls."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtgate.config.load import parse_text
from rtgate.telemetry.tracing import DropReport
from rtgate.telemetry.turns import Turn, TurnWatch

KINDS = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "response.created",
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.function_call_arguments.done",
    "response.done",
]


def event(kind: str, *, event_id_first: bool = False, **fields: object) -> bytes:
    body: dict[str, object] = {"type": kind, **fields}
    if event_id_first:
        body = {"event_id": "event_CJ8xyzABCDEFGHIJKLMNOPQRS", **body}
    return orjson.dumps(body)


def done(status: str = "completed", calls: tuple[str, ...] = (), usage: bool = True) -> bytes:
    output = [{"type": "function_call", "name": n, "call_id": f"c{i}"} for i, n in enumerate(calls)]
    body: dict[str, object] = {"id": "resp_1", "status": status, "output": output}
    if usage:
        body["usage"] = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10, "x": True}
    return event("response.done", response=body)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def run(batches: list[tuple[float, list[bytes]]]) -> tuple[list[Turn], Clock]:
    """Feed batches as the relay does: scan while scanning, then finish batches holding a done."""
    turns: list[Turn] = []
    watch = TurnWatch(turns.append)
    clock = Clock()
    for at, frames in batches:
        clock.now = at
        if watch.scanning:
            watch.outgoing(frames, clock)
        if any(b'"response.done"' in f for f in frames):
            watch.finished(frames, at)
    return turns, clock


def test_a_spoken_turn_is_timed_from_the_end_of_speech() -> None:
    turns, _ = run(
        [
            (1.0, [event("input_audio_buffer.speech_started")]),
            (2.0, [event("input_audio_buffer.speech_stopped", event_id_first=True)]),
            (2.1, [event("input_audio_buffer.committed")]),
            (2.3, [event("response.created", event_id_first=True)]),
            (2.6, [event("response.output_audio.delta", event_id_first=True, delta="AAAA")]),
            (2.8, [event("response.output_audio.delta", delta="AAAA")]),
            (3.5, [event("response.output_audio.delta", delta="AAAA"), done()]),
        ]
    )
    [turn] = turns
    assert turn.started_by == "speech_stopped" and turn.anchor == 2.0
    assert turn.created == 2.3
    assert turn.time_to_first_audio is not None and abs(turn.time_to_first_audio - 0.6) < 1e-9
    assert turn.time_to_done == 1.5
    assert (turn.response_id, turn.status) == ("resp_1", "completed")
    assert turn.usage == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}


def test_speech_that_starts_again_moves_the_anchor() -> None:
    turns, _ = run(
        [
            (1.0, [event("input_audio_buffer.speech_stopped")]),
            (1.2, [event("input_audio_buffer.speech_started")]),
            (2.0, [event("input_audio_buffer.speech_stopped")]),
            (2.5, [event("response.created")]),
            (2.7, [done(usage=False)]),
        ]
    )
    [turn] = turns
    assert turn.anchor == 2.0 and turn.first_audio is None and turn.usage == {}


def test_tool_call_and_text_turns_have_no_first_audio() -> None:
    turns, _ = run(
        [
            (1.0, [event("response.created"), event("response.function_call_arguments.done")]),
            (1.1, [done(calls=("get_weather", "lookup"))]),
        ]
    )
    [turn] = turns
    assert turn.started_by == "response.created" and turn.function_calls == (
        "get_weather",
        "lookup",
    )
    assert turn.time_to_first_audio is None


def test_audio_frames_are_not_looked_at_while_a_response_streams() -> None:
    watch = TurnWatch(lambda turn: None)
    clock = Clock()
    watch.outgoing([event("response.created"), event("response.output_audio.delta")], clock)
    assert not watch.scanning and clock.reads == 2  # created, first audio: then it stops
    watch.finished([done()], 5.0)
    assert watch.scanning


def test_audio_without_a_seen_start_stops_the_scan_and_times_nothing() -> None:
    watch = TurnWatch(lambda turn: None)
    clock = Clock()
    watch.outgoing([event("response.output_audio.delta")] * 3, clock)
    assert not watch.scanning and clock.reads == 0


@given(st.lists(st.tuples(st.sampled_from(KINDS), st.booleans()), max_size=40))
def test_one_turn_per_response_done_and_times_in_order(steps: list[tuple[str, bool]]) -> None:
    batches = []
    for i, (kind, first) in enumerate(steps):
        frame = done() if kind == "response.done" else event(kind, event_id_first=first)
        batches.append((float(i), [frame]))
    turns, _ = run(batches)
    assert len(turns) == sum(kind == "response.done" for kind, _ in steps)
    for turn in turns:
        assert turn.anchor <= turn.done
        if turn.created is not None:
            assert turn.anchor <= turn.created <= turn.done
        if turn.first_audio is not None:
            assert turn.created is not None and turn.created <= turn.first_audio <= turn.done


def test_drop_report_speaks_at_most_once_per_interval() -> None:
    report = DropReport(interval=60.0)
    assert report.check(0.0, 0, 0) is None
    line = report.check(1.0, 5, 2)
    assert line is not None and "7 spans lost" in line
    assert report.check(30.0, 50, 20) is None  # within the minute: counted, not logged
    line = report.check(61.0, 50, 20)
    assert line is not None and "63 spans lost" in line
    assert report.check(200.0, 50, 20) is None  # nothing new


def _config(extra: str) -> tuple[object, list[str]]:
    text = "model_list:\n  - model_name: m\n    litellm_params: {model: mock/x}\n" + extra
    result = parse_text(text, path="<t>", env={})
    return result.config.telemetry, result.warnings


def test_litellm_callbacks_switch_traces_on() -> None:
    telemetry, warnings = _config("litellm_settings:\n  callbacks: [otel, prometheus]\n")
    assert telemetry.otel and not telemetry.langfuse  # type: ignore[attr-defined]
    assert any("'prometheus' is not a callback rtgate offers" in w for w in warnings)
    telemetry, _ = _config("litellm_settings:\n  success_callback: [langfuse_otel]\n")
    assert telemetry.langfuse and not telemetry.otel  # type: ignore[attr-defined]
    telemetry, _ = _config("rtgate:\n  telemetry: {otel: true, max_queue_size: 10}\n")
    assert telemetry.otel and telemetry.max_queue_size == 10  # type: ignore[attr-defined]
    telemetry, _ = _config("")
    assert not telemetry.enabled  # type: ignore[attr-defined]


def test_bad_trace_settings_are_errors_with_lines() -> None:
    from rtgate.errors import ConfigError

    with pytest.raises(ConfigError, match="callbacks must be a list of names"):
        _config("litellm_settings:\n  callbacks: {otel: 1}\n")
    with pytest.raises(ConfigError, match="max_queue_size must be >= 1"):
        _config("rtgate:\n  telemetry: {max_queue_size: 0}\n")


def test_a_reload_that_changes_trace_settings_says_it_needs_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rtgate.edge.server import reload_config

    base = "model_list:\n  - model_name: m\n    litellm_params: {model: mock/x}\n"
    running = parse_text(base, path="<t>", env={}).config
    path = tmp_path / "c.yaml"
    path.write_text(base + "litellm_settings: {callbacks: [otel]}\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        reload_config(str(path), running, "127.0.0.1")
    assert "trace settings (callbacks, rtgate.telemetry) need a restart" in caplog.text
