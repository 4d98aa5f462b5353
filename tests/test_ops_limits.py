"""Limits and timeouts: each ends a session (or refuses a handshake) clearly and is counted."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed

from rtgate.session.relay import _bounded
from rtgate.testing.gateway import open_gateway
from rtgate.wire import Binary, Frame
from tests.test_faults_support import sessions_idle
from tests.test_ops_support import MASTER, close_code, scrape, value
from tests.wsclient import connect, raw_handshake, recv_json, send_json

AUTH = {"Authorization": f"Bearer {MASTER}"}


def limits_yaml(limits: str, *, keys: str = "", params: str = "") -> str:
    return f"""
model_list:
  - model_name: m
    litellm_params:
      model: mock/echo
{params}
    model_info:
      id: dep-m
general_settings:
  master_key: {MASTER}
rtgate:
{keys}
  limits:
    ping_interval: 0
{limits}
"""


async def test_gateway_session_cap_is_429_at_the_handshake() -> None:
    with trio.fail_after(10):
        async with open_gateway(limits_yaml("    max_sessions: 1")) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=m", AUTH) as ws:
                await recv_json(ws)
                status, _, body = await raw_handshake(gw.http_url + "/v1/realtime?model=m", AUTH)
                metrics = await scrape(gw.port)
    assert status == 429
    assert b"session limit" in body
    assert value(metrics, "rtgate_limit_closes_total", limit="max_sessions") == 1
    assert value(metrics, "rtgate_handshakes_rejected_total", status="429") == 1


async def test_per_key_session_cap_is_429_for_that_key_only() -> None:
    keys = """  keys:
    - alias: team-a
      key: sk-team-a-key-000000
      max_sessions: 1"""
    team = {"Authorization": "Bearer sk-team-a-key-000000"}
    with trio.fail_after(10):
        async with open_gateway(limits_yaml("", keys=keys)) as gw:
            url = gw.ws_url + "/v1/realtime?model=m"
            async with connect(url, team) as ws:
                await recv_json(ws)
                status, _, _ = await raw_handshake(gw.http_url + "/v1/realtime?model=m", team)
                async with connect(url, AUTH) as other:  # the master key is not capped
                    assert (await recv_json(other))["type"] == "session.created"
            # The slot is freed when the session ends.
            with trio.fail_after(3):
                while gw.gateway.sessions_by_key.get("team-a"):
                    await trio.sleep(0.01)
            async with connect(url, team) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
            metrics = await scrape(gw.port)
    assert status == 429
    assert value(metrics, "rtgate_limit_closes_total", limit="max_sessions_per_key") == 1


@pytest.mark.parametrize(
    ("limit", "code"),
    [("max_session_seconds: 0.4", "session_expired"), ("idle_timeout: 0.4", "idle_timeout")],
)
async def test_duration_and_idle_limits_send_error_then_close(limit: str, code: str) -> None:
    with trio.fail_after(10):
        async with open_gateway(limits_yaml(f"    {limit}")) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=m", AUTH) as ws:
                await recv_json(ws)
                started = trio.current_time()
                error = await recv_json(ws, timeout=3)
                elapsed = trio.current_time() - started
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
            metrics = await scrape(gw.port)
    assert error["type"] == "error"
    assert error["error"]["code"] == code
    assert 0.3 <= elapsed < 2.0
    assert close_code(info.value) == 1000
    assert value(metrics, "rtgate_limit_closes_total", limit=code) == 1


async def test_activity_keeps_an_idle_limited_session_open() -> None:
    with trio.fail_after(10):
        async with open_gateway(limits_yaml("    idle_timeout: 0.5")) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=m", AUTH) as ws:
                await recv_json(ws)
                for _ in range(6):  # 1.2 s in all, never 0.5 s quiet
                    await trio.sleep(0.2)
                    await send_json(ws, {"type": "input_audio_buffer.clear"})
                    assert (await recv_json(ws))["type"] == "input_audio_buffer.cleared"


async def test_handshake_timeout_closes_a_slow_client() -> None:
    with trio.fail_after(10):
        async with open_gateway(limits_yaml("    handshake_timeout: 0.3")) as gw:
            stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
            async with stream:
                await stream.send_all(b"GET /v1/realtime?model=m HTTP/1.1\r\nHost: x\r\n")
                started = trio.current_time()
                data = await stream.receive_some(1024)
                elapsed = trio.current_time() - started
    assert data == b""
    assert 0.2 <= elapsed < 2.0


async def test_oversized_message_is_1009_and_counted() -> None:
    with trio.fail_after(10):
        async with open_gateway(limits_yaml("    max_message_bytes: 4096")) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=m", AUTH) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "input_audio_buffer.append", "audio": "A" * 8000})
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.get_message()
            await sessions_idle(gw, timeout=3)
            metrics = await scrape(gw.port)
    assert close_code(info.value) == 1009
    assert value(metrics, "rtgate_limit_closes_total", limit="max_message_bytes") == 1


async def test_client_that_stops_reading_is_closed_and_counted() -> None:
    """A huge reply to a client that reads nothing: bounded chunks, then the write timeout (1011)."""
    config = limits_yaml(
        "    ping_timeout: 0.5\n    max_pending_bytes: 65536",
        params="      reply_audio_ms: 600000",
    )
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=m", AUTH) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "response.create"})
                await sessions_idle(gw, timeout=10)
            metrics = await scrape(gw.port)
    assert value(metrics, "rtgate_limit_closes_total", limit="slow_consumer") == 1
    assert value(metrics, "rtgate_close_codes_total", code="1011") == 1


def test_bounded_splits_batches_over_the_limit() -> None:
    frames: list[Frame] = [b"a" * 40, b"b" * 40, Binary(b"c" * 40), b"d" * 10]
    chunks = _bounded(frames, 130, 64)
    assert [[len(f) if isinstance(f, bytes) else len(f.data) for f in c] for c in chunks] == [
        [40], [40], [40, 10],
    ]  # fmt: skip
    assert [f for c in chunks for f in c] == frames
    assert _bounded(frames, 130, 1000) == [frames]
    single: list[Frame] = [b"x" * 500]
    assert _bounded(single, 500, 64) == [single]  # one message is never split
