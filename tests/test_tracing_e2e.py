"""Traces end to end: rtgate exports OTLP/HTTP to a local receiver that decodes the spans.

A Gemini-translated session (the real openai SDK, three turns, one of them a tool
call) behind a deployment that refuses connections, so the dial fails over; a
mock-model session that continues the client's W3C ``traceparent``; and Langfuse's
endpoint and Basic auth header.
"""

from __future__ import annotations

import base64
import math
from functools import partial

import pytest
import trio

from rtgate.testing.fake_gemini import FakeGeminiServer
from rtgate.testing.gateway import open_gateway
from rtgate.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.conftest import CLIENT_KEY, gateway_yaml
from tests.governance_support import PRICES, api, sdk_session, wait_for
from tests.test_gemini_e2e import _sdk_session
from tests.test_ops_support import free_port
from tests.wsclient import connect, recv_json, recv_until, send_json

SERVER, CLIENT = 2, 3  # OTLP SpanKind values
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
async def receiver(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> OtlpReceiver:
    server = OtlpReceiver()
    await nursery.start(server.serve)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.base_url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "rtgate-under-test")
    return server


def _only(spans: list[ReceivedSpan]) -> ReceivedSpan:
    assert len(spans) == 1, spans
    return spans[0]


async def test_gemini_session_with_tool_call_and_failover(
    nursery: trio.Nursery, receiver: OtlpReceiver
) -> None:
    fake = FakeGeminiServer()
    await nursery.start(fake.serve)
    refused = f"http://127.0.0.1:{free_port()}"
    deployments = [
        f"""  - model_name: gemini-live
    litellm_params:
      model: gemini/gemini-live-2.5-flash
      api_key: {fake.api_key}
      api_base: {base}
      setup_wait_seconds: 0.5
      weight: {weight}
    model_info:
      id: {dep_id}"""
        for base, weight, dep_id in ((refused, 5, "gem-refused"), (fake.base_url, 1, "gem-ok"))
    ]
    config = gateway_yaml(*deployments, extra="litellm_settings:\n  callbacks: [otel]\n")
    with trio.fail_after(40):
        async with open_gateway(config) as gw:
            seen = await trio.to_thread.run_sync(_sdk_session, gw.ws_url + "/v1")
            assert seen["calls"] == [("fc_1", "get_weather", '{"city":"Oslo"}')]
            await receiver.wait_for(lambda r: r.named("realtime.session"))

    session = _only(receiver.named("realtime.session"))
    assert session.kind == SERVER and session.parent_span_id == ""
    assert session.resource["service.name"] == "rtgate-under-test"
    attrs = session.attributes
    assert attrs["rtgate.model_group"] == "gemini-live"
    assert attrs["rtgate.deployment"] == "gem-ok"
    assert attrs["rtgate.provider"] == "gemini"
    assert attrs["gen_ai.request.model"] == "gemini-live-2.5-flash"
    assert attrs["rtgate.closed_by"] == "client" and attrs["rtgate.close_code"] == 1000
    turns = sorted(receiver.named("realtime.response"), key=lambda s: s.start_ns)
    assert attrs["rtgate.responses"] == len(turns) >= 3
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["rtgate.usage.total_tokens"] > 0
    assert not any(CLIENT_KEY in str(v) or fake.api_key in str(v) for v in attrs.values())

    dial = _only(receiver.named("realtime.dial"))
    assert dial.kind == CLIENT
    assert (dial.trace_id, dial.parent_span_id) == (session.trace_id, session.span_id)
    assert dial.attributes["rtgate.deployment"] == "gem-ok"
    assert dial.attributes["rtgate.dial.attempts"] == 2
    events = [
        (name, a.get("rtgate.deployment"), a.get("rtgate.error.kind")) for name, a in dial.events
    ]
    assert events == [
        ("rtgate.dial.attempt", "gem-refused", None),
        ("rtgate.dial.failed", "gem-refused", "refused"),
        ("rtgate.dial.attempt", "gem-ok", None),
    ]

    # gemini-live-2.5-flash is in the shipped price table: each turn and the session are priced.
    assert attrs["rtgate.cost_usd"] == attrs["gen_ai.usage.cost"] > 0
    assert math.isclose(
        attrs["rtgate.cost_usd"], sum(t.attributes["rtgate.cost_usd"] for t in turns)
    )
    for turn in turns:
        assert (turn.trace_id, turn.parent_span_id) == (session.trace_id, session.span_id)
        assert session.start_ns <= turn.start_ns <= turn.end_ns <= session.end_ns
        assert turn.attributes["rtgate.response.status"] == "completed"
        assert turn.attributes["rtgate.response_id"].startswith("resp_")
    spoken, asked, answered = turns[:3]
    # The first turn answers the committed audio: anchored at the commit, with audio.
    assert spoken.attributes["rtgate.turn.started_by"] == "committed"
    ttfa = spoken.attributes["rtgate.time_to_first_audio_seconds"]
    assert 0 <= ttfa <= spoken.attributes["rtgate.time_to_response_done_seconds"]
    assert spoken.attributes["gen_ai.usage.input_tokens"] > 0
    # The second is the tool call (no audio, one function call); then the spoken answer.
    assert asked.attributes["rtgate.function_calls"] == ["get_weather"]
    assert "rtgate.time_to_first_audio_seconds" not in asked.attributes
    assert "rtgate.function_calls" not in answered.attributes
    assert answered.attributes["rtgate.time_to_first_audio_seconds"] >= 0


async def test_client_traceparent_is_continued_and_key_alias_recorded(
    receiver: OtlpReceiver,
) -> None:
    config = """
model_list:
  - model_name: mock
    litellm_params: {model: mock/gpt-realtime, reply_audio_ms: 200}
rtgate:
  telemetry: {otel: true}
  keys:
    - {alias: team-voice, key: sk-team-voice-key-0000000000}
"""
    headers = {
        "Authorization": "Bearer sk-team-voice-key-0000000000",
        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
    }
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=mock", headers) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await send_json(ws, {"type": "response.create"})
                await recv_until(ws, "response.done")
            await receiver.wait_for(lambda r: r.named("realtime.session"))
            await receiver.wait_for(lambda r: r.named("realtime.response"))
    session = _only(receiver.named("realtime.session"))
    assert (session.trace_id, session.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert session.attributes["rtgate.key_alias"] == "team-voice"
    assert not any("sk-team-voice" in str(v) for v in session.attributes.values())
    turn = _only(receiver.named("realtime.response"))
    assert turn.trace_id == TRACE_ID and turn.parent_span_id == session.span_id
    assert turn.attributes["rtgate.turn.started_by"] == "response.created"
    assert turn.attributes["rtgate.time_to_first_audio_seconds"] >= 0


async def test_cost_on_session_and_turn_spans_equals_the_spend_records(
    receiver: OtlpReceiver,
) -> None:
    """A priced mock deployment: each turn span carries its response's spend record cost, the
    session span their sum; an unpriced deployment's spans carry no cost at all."""
    prices = "".join(f"\n      {k}: {v!r}" for k, v in PRICES.items())
    config = f"""
model_list:
  - model_name: gpt-realtime
    litellm_params: {{model: mock/gpt-realtime}}
    model_info:
      mode: realtime{prices}
  - model_name: unpriced
    litellm_params: {{model: mock/gpt-realtime}}
general_settings: {{master_key: {CLIENT_KEY}}}
rtgate:
  telemetry: {{otel: true}}
  governance: {{spend_flush_interval: 0.01}}
  keys:
    - {{alias: team-voice, key: sk-team-voice-key-0000000000}}
"""
    with trio.fail_after(40):
        async with open_gateway(config) as gw:
            result = await trio.to_thread.run_sync(
                partial(sdk_session, gw.ws_url + "/v1", "sk-team-voice-key-0000000000", responses=2)
            )
            assert len(result["usages"]) == 2
            await receiver.wait_for(lambda r: r.named("realtime.session"))

            async def logged() -> bool:
                status, rows = await api(gw.http_url, "GET", "/spend/logs?key_alias=team-voice")
                return status == 200 and len(rows) == 2

            await wait_for(logged)
            _, rows = await api(gw.http_url, "GET", "/spend/logs?key_alias=team-voice")
            headers = {"Authorization": "Bearer sk-team-voice-key-0000000000"}
            async with connect(gw.ws_url + "/v1/realtime?model=unpriced", headers) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await send_json(ws, {"type": "response.create"})
                await recv_until(ws, "response.done")
            await receiver.wait_for(lambda r: len(r.named("realtime.session")) == 2)
            await receiver.wait_for(lambda r: len(r.named("realtime.response")) == 3)

    record_cost = {row["response_id"]: row["spend"] for row in rows}
    assert all(cost > 0 for cost in record_cost.values())
    priced, unpriced = sorted(
        receiver.named("realtime.session"), key=lambda s: s.attributes["rtgate.model_group"]
    )
    assert priced.attributes["rtgate.model_group"] == "gpt-realtime"
    turns = [t for t in receiver.named("realtime.response") if t.trace_id == priced.trace_id]
    assert {t.attributes["rtgate.response_id"]: t.attributes["rtgate.cost_usd"] for t in turns} == (
        record_cost
    )
    assert all(t.attributes["gen_ai.usage.cost"] == t.attributes["rtgate.cost_usd"] for t in turns)
    assert math.isclose(priced.attributes["rtgate.cost_usd"], sum(record_cost.values()))
    assert priced.attributes["gen_ai.usage.cost"] == priced.attributes["rtgate.cost_usd"]
    assert "rtgate.cost_usd" not in unpriced.attributes
    assert not any(
        "rtgate.cost_usd" in t.attributes
        for t in receiver.named("realtime.response")
        if t.trace_id == unpriced.trace_id
    )


async def test_unsampled_parent_exports_nothing(receiver: OtlpReceiver) -> None:
    """A client that says 'not sampled' (flags 00) is obeyed by the default parent-based sampler."""
    config = """
model_list:
  - model_name: mock
    litellm_params: {model: mock/gpt-realtime, reply_audio_ms: 100}
litellm_settings: {callbacks: [otel]}
"""
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
            async with connect(gw.ws_url + "/v1/realtime?model=mock", headers) as ws:
                await recv_json(ws)
            async with connect(gw.ws_url + "/v1/realtime?model=mock") as ws:
                await recv_json(ws)
            await receiver.wait_for(lambda r: r.named("realtime.session"))
            await trio.sleep(0.3)
    assert [s.trace_id == TRACE_ID for s in receiver.named("realtime.session")] == [False]


async def test_langfuse_callback_exports_with_basic_auth(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-public")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-secret")
    monkeypatch.setenv("LANGFUSE_HOST", receiver.base_url)
    config = """
model_list:
  - model_name: mock
    litellm_params: {model: mock/gpt-realtime}
litellm_settings: {success_callback: [langfuse]}
"""
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=mock") as ws:
                await recv_json(ws)
            await receiver.wait_for(lambda r: r.named("realtime.session"))
    request = receiver.requests[0]
    assert request[":path"] == "/api/public/otel/v1/traces"
    assert (
        request["authorization"]
        == "Basic " + base64.b64encode(b"pk-lf-public:sk-lf-secret").decode()
    )
    assert request["content-type"] == "application/x-protobuf"


def test_bad_trace_environment_is_a_clear_config_error() -> None:
    from rtgate.config.model import TelemetrySettings
    from rtgate.errors import ConfigError
    from rtgate.telemetry.tracing import check_environment

    with pytest.raises(ConfigError, match="LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"):
        check_environment(TelemetrySettings(langfuse=True), {"LANGFUSE_PUBLIC_KEY": "pk"})
    with pytest.raises(ConfigError, match="'http/json' is not offered"):
        check_environment(
            TelemetrySettings(otel=True), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        check_environment(TelemetrySettings(otel=True), {"OTEL_BSP_MAX_QUEUE_SIZE": "many"})
    check_environment(TelemetrySettings(otel=True), {})  # the defaults are fine


def test_bench_traced_config_turns_traces_on_and_nothing_else() -> None:
    from bench.procs import gateway_config
    from bench.tracing import traced_config
    from rtgate.config.load import parse_text

    on = parse_text(traced_config(4321), path="<bench>", env={}).config
    off = parse_text(gateway_config(4321), path="<bench>", env={}).config
    assert on.telemetry.otel and not off.telemetry.enabled
    assert on.deployments == off.deployments
