"""A collector that is missing, refuses with 500 or hangs: sessions go on, spans are counted as lost.

Each case runs sessions through a gateway whose exporter points at the bad
collector with a small export queue. Every session must finish within its own
deadline, the spans waiting in memory must never exceed the queue, the loss must
show in the counters and ``/metrics``, and the log must say so once, not per batch.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import trio

from rtgate.testing.gateway import open_gateway
from rtgate.testing.otlp_receiver import OtlpReceiver
from tests.test_ops_support import free_port, http_get, parse_metrics
from tests.wsclient import connect, recv_json, recv_until, send_json

QUEUE = 8
SESSIONS = 25
CONFIG = f"""
model_list:
  - model_name: mock
    litellm_params: {{model: mock/gpt-realtime, reply_audio_ms: 60}}
litellm_settings: {{callbacks: [otel]}}
rtgate:
  telemetry: {{max_queue_size: {QUEUE}}}
"""


async def _session(url: str) -> None:
    with trio.fail_after(5):  # a session must not wait for the collector
        async with connect(url + "/v1/realtime?model=mock") as ws:
            assert (await recv_json(ws))["type"] == "session.created"
            await send_json(ws, {"type": "response.create"})
            await recv_until(ws, "response.done")


@pytest.mark.parametrize("collector", ["absent", "error", "hang"])
async def test_bad_collector_never_slows_sessions_and_losses_are_counted(
    collector: str,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if collector == "absent":
        endpoint = f"http://127.0.0.1:{free_port()}"
        receiver = None
    else:
        receiver = OtlpReceiver(mode=collector)
        await nursery.start(receiver.serve)
        endpoint = receiver.base_url
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    caplog.set_level(logging.WARNING)
    with trio.fail_after(60):
        async with open_gateway(CONFIG) as gw:
            tracing = gw.gateway.tracing
            assert tracing is not None
            queue = tracing.queues["otel"]
            for _ in range(SESSIONS):
                await _session(gw.ws_url)
                assert queue.queued <= QUEUE  # memory: never more spans than the queue
            while True:  # the summary line comes from the tracer's own task within a second
                lines = [r for r in caplog.records if "spans lost" in r.getMessage()]
                if lines:
                    break
                await trio.sleep(0.05)
            snap = tracing.snapshot()["otel"]
            status, body = await http_get(gw.port, "/metrics")
            assert status == 200
            metrics = parse_metrics(body)

    assert snap["exported"] == 0
    # 3 spans per session (session, dial, turn): each one handed to the exporter or dropped.
    assert queue.handed + queue.dropped == 3 * SESSIONS
    lost = snap["dropped"] + snap["failed"]
    assert lost > 0, snap
    if collector == "hang":
        assert snap["dropped"] > 0, snap  # the queue filled behind the stuck export
    else:
        assert snap["failed"] > 0, snap
    counted = sum(
        metrics[("rtgate_trace_spans_total", frozenset({("exporter", "otel"), ("outcome", o)}))]
        for o in ("dropped", "failed")
    )
    assert counted > 0
    assert metrics[("rtgate_trace_queue_spans", frozenset({("exporter", "otel")}))] <= QUEUE
    # Logged once for the whole run (at most once a minute), never per failed batch.
    assert len([r for r in caplog.records if "spans lost" in r.getMessage()]) == 1
    per_logger = Counter(r.name for r in caplog.records if r.name.startswith("opentelemetry"))
    assert all(n <= 1 for n in per_logger.values()), per_logger
    if receiver is not None:
        assert receiver.requests  # it was really tried
