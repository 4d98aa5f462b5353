"""Sessions through rtgate to fake OpenAI, xAI and Azure upstreams, ``api_base`` spelled
as LiteLLM configs spell it. The fakes answer 404 off their realtime path, as the real
services do, so a wrongly joined URL is a failed session here."""

from __future__ import annotations

import trio

from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_yaml, openai_deployment
from tests.test_gateway_e2e import _run_openai_sdk
from tests.wsclient import connect, recv_json, recv_until, send_json

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def _one_text_turn(url: str) -> list[str]:
    """A raw-websockets GA session: session.created, one text response; the event types."""
    async with connect(url, AUTH) as ws:
        first = await recv_json(ws)
        await send_json(
            ws,
            {
                "type": "session.update",
                "session": {"type": "realtime", "output_modalities": ["text"]},
            },
        )
        await send_json(
            ws,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            },
        )
        await send_json(ws, {"type": "response.create"})
        events = await recv_until(ws, "response.done")
    return [first["type"], *(e["type"] for e in events)]  # fmt: skip


async def test_openai_spellings_of_api_base_all_reach_the_realtime_path(
    fake_openai: FakeRealtimeServer,
) -> None:
    port = fake_openai.port
    spellings = {
        "bare-http": f"http://127.0.0.1:{port}",
        "bare-ws-slash": f"ws://127.0.0.1:{port}/",
        "v1-slash": f"http://127.0.0.1:{port}/v1/",
        "full": f"ws://127.0.0.1:{port}/v1/realtime",
        "query": f"http://127.0.0.1:{port}/v1?tenant=blue",
    }
    config = gateway_yaml(*(openai_deployment(name, base) for name, base in spellings.items()))
    with trio.fail_after(30):
        async with open_gateway(config) as gw:
            for name in spellings:
                types = await _one_text_turn(f"{gw.ws_url}/v1/realtime?model={name}")
                assert types[0] == "session.created", name
                assert types[-1] == "response.done", name
    assert fake_openai.paths == ["/v1/realtime?model=gpt-realtime"] * 4 + [
        "/v1/realtime?model=gpt-realtime&tenant=blue"
    ]


async def test_openai_sdk_session_through_a_bare_host_api_base(
    fake_openai: FakeRealtimeServer,
) -> None:
    """The issue's first failing case: ``api_base: http://127.0.0.1:PORT`` (no /v1)."""
    config = gateway_yaml(openai_deployment("gpt-realtime", f"http://127.0.0.1:{fake_openai.port}"))
    with trio.fail_after(30):
        async with open_gateway(config) as gw:
            types = await trio.to_thread.run_sync(
                _run_openai_sdk, gw.ws_url + "/v1", "gpt-realtime"
            )
    assert types[0] == "session.created"
    assert types[-1] == "response.done"
    assert fake_openai.headers_seen[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_xai_bare_host_and_full_path(nursery: trio.Nursery) -> None:
    xai = FakeRealtimeServer(api_key="xai-upstream-key-1234", flavour="xai")
    await nursery.start(xai.serve)
    deployments = [
        f"""  - model_name: {name}
    litellm_params:
      model: xai/grok-voice-latest
      api_base: {base}
      api_key: xai-upstream-key-1234
    model_info:
      mode: realtime"""
        for name, base in (
            ("grok-bare", f"http://127.0.0.1:{xai.port}"),
            ("grok-full", f"ws://127.0.0.1:{xai.port}/v1/realtime/"),
        )
    ]
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(*deployments)) as gw:
            for name in ("grok-bare", "grok-full"):
                types = await _one_text_turn(f"{gw.ws_url}/v1/realtime?model={name}")
                assert types[-1] == "response.done", name
    assert xai.paths == ["/v1/realtime?model=grok-voice-latest"] * 2


async def test_azure_resource_spellings_and_the_preview_path(nursery: trio.Nursery) -> None:
    azure = FakeRealtimeServer(api_key="azure-upstream-key-1234", flavour="azure")
    await nursery.start(azure.serve)
    port = azure.port

    def entry(name: str, base: str, extra: str = "") -> str:
        return f"""  - model_name: {name}
    litellm_params:
      model: azure/voice-deploy
      api_base: {base}
      api_key: azure-upstream-key-1234
      api_version: "2024-10-01-preview"
{extra}
    model_info:
      mode: realtime"""

    deployments = [
        entry("az-slash", f"http://127.0.0.1:{port}/"),
        entry("az-openai-v1", f"ws://127.0.0.1:{port}/openai/v1/"),
        entry("az-beta", f"http://127.0.0.1:{port}/openai", "      realtime_protocol: beta"),
    ]
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(*deployments)) as gw:
            for name in ("az-slash", "az-openai-v1", "az-beta"):
                async with connect(f"{gw.ws_url}/v1/realtime?model={name}", AUTH) as ws:
                    assert (await recv_json(ws))["type"] == "session.created", name
    assert azure.paths == ["/openai/v1/realtime?model=voice-deploy"] * 2 + [
        "/openai/realtime?api-version=2024-10-01-preview&deployment=voice-deploy"
    ]
