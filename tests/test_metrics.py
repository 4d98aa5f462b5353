"""Prometheus metrics: content after scripted sessions, auth, isolation, the plain counters."""

from __future__ import annotations

import pytest
import trio

from rtgate.control.metrics import PrometheusMetrics, _event_log
from rtgate.session.counters import LatencyHistogram, RelayCounters
from rtgate.testing.gateway import open_gateway
from tests.test_faults_support import sessions_idle
from tests.test_ops_support import MASTER, http_get, parse_metrics, value
from tests.wsclient import connect, raw_handshake, recv_json, recv_until, send_json

AUTH = {"Authorization": f"Bearer {MASTER}"}


def mock_yaml(extra: str = "") -> str:
    return f"""
model_list:
  - model_name: m
    litellm_params:
      model: mock/echo
    model_info:
      id: dep-m
general_settings:
  master_key: {MASTER}
rtgate:
  limits:
    ping_interval: 0
{extra}
"""


async def test_metrics_after_a_scripted_session() -> None:
    with trio.fail_after(15):
        async with open_gateway(mock_yaml()) as gw:
            url = gw.ws_url + "/v1/realtime?model=m"
            async with connect(url, AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await send_json(ws, {"type": "input_audio_buffer.append", "audio": "AAAA" * 100})
                await send_json(ws, {"type": "response.create"})
                await recv_until(ws, "response.done")
                # While the session runs it is active.
                status, body = await http_get(gw.port, "/metrics")
                live = parse_metrics(body)
                await ws.aclose(1000)
            status, _, _ = await raw_handshake(
                gw.http_url + "/v1/realtime?model=m", {"Authorization": "Bearer sk-wrong-1234"}
            )
            assert status == 401
            await sessions_idle(gw)
            status, body = await http_get(gw.port, "/metrics")
    assert status == 200
    assert value(live, "rtgate_sessions_active", model_group="m", deployment="dep-m") == 1
    m = parse_metrics(body)
    assert value(m, "rtgate_sessions_started_total", model_group="m", deployment="dep-m") == 1
    assert value(m, "rtgate_sessions_active", model_group="m") == 0
    assert value(m, "rtgate_sessions_total", deployment="dep-m", outcome="client") == 1
    assert value(m, "rtgate_close_codes_total", code="1000") == 1
    assert value(m, "rtgate_handshakes_rejected_total", status="401") == 1
    assert value(m, "rtgate_handshake_seconds_count") == 1
    assert value(m, "rtgate_upstream_dial_seconds_count") == 1
    assert value(m, "rtgate_relayed_messages_total", direction="client_in") == 2
    assert value(m, "rtgate_relayed_messages_total", direction="client_out") > 5
    assert value(m, "rtgate_relayed_bytes_total", direction="client_in") > 400
    assert value(m, "rtgate_relay_latency_seconds_count") >= 1  # first batch is always sampled
    assert value(m, "rtgate_deployment_state", deployment="dep-m", state="closed") == 1
    assert value(m, "rtgate_deployment_state", deployment="dep-m", state="ejected") == 0
    assert value(m, "rtgate_deployment_ejections_total", deployment="dep-m") == 0
    assert value(m, "rtgate_info", worker="0") == 1
    assert MASTER.encode() not in body


async def test_metrics_auth_requires_master_key() -> None:
    with trio.fail_after(10):
        async with open_gateway(mock_yaml("  metrics_auth: true")) as gw:
            denied, _ = await http_get(gw.port, "/metrics")
            allowed, body = await http_get(gw.port, "/metrics", AUTH)
    assert denied == 401
    assert allowed == 200 and b"rtgate_info" in body


async def test_two_gateways_have_separate_registries() -> None:
    with trio.fail_after(15):
        async with open_gateway(mock_yaml()) as one, open_gateway(mock_yaml()) as two:
            async with connect(one.ws_url + "/v1/realtime?model=m", AUTH) as ws:
                await recv_json(ws)
            await sessions_idle(one)
            _, body_one = await http_get(one.port, "/metrics")
            _, body_two = await http_get(two.port, "/metrics")
    assert value(parse_metrics(body_one), "rtgate_sessions_started_total") == 1
    assert value(parse_metrics(body_two), "rtgate_sessions_started_total") == 0


def test_histogram_is_cumulative_with_inf() -> None:
    hist = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        hist.observe(seconds)
    assert hist.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert hist.count == 4
    assert hist.sum == pytest.approx(3.65)


def test_relay_counters_accumulate() -> None:
    counters = RelayCounters()
    counters.add("client_in", 2, 100)
    counters.add("client_in", 1, 5)
    counters.limit("idle_timeout")
    assert counters.messages == {"client_in": 3}
    assert counters.bytes == {"client_in": 105}
    assert counters.limit_closes == {"idle_timeout": 1}


class _FakeEventLog:
    def snapshot(self) -> dict[str, object]:
        return {
            "events_seen": 10, "events_queued": 7, "records_written": 6, "sessions_queued": 1,
            "dropped": {"queue_full": 3}, "sessions_dropped": 0, "queued": 1,
            "sinks": {"file0": {"written": 5, "spooled": 1, "replayed": 0,
                                "dropped": {"spool_full": 2}, "down": True}},
        }  # fmt: skip


def test_event_log_counters_are_read_defensively() -> None:
    families = {f.name: f for f in _event_log(_FakeEventLog())}
    records = {s.labels["stage"]: s.value for s in families["rtgate_eventlog_records"].samples}
    assert records == {"seen": 10, "queued": 7, "sessions_queued": 1, "records_written": 6}
    sink = {s.labels["outcome"]: s.value for s in families["rtgate_eventlog_sink_records"].samples}
    assert sink == {"written": 5, "spooled": 1, "replayed": 0, "dropped": 2}
    assert families["rtgate_eventlog_sink_down"].samples[0].value == 1
    # No event log at all: empty families, no error.
    assert all(not f.samples for f in _event_log(None))


def test_renderer_keeps_one_registry_per_gateway() -> None:
    renderer = PrometheusMetrics(worker="3")

    class _Gw:
        pass

    gw = _Gw()
    assert renderer.registry(gw) is renderer.registry(gw)  # type: ignore[arg-type]
