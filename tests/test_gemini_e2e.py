"""End to end: OpenAI-protocol clients through the gateway to the fake Gemini Live server."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from rtgate.config.model import TlsSettings
from rtgate.errors import UpstreamClosed
from rtgate.net.upstream_ws import dial_websocket
from rtgate.testing.fake_gemini import FakeGeminiServer, FakeTokenEndpoint, make_service_account
from rtgate.testing.gateway import open_gateway
from rtgate.wire import Binary
from tests.conftest import CLIENT_KEY, gateway_yaml
from tests.wsclient import connect, recv_json, send_json

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
SPEECH = b"".join(i.to_bytes(2, "little", signed=True) for i in range(-3000, 3000, 7)) * 4


def studio_deployment(server: FakeGeminiServer, *, extra: str = "") -> str:
    return f"""  - model_name: gemini-live
    litellm_params:
      model: gemini/gemini-live-2.5-flash
      api_key: {server.api_key}
      api_base: {server.base_url}
      setup_wait_seconds: 0.5
{extra}"""


def _sdk_session(url: str) -> dict[str, Any]:
    """Drive the real ``openai`` SDK (asyncio, in a worker thread) through two turns and a tool call."""
    from openai import AsyncOpenAI

    async def session() -> dict[str, Any]:
        client = AsyncOpenAI(api_key=CLIENT_KEY, websocket_base_url=url)
        seen: dict[str, Any] = {
            "types": [],
            "audio": b"",
            "transcript": "",
            "usage": [],
            "calls": [],
        }
        async with client.realtime.connect(model="gemini-live") as conn:
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "Answer briefly.",
                    "audio": {
                        "input": {"transcription": {"model": "gpt-4o-transcribe"}},
                        "output": {"voice": "marin"},
                    },
                    "tools": [
                        {
                            "type": "function",
                            "name": "get_weather",
                            "description": "Weather in a city",
                            "parameters": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                            },
                        }
                    ],
                }
            )
            for start in range(0, len(SPEECH), 4800):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(SPEECH[start : start + 4800]).decode()
                )
            await conn.input_audio_buffer.commit()
            responses = 0
            async for event in conn:
                seen["types"].append(event.type)
                if event.type == "response.output_audio.delta" and responses == 0:
                    seen["audio"] += base64.b64decode(event.delta)
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    seen["transcript"] = event.transcript
                elif event.type == "response.function_call_arguments.done":
                    seen["calls"].append((event.call_id, event.name, event.arguments))
                elif event.type == "response.done":
                    responses += 1
                    seen["usage"].append(
                        event.response.usage.total_tokens if event.response.usage else None
                    )
                    if responses == 1:
                        await conn.conversation.item.create(
                            item={
                                "type": "message",
                                "role": "user",
                                "content": [{"type": "input_text", "text": "what is the weather?"}],
                            }
                        )
                        await conn.response.create()
                    elif responses == 2:
                        call_id = seen["calls"][0][0]
                        await conn.conversation.item.create(
                            item={
                                "type": "function_call_output",
                                "call_id": call_id,
                                "output": '{"sky":"clear"}',
                            }
                        )
                        await conn.response.create()
                    else:
                        break
                elif event.type == "response.output_audio_transcript.done":
                    seen["last_transcript"] = event.transcript
        return seen

    return asyncio.run(asyncio.wait_for(session(), 20))


async def test_openai_sdk_session_against_fake_gemini(nursery: trio.Nursery) -> None:
    fake = FakeGeminiServer()
    await nursery.start(fake.serve)
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(studio_deployment(fake))) as gw:
            seen = await trio.to_thread.run_sync(_sdk_session, gw.ws_url + "/v1")
    types = seen["types"]
    assert types[0] == "session.created" and types[1] == "session.updated"
    assert seen["audio"] == SPEECH  # the fake echoes the user's audio as model audio
    assert seen["transcript"] == f"{len(SPEECH)} bytes"
    assert seen["calls"] == [("fc_1", "get_weather", '{"city":"Oslo"}')]
    assert seen["last_transcript"] == 'The weather is {"sky": "clear"}'
    assert types.count("response.created") == types.count("response.done") == 3
    assert seen["usage"][0] == 15 + len(SPEECH) // 100
    setup = fake.setups[0]
    assert setup["model"] == "models/gemini-live-2.5-flash"
    assert (
        setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
        == "Aoede"
    )
    assert len(fake.setups) == 1 and fake.close_codes == []


async def test_goaway_reconnects_transparently_with_the_resumption_handle(
    nursery: trio.Nursery,
) -> None:
    fake = FakeGeminiServer(goaway_after_turns=1, goaway_time_left=2.0)
    await nursery.start(fake.serve)
    with trio.fail_after(20):
        async with open_gateway(gateway_yaml(studio_deployment(fake))) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gemini-live", AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await send_json(ws, {"type": "session.update", "session": {"type": "realtime"}})
                assert (await recv_json(ws))["type"] == "session.updated"
                seen: list[str] = []
                audio = b""
                for turn in range(2):
                    await send_json(
                        ws,
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(SPEECH).decode(),
                        },
                    )
                    await send_json(ws, {"type": "input_audio_buffer.commit"})
                    while True:
                        event = await recv_json(ws)
                        seen.append(event["type"])
                        if event["type"] == "response.output_audio.delta":
                            audio += base64.b64decode(event["delta"])
                        if event["type"] == "response.done":
                            assert event["response"]["status"] == "completed"
                            break
                    if turn == 0:
                        with trio.fail_after(5):
                            while fake.dials < 2 or len(fake.setups) < 2:
                                await trio.sleep(0.01)
    assert fake.resumed_with == [None, "handle-1"]
    assert audio == SPEECH * 2  # nothing lost or duplicated across the switch
    assert seen.count("session.created") == 0 and "error" not in seen
    assert 1011 not in fake.close_codes  # reconnected before the old connection expired


async def test_vertex_with_service_account_through_gateway(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    endpoint = FakeTokenEndpoint()
    await nursery.start(endpoint.serve)
    credentials, public_key = make_service_account(endpoint.url)
    endpoint.public_key = public_key
    key_file = tmp_path / "sa.json"
    key_file.write_text(credentials)
    fake = FakeGeminiServer(flavour="vertex", tokens=endpoint.issued)
    await nursery.start(fake.serve)
    deployment = f"""  - model_name: vertex-live
    litellm_params:
      model: vertex_ai/gemini-live-2.5-flash
      vertex_project: proj-1
      vertex_location: europe-west4
      vertex_credentials: {key_file}
      api_base: {fake.base_url}
      setup_wait_seconds: 0.2
"""
    with trio.fail_after(20):
        async with open_gateway(gateway_yaml(deployment)) as gw:
            for _ in range(2):
                async with connect(gw.ws_url + "/v1/realtime?model=vertex-live", AUTH) as ws:
                    assert (await recv_json(ws))["type"] == "session.created"
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
                    while (event := await recv_json(ws))["type"] != "response.done":
                        pass
                    usage = event["response"]["usage"]
                    assert usage["output_tokens"] == 5  # Vertex's candidatesTokenCount
    assert (
        fake.setups[0]["model"]
        == "projects/proj-1/locations/europe-west4/publishers/google/models/gemini-live-2.5-flash"
    )
    assert endpoint.requests == 1  # the token is cached across sessions
    assert fake.dials == 2


async def test_fake_gemini_closes_a_second_setup_with_1007(nursery: trio.Nursery) -> None:
    fake = FakeGeminiServer()
    await nursery.start(fake.serve)
    url = (
        fake.base_url
        + "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    with trio.fail_after(5):
        link = await dial_websocket(
            url,
            {"x-goog-api-key": fake.api_key},
            tls=TlsSettings(),
            max_message_bytes=1 << 20,
            timeout=2,
        )
        try:
            await link.send([b'{"setup":{"model":"models/m","generationConfig":{}}}'])
            assert await link.receive() == [Binary(b'{"setupComplete":{}}')]
            await link.send([b'{"setup":{"model":"models/m"}}'])
            with pytest.raises(UpstreamClosed) as closed:
                await link.receive()
            assert closed.value.code == 1007
        finally:
            await link.aclose()


async def test_upstream_1011_reaches_the_client_as_error_then_close(nursery: trio.Nursery) -> None:
    fake = FakeGeminiServer()
    await nursery.start(fake.serve)
    with trio.fail_after(10):
        async with open_gateway(gateway_yaml(studio_deployment(fake))) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gemini-live", AUTH) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "session.update", "session": {"type": "realtime"}})
                assert (await recv_json(ws))["type"] == "session.updated"
                fake.close_on_message = (1011, "Internal error encountered.")
                await send_json(
                    ws,
                    {
                        "type": "input_audio_buffer.append",
                        "audio": base64.b64encode(SPEECH).decode(),
                    },
                )
                event = await recv_json(ws)
                assert event["type"] == "error"
                assert event["error"]["code"] == "upstream_1011"
                assert "Internal error encountered." in event["error"]["message"]
                try:
                    await ws.get_message()
                except ConnectionClosed as exc:
                    assert exc.reason is not None and exc.reason.code == 1011
                else:
                    raise AssertionError("the client socket stayed open")
