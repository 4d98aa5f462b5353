"""End to end over real sockets: clients -> rtgate -> fake OpenAI/Azure/xAI on 127.0.0.1."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_yaml, openai_deployment
from tests.test_faults_support import sessions_idle
from tests.test_ops_support import free_port
from tests.wsclient import connect, raw_handshake, recv_json, recv_until, send_json

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def _run_openai_sdk(url: str, model: str) -> list[str]:
    """Drive the real ``openai`` SDK (asyncio) in a thread; return the event types it parsed."""
    from openai import AsyncOpenAI

    async def session() -> list[str]:
        client = AsyncOpenAI(api_key=CLIENT_KEY, websocket_base_url=url)
        types: list[str] = []
        async with client.realtime.connect(model=model) as conn:
            await conn.session.update(
                session={
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "instructions": "Be brief.",
                }
            )
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello"}],
                }
            )
            await conn.response.create()
            async for event in conn:
                types.append(event.type)
                if event.type == "response.done":
                    break
        return types

    return asyncio.run(asyncio.wait_for(session(), 20))


async def test_openai_sdk_ga_session_through_gateway(fake_openai: FakeRealtimeServer) -> None:
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(30):
        async with open_gateway(config) as gw:
            types = await trio.to_thread.run_sync(
                _run_openai_sdk, gw.ws_url + "/v1", "gpt-realtime"
            )
    assert types[0] == "session.created"
    assert "session.updated" in types
    assert "response.output_text.delta" in types
    assert (
        types.index("response.created")
        < types.index("response.output_text.delta")
        < types.index("response.done")
    )
    # The upstream saw GA events, the upstream key, never the client's key.
    assert fake_openai.headers_seen[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert all(CLIENT_KEY not in str(h) for h in fake_openai.headers_seen)
    assert "openai-beta" not in fake_openai.headers_seen[0]


async def test_seed_beta_client_gets_beta_events(fake_openai: FakeRealtimeServer) -> None:
    """The LiteLLM seed client: api-key header, OpenAI-Beta: realtime=v1, beta response.create."""
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            headers = {"api-key": CLIENT_KEY, "OpenAI-Beta": "realtime=v1"}
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", headers) as ws:
                await send_json(
                    ws,
                    {
                        "type": "response.create",
                        "response": {
                            "modalities": ["text"],
                            "instructions": "Please assist the user.",
                        },
                    },
                )
                events = await recv_until(ws, "response.done")
    types = [e["type"] for e in events]
    assert types[0] == "session.created"
    assert "response.text.delta" in types and "response.output_text.delta" not in types
    sent = [orjson.loads(f) for f in fake_openai.received]
    assert sent[0]["type"] == "response.create"
    assert sent[0]["response"]["output_modalities"] == ["text"]
    assert "modalities" not in sent[0]["response"]


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [
        ({}, "/v1/realtime?model=gpt-realtime", 401),
        ({"Authorization": "Bearer sk-wrong-key-123456"}, "/v1/realtime?model=gpt-realtime", 401),
        (AUTH, "/v1/realtime?model=nope", 404),
        (AUTH, "/v1/realtime", 400),
    ],
)
async def test_handshake_rejections(
    fake_openai: FakeRealtimeServer, headers: dict[str, str], path: str, status: int
) -> None:
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            got, _, raw = await raw_handshake(gw.http_url + path, headers)
    assert got == status
    body = orjson.loads(raw)
    assert body["error"]["message"]
    assert fake_openai.dials == 0  # no upstream dial for a rejected client


async def test_virtual_key_model_allow_list(fake_openai: FakeRealtimeServer) -> None:
    extra = """  keys:
    - alias: team-a
      key: sk-team-a-key-0000
      models: [other]"""
    config = gateway_yaml(
        openai_deployment("gpt-realtime", fake_openai.base_url),
        openai_deployment("other", fake_openai.base_url),
        extra=extra,
    )
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            status, _, _ = await raw_handshake(
                gw.http_url + "/v1/realtime?model=gpt-realtime", {"api-key": "sk-team-a-key-0000"}
            )
            assert status == 403
            async with connect(
                gw.ws_url + "/v1/realtime?model=other", {"api-key": "sk-team-a-key-0000"}
            ) as ws:
                assert (await recv_json(ws))["type"] == "session.created"


async def test_browser_subprotocol_auth_echoes_realtime(fake_openai: FakeRealtimeServer) -> None:
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            protocols = ["realtime", f"openai-insecure-api-key.{CLIENT_KEY}"]
            async with connect(
                gw.ws_url + "/v1/realtime?model=gpt-realtime", subprotocols=protocols
            ) as ws:
                assert ws.subprotocol == "realtime"
                assert (await recv_json(ws))["type"] == "session.created"


async def test_upstream_close_code_reaches_client(fake_openai: FakeRealtimeServer) -> None:
    fake_openai.behaviour.close_on_frame = (4010, "upstream policy")
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "input_audio_buffer.append", "audio": "AAAA"})
                error = await recv_json(ws)
                assert error["type"] == "error"
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
    assert info.value.reason.code == 4010
    assert info.value.reason.reason == "upstream policy"


async def test_client_close_code_reaches_upstream(fake_openai: FakeRealtimeServer) -> None:
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                await recv_json(ws)
                await ws.aclose(4321, "client bye")
            with trio.fail_after(2):
                while not fake_openai.close_codes:
                    await trio.sleep(0.01)
    assert fake_openai.close_codes == [4321]


async def test_upstream_dying_mid_session_gives_error_then_1011(
    fake_openai: FakeRealtimeServer,
) -> None:
    fake_openai.behaviour = FakeBehaviour(die_after_frames=1)
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "input_audio_buffer.append", "audio": "AAAA"})
                error = await recv_json(ws)
                assert error["type"] == "error"
                assert error["error"]["type"] == "server_error"
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
    assert info.value.reason.code == 1011


async def test_malformed_json_gets_error_event_and_session_continues(
    fake_openai: FakeRealtimeServer,
) -> None:
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                await recv_json(ws)
                await ws.send_message("{not json")
                error = await recv_json(ws)
                assert error["type"] == "error"
                await send_json(
                    ws,
                    {
                        "type": "session.update",
                        "session": {"type": "realtime", "instructions": "x"},
                    },
                )
                assert (await recv_json(ws))["type"] == "session.updated"


async def test_oversized_client_frame_closes_1009(fake_openai: FakeRealtimeServer) -> None:
    config = gateway_yaml(
        openai_deployment("gpt-realtime", fake_openai.base_url),
    ).replace("connect_timeout: 2", "connect_timeout: 2\n    max_message_bytes: 4096")
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "input_audio_buffer.append", "audio": "A" * 10000})
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.get_message()
    assert info.value.reason.code == 1009


async def test_azure_client_paths_and_upstream_ga_path(nursery: trio.Nursery) -> None:
    azure = FakeRealtimeServer(api_key="azure-upstream-key-1234", flavour="azure")
    await nursery.start(azure.serve)
    deployment = f"""  - model_name: my-deployment
    litellm_params:
      model: azure/gpt-realtime-deploy
      api_base: {azure.base_url}
      api_key: azure-upstream-key-1234
      api_version: "2025-04-01-preview"
    model_info:
      mode: realtime"""
    with trio.fail_after(15):
        async with open_gateway(gateway_yaml(deployment)) as gw:
            for path in (
                "/openai/realtime?deployment=my-deployment&api-version=2025-04-01-preview",
                "/openai/v1/realtime?model=my-deployment",
            ):
                async with connect(gw.ws_url + path, {"api-key": CLIENT_KEY}) as ws:
                    assert (await recv_json(ws))["type"] == "session.created"
    assert azure.paths == ["/openai/v1/realtime?model=gpt-realtime-deploy"] * 2
    assert all("api-version" not in p for p in azure.paths)


async def test_xai_quirks_are_normalised_for_the_openai_sdk(nursery: trio.Nursery) -> None:
    xai = FakeRealtimeServer(api_key="xai-upstream-key-1234", flavour="xai")
    xai.behaviour.send_on_connect = (b'{"type":"ping"}',)
    await nursery.start(xai.serve)
    deployment = f"""  - model_name: grok
    litellm_params:
      model: xai/grok-voice-latest
      api_base: {xai.base_url}
      api_key: xai-upstream-key-1234
    model_info:
      mode: realtime"""
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(deployment)) as gw:
            types = await trio.to_thread.run_sync(_run_openai_sdk, gw.ws_url + "/v1", "grok")
    assert types[0] == "session.created"
    assert "ping" not in types
    assert types[-1] == "response.done"


async def test_failover_to_next_deployment_when_first_refuses(
    fake_openai: FakeRealtimeServer,
) -> None:
    config = gateway_yaml(
        openai_deployment("gpt-realtime", f"ws://127.0.0.1:{free_port()}/v1"),
        openai_deployment("gpt-realtime", fake_openai.base_url),
    )
    with trio.fail_after(15):
        async with open_gateway(config) as gw:
            for _ in range(4):
                async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                    assert (await recv_json(ws))["type"] == "session.created"
    assert fake_openai.sessions == 4


async def test_all_deployments_failing_is_503_with_json(fake_openai: FakeRealtimeServer) -> None:
    fake_openai.behaviour.reject_status = 500
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            status, _, body = await raw_handshake(
                gw.http_url + "/v1/realtime?model=gpt-realtime", AUTH
            )
    assert status == 503
    assert orjson.loads(body)["error"]["code"] == "no_deployment_available"


async def test_upstream_rejecting_beta_is_never_triggered(fake_openai: FakeRealtimeServer) -> None:
    """A beta client is bridged, so the upstream never sees the beta header (no 4000 close)."""
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(10):
        async with (
            open_gateway(config) as gw,
            connect(
                gw.ws_url + "/v1/realtime?model=gpt-realtime",
                {**AUTH, "OpenAI-Beta": "realtime=v1"},
            ) as ws,
        ):
            event = await recv_json(ws)
            assert event["type"] == "session.created"
            await send_json(
                ws,
                {
                    "type": "session.update",
                    "session": {"modalities": ["text"], "input_audio_format": "pcm16"},
                },
            )
            updated = await recv_json(ws)
            assert updated["type"] == "session.updated"


async def test_slow_client_pushes_back_to_the_upstream(fake_openai: FakeRealtimeServer) -> None:
    """A client that stops reading stalls the upstream's sends instead of filling rtgate's memory."""
    fake_openai.behaviour.reply_audio_ms = 600_000  # ~58 MB of audio deltas
    config = gateway_yaml(openai_deployment("gpt-realtime", fake_openai.base_url))
    with trio.fail_after(30):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "response.create"})
                await trio.sleep(2)  # the client reads nothing meanwhile
                stalled_at = fake_openai.frames_sent
                await trio.sleep(1)
                assert fake_openai.frames_sent == stalled_at
                assert fake_openai.response_done_sent == 0
                # Reading resumes the flow.
                await recv_until(ws, "response.done", timeout=20)


async def test_transcription_intent_without_model(fake_openai: FakeRealtimeServer) -> None:
    config = gateway_yaml(
        openai_deployment("whisper", fake_openai.base_url),
        extra="  transcription_model: whisper",
    )
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            async with connect(gw.ws_url + "/v1/realtime?intent=transcription", AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
    assert fake_openai.paths == ["/v1/realtime?intent=transcription"]


MOCK_GROUP = f"""
model_list:
  - model_name: mock-realtime
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 100
      max_parallel_requests: 1
general_settings:
  master_key: {CLIENT_KEY}
"""


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/realtime?model=mock-realtime", AUTH),
        ("/v1/realtime?model=mock-realtime", AUTH),
        ("/openai/v1/realtime?model=mock-realtime", {"api-key": CLIENT_KEY}),
        (
            f"/openai/realtime?deployment=mock-realtime&api-version=2025-04-01-preview&api-key={CLIENT_KEY}",
            {},
        ),
    ],
)
async def test_every_client_path_and_key_form(path: str, headers: dict[str, str]) -> None:
    with trio.fail_after(10):
        async with open_gateway(MOCK_GROUP) as gw:
            async with connect(gw.ws_url + path, headers) as ws:
                assert (await recv_json(ws))["type"] == "session.created"


async def test_every_deployment_at_capacity_is_429_with_retry_after() -> None:
    with trio.fail_after(10):
        async with open_gateway(MOCK_GROUP) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=mock-realtime", AUTH) as ws:
                await recv_json(ws)
                status, headers, body = await raw_handshake(
                    gw.http_url + "/v1/realtime?model=mock-realtime", AUTH
                )
                assert status == 429
                assert int(headers["retry-after"]) >= 1
                assert orjson.loads(body)["error"]["code"] == "rate_limit_exceeded"
            # The slot is free again once the first session ended.
            await sessions_idle(gw, timeout=2)
            async with connect(gw.ws_url + "/v1/realtime?model=mock-realtime", AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
